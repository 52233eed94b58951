"""`ckpt-guard fix` / `check` at the edges: unsafe pickles under a lenient policy, one file
named twice, colliding --out mirrors, an unwritable --output, odd path names."""

from __future__ import annotations

import json
import os

import torch

from tests.cli.conftest import run_cli
from tests.cli.test_check import training_checkpoint
from tests.cli.test_fix import FIX_POLICY


class _Payload:
    """Pickles as a call of ``os.getcwd`` — harmless, but exactly what unsafe means."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_unsafe_pickle_is_never_rewritten_even_when_the_policy_lets_it_pass(tmp_path):
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY + "  unsafe-pickle: off\n")
    path = tmp_path / "evil.pt"
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "payload": _Payload()}, path)
    before = path.read_bytes()
    p = run_cli("fix", "--format", "json", "evil.pt", cwd=tmp_path)
    f = json.loads(p.stdout)["files"][0]
    assert path.read_bytes() == before
    assert f["status"] == "fail" and p.returncode == 1
    assert any("pickle is unsafe" in n for n in f.get("notes", [])), f


def test_symlink_and_its_target_are_fixed_once(tmp_path):
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    training_checkpoint(tmp_path / "epoch3.pt")
    (tmp_path / "last.pt").symlink_to("epoch3.pt")
    p = run_cli("fix", "--format", "json", "last.pt", "epoch3.pt", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    files = {f["path"]: f for f in json.loads(p.stdout)["files"]}
    assert files["last.pt"]["status"] == "fixed"
    assert files["epoch3.pt"]["status"] == "pass"
    assert any("same file as last.pt" in n for n in files["epoch3.pt"]["notes"])
    assert (tmp_path / "last.pt").is_symlink()
    assert torch.load(tmp_path / "epoch3.pt", weights_only=True)["optimizer"] is None


def test_out_mirrors_that_collide_are_not_overwritten(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / ".ckpt-guard.yml").write_text(FIX_POLICY)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        training_checkpoint(tmp_path / d / "last.pt")
    # Both live outside the working directory: each mirrors to dist/last.pt.
    p = run_cli("fix", "--format", "json", "--out", "dist", str(tmp_path / "a" / "last.pt"),
                str(tmp_path / "b" / "last.pt"), cwd=work)
    files = json.loads(p.stdout)["files"]
    assert [f["status"] for f in files] == ["fixed", "error"]
    assert "same place" in files[1]["findings"][-1]["message"]
    assert p.returncode == 1
    assert torch.load(work / "dist" / "last.pt", weights_only=True)["optimizer"] is None


def test_unwritable_output_exits_2_before_anything_is_rewritten(tmp_path):
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    path = training_checkpoint(tmp_path / "last.pt")
    before = path.read_bytes()
    for verb in ("fix", "check"):
        p = run_cli(verb, "--output", str(tmp_path / "no" / "such" / "dir" / "r.json"),
                    "last.pt", cwd=tmp_path)
        assert p.returncode == 2
        assert len(p.stderr.strip().splitlines()) == 1 and "No such file" in p.stderr
    assert path.read_bytes() == before


def test_no_paths_outside_a_repository_is_a_usage_error(tmp_path):
    for verb in ("check", "fix"):
        p = run_cli(verb, cwd=tmp_path)
        assert p.returncode == 2 and "not inside a git repository" in p.stderr


def test_paths_with_spaces_and_unicode(tmp_path):
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    d = tmp_path / "mödels ünd spaces"
    d.mkdir()
    path = training_checkpoint(d / "läst run.pt")
    assert run_cli("check", d.name, cwd=tmp_path).returncode == 1
    p = run_cli("fix", "--format", "json", d.name, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["files"][0]["path"] == f"{d.name}/läst run.pt"
    assert torch.load(path, weights_only=True)["optimizer"] is None
    assert run_cli("check", str(path), cwd=tmp_path).returncode == 0


def test_progress_is_plain_lines_off_a_terminal(capsys, monkeypatch):
    from ckpt_guard.app import fix as fixing

    monkeypatch.setattr(fixing, "PROGRESS_MIN_BYTES", 0)
    bar = fixing._Progress("fixing big.pt", terminal=False)
    for done in range(0, 101, 10):
        bar(done * 10**6, 100 * 10**6)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    # One line per quarter passed, not one per call.
    assert [line.split(": ")[1].split("%")[0] for line in lines] == ["30", "50", "80", "100"]
    assert all(line.startswith("fixing big.pt: ") for line in lines)


def test_out_never_deletes_a_checkpoint_directorys_training_files(tmp_path):
    """``--out`` means copies, the original untouched: a directory fix that would delete
    training files in place is refused (one line, exit 1), nothing removed — dry run too."""
    from tests.fixtures.checkpoints import build_fixture

    fx = build_fixture("hf-trainer-dir", tmp_path / "ckpts", tmp_path / "pkgs")
    before = sorted(p.name for p in fx.path.iterdir())
    assert "optimizer.pt" in before
    pol = tmp_path / "p.yml"
    pol.write_text("version: 1\nrules:\n  optimizer-state: {action: fix, "
                   "remove-training-files: true}\n")
    for extra in ((), ("--dry-run",)):
        r = run_cli("fix", "--policy", str(pol), "--out", str(tmp_path / "out"), *extra,
                    str(fx.path))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "--out writes copies" in r.stdout and "optimizer.pt" in r.stdout
        assert sorted(p.name for p in fx.path.iterdir()) == before
    r = run_cli("fix", "--policy", str(pol), str(fx.path))  # in place it still works
    assert r.returncode == 0 and "optimizer.pt" not in {p.name for p in fx.path.iterdir()}
