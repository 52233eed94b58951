"""Never lose data: a process killed mid-write, a written file that does not verify, an output
that would grow — each leaves the original byte-identical."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from ckpt_guard.rewrite import stale_temporaries
from tests.rewrite.helpers import run_fix

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path, n: int = 64) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(n, n) for _ in range(4)])
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, n)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "marker": torch.arange(5000, dtype=torch.int64)}, path)


CHILD = textwrap.dedent("""
    import sys, time
    from ckpt_guard.analyze import analyze
    from ckpt_guard.read import read_path
    from ckpt_guard.rewrite import fix_file
    from tests.rewrite.helpers import fix_rules

    def progress(done, total):
        # Mid-write: the temporary file exists and is partly written. Say so, then stall.
        print("writing", flush=True)
        time.sleep(60)

    path = sys.argv[1]
    fix_file(path, analyze(read_path(path)), fix_rules(), progress=progress)
    print("finished", flush=True)
""")


def test_sigkill_mid_write_leaves_original_intact(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.strip() == b"writing"
        temps = stale_temporaries(tmp_path)
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # really mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["optimizer"] is not None
    # The leftover is recognisable, and the next run still works.
    assert stale_temporaries(tmp_path)
    result = run_fix(path)
    assert result.error is None and result.changed


def _corrupt_when(tmp_path: Path, find: bytes):
    """A progress hook that damages the temporary file while it is being written — a real
    disk-level corruption the verification must catch."""
    done = []

    def progress(_done: int, _total: int) -> None:
        if done:
            return
        for tmp in stale_temporaries(tmp_path):
            data = tmp.read_bytes()
            at = data.find(find)
            if at >= 0:
                with open(tmp, "r+b") as fh:
                    fh.seek(at)
                    fh.write(bytes(len(find)))
                done.append(tmp)

    return progress, done


def test_corrupted_storage_fails_verification_and_keeps_original(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    # Bytes of the int64 marker tensor, once they are in the temporary file.
    needle = torch.arange(5000, dtype=torch.int64)[100:140].numpy().tobytes()
    progress, done = _corrupt_when(tmp_path, needle)
    result = run_fix(path, progress=progress)
    assert done, "the corruption hook never found the written bytes"
    assert result.error and "verification failed" in result.error
    assert not result.changed
    assert path.read_bytes() == before
    assert stale_temporaries(tmp_path) == []


def test_corrupted_storage_fails_verification_without_a_memory_map(tmp_path, monkeypatch):
    """Where the written file cannot be memory-mapped, verification reads it into a buffer:
    the same bytes are compared, the same corruption caught."""
    from ckpt_guard.rewrite import verify

    monkeypatch.setattr(verify, "_mapped", lambda fh, size: None)
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    needle = torch.arange(5000, dtype=torch.int64)[100:140].numpy().tobytes()
    progress, done = _corrupt_when(tmp_path, needle)
    result = run_fix(path, progress=progress)
    assert done and result.error and "verification failed" in result.error
    assert path.read_bytes() == before
    clean = tmp_path / "clean.pt"
    _checkpoint(clean)
    assert run_fix(clean).changed  # and an intact file verifies


def test_corrupted_pickle_fails_verification(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    progress, done = _corrupt_when(tmp_path, b"_rebuild_tensor_v2")
    result = run_fix(path, progress=progress)
    assert done and result.error and "verification failed" in result.error
    assert path.read_bytes() == before


def test_mode_is_kept(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    path.chmod(0o640)
    result = run_fix(path)
    assert result.changed
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_out_path_leaves_input_alone(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    out = tmp_path / "mirror" / "sub" / "ckpt.pt"
    result = run_fix(path, out_path=str(out))
    assert result.changed and result.out_path == str(out)
    assert path.read_bytes() == before
    assert torch.load(out, weights_only=True)["optimizer"] is None
    assert result.size_after == out.stat().st_size


def test_dry_run_projects_exact_size_without_writing(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    dry = run_fix(path, dry_run=True)
    assert dry.dry_run and dry.changed and path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    real = run_fix(path)
    assert real.size_after == dry.size_after == path.stat().st_size


def test_unwritable_destination_is_an_error_not_a_traceback(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    before = path.read_bytes()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    result = run_fix(path, out_path=str(blocker / "ckpt.pt"))
    assert result.error and not result.changed
    assert "\n" not in result.error
    assert path.read_bytes() == before


def test_progress_reaches_total_and_second_fix_is_a_no_op(tmp_path):
    path = tmp_path / "ckpt.pt"
    _checkpoint(path)
    calls: list[tuple[int, int]] = []
    result = run_fix(path, progress=lambda done, total: calls.append((done, total)))
    assert result.changed and calls
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and all(d <= t for d, t in calls)
    assert calls[-1][0] == calls[-1][1]
    data = path.read_bytes()
    again = run_fix(path)
    assert not again.changed and again.error is None
    assert path.read_bytes() == data
