"""Never lose data, at the edges of in-place rewriting: symlinks, hard links, read-only and
foreign-owned files, a file changing under the fix, a full disk, leftovers of a killed run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path
from ckpt_guard.rewrite import fix_file, stale_temporaries
from tests.rewrite.helpers import fix_rules, run_fix

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path) -> bytes:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 8))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 32)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    return path.read_bytes()


def _is_fixed(path: Path) -> bool:
    return torch.load(path, weights_only=True)["optimizer"] is None


def test_symlink_keeps_the_link_and_fixes_its_target(tmp_path):
    real = tmp_path / "runs" / "epoch3.pt"
    real.parent.mkdir()
    _checkpoint(real)
    link = tmp_path / "last.pt"
    link.symlink_to(Path("runs") / "epoch3.pt")
    result = run_fix(link)
    assert result.error is None and result.changed
    assert link.is_symlink() and os.readlink(link) == str(Path("runs") / "epoch3.pt")
    assert _is_fixed(real)
    assert any("symlink" in n for n in result.notes)
    assert stale_temporaries(real.parent) == [] and stale_temporaries(tmp_path) == []


def test_hard_link_is_said(tmp_path):
    path = tmp_path / "a.pt"
    before = _checkpoint(path)
    other = tmp_path / "b.pt"
    os.link(path, other)
    result = run_fix(path)
    assert result.changed and _is_fixed(path)
    assert other.read_bytes() == before  # the other name still holds the original…
    assert any("2 hard links" in n and "still hold the original" in n for n in result.notes)


def test_read_only_file_is_refused(tmp_path):
    path = tmp_path / "ro.pt"
    before = _checkpoint(path)
    path.chmod(0o444)
    result = run_fix(path)
    assert result.error and "read-only" in result.error and not result.changed
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stale_temporaries(tmp_path) == []
    # --out still works: the input is only read.
    out = tmp_path / "out" / "ro.pt"
    assert run_fix(path, out_path=str(out)).changed and _is_fixed(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_owner_group_and_mode_are_kept(tmp_path):
    path = tmp_path / "theirs.pt"
    _checkpoint(path)
    os.chown(path, 4321, 4322)
    path.chmod(0o664)
    result = run_fix(path)
    assert result.changed and _is_fixed(path)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4322, 0o664)


def test_file_changed_after_analysis_is_not_replaced(tmp_path):
    path = tmp_path / "c.pt"
    _checkpoint(path)
    st = os.stat(path)
    analysis = analyze(read_path(str(path)))
    # Someone saves a new checkpoint over it after it was read.
    _checkpoint(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    newer = path.read_bytes()
    result = fix_file(str(path), analysis, fix_rules(), stat_before=st)
    assert result.error and "changed while being fixed" in result.error
    assert path.read_bytes() == newer


def test_file_changed_during_the_write_is_not_replaced(tmp_path):
    path = tmp_path / "c.pt"
    _checkpoint(path)
    st = os.stat(path)
    analysis = analyze(read_path(str(path)))
    touched = []

    def progress(_done: int, _total: int) -> None:
        if not touched:  # a training loop appends / rewrites the file mid-fix
            with open(path, "ab") as fh:
                fh.write(b"more")
            touched.append(True)

    result = fix_file(str(path), analysis, fix_rules(), stat_before=st, progress=progress)
    assert touched and result.error and "changed while being fixed" in result.error
    assert path.read_bytes().endswith(b"more")
    assert stale_temporaries(tmp_path) == []


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from tests.rewrite.helpers import run_fix
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    result = run_fix(sys.argv[1])
    print(result.error)
""")


def test_disk_full_leaves_the_original_and_no_temporary(tmp_path):
    path = tmp_path / "big.pt"
    before = _checkpoint(path)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-c", DISK_FULL, str(path)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "File too large" in p.stdout, p.stdout
    assert path.read_bytes() == before
    assert stale_temporaries(tmp_path) == []


def test_leftover_temporaries_of_the_file_are_removed(tmp_path):
    path = tmp_path / "m.pt"
    _checkpoint(path)
    mine = tmp_path / ".m.pt.ckpt-guard-abc123.tmp"
    mine.write_bytes(b"half a file")
    other = tmp_path / ".other.pt.ckpt-guard-def456.tmp"
    other.write_bytes(b"someone else's")
    result = run_fix(path)
    assert result.changed
    assert not mine.exists() and other.exists()
    assert any("interrupted fix" in n for n in result.notes)


def test_convert_never_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"weight": torch.randn(64, 64), "bias": torch.randn(64)}, path)
    existing = tmp_path / "w.safetensors"
    existing.write_bytes(b"precious, not ours")
    result = run_fix(path, convert="safetensors")
    assert not result.changed and any("exists" in n for n in result.notes)
    assert existing.read_bytes() == b"precious, not ours"
