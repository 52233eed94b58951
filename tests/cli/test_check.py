"""`ckpt-guard check` / `inspect` / `init` end to end through the real console entry."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import run_cli


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))


def training_checkpoint(path: Path) -> Path:
    """A resume checkpoint: weights + Adam state after one real step."""
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    torch.save({"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    return path


def clean_checkpoint(path: Path) -> Path:
    sd = {k: (v.half() if v.is_floating_point() and "1." not in k else v)
          for k, v in tiny_model().state_dict().items()}
    torch.save(sd, path)
    return path


def test_clean_file_passes(tmp_path: Path) -> None:
    p = run_cli("check", str(clean_checkpoint(tmp_path / "clean.pt")))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS" in p.stdout
    assert "1 file checked, 0 failed" in p.stdout


def test_optimizer_state_fails_with_bytes(tmp_path: Path) -> None:
    path = training_checkpoint(tmp_path / "last.pt")
    p = run_cli("check", "--format", "json", str(path))
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    f = report["files"][0]
    assert f["status"] == "fail"
    sd = torch.load(path, weights_only=True)
    opt_bytes = sum(t.untyped_storage().nbytes() for s in sd["optimizer"]["state"].values()
                    for t in s.values())
    assert f["tensor_bytes"]["by_role"]["optimizer"] == opt_bytes
    finding = next(x for x in f["findings"] if x["rule"] == "optimizer-state")
    assert finding["action"] == "fail" and finding["bytes"] == opt_bytes
    assert report["summary"]["failed"] == 1
    assert report["summary"]["bytes_removable"] >= opt_bytes


def test_json_report_contract(tmp_path: Path) -> None:
    clean = clean_checkpoint(tmp_path / "a.pt")
    train = training_checkpoint(tmp_path / "b.pt")
    p = run_cli("check", "--format", "json", str(clean), str(train))
    r = json.loads(p.stdout)
    assert r["tool"] == "ckpt-guard" and isinstance(r["version"], str)
    assert set(r["summary"]) >= {"files", "failed", "warned", "bytes_total", "bytes_removable"}
    assert r["summary"]["files"] == 2
    assert r["summary"]["bytes_total"] == clean.stat().st_size + train.stat().st_size
    for f in r["files"]:
        assert set(f) >= {"path", "format", "framework", "size_bytes", "tensor_bytes",
                          "findings", "status"}
        assert set(f["tensor_bytes"]) == {"total", "by_role", "by_dtype"}
        assert f["format"] == "torch-zip"
        for finding in f["findings"]:
            assert set(finding) >= {"rule", "action", "message", "bytes"}
    by_path = {Path(f["path"]).name: f for f in r["files"]}
    assert by_path["a.pt"]["tensor_bytes"]["by_dtype"].keys() >= {"float16", "float32"}
    assert "torch." not in json.dumps(by_path["a.pt"]["tensor_bytes"]["by_dtype"])


@pytest.mark.parametrize("name,content,needle", [
    ("notes.pt", b"just some text, not weights\n", "not a weight file"),
    ("empty.pt", b"", "empty"),
    ("broken.pt", b"PK\x03\x04" + b"\x00" * 40, "zip"),
    ("pickle.pt", b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "pickle"),
])
def test_bad_input_is_a_one_line_finding(tmp_path: Path, name: str, content: bytes,
                                         needle: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    good = clean_checkpoint(tmp_path / "good.pt")
    p = run_cli("check", "--format", "json", str(bad), str(good))
    assert p.returncode == 1
    r = json.loads(p.stdout)
    files = {Path(f["path"]).name: f for f in r["files"]}
    assert files["good.pt"]["status"] == "pass"  # the rest is still checked
    bad_f = files[name]
    assert bad_f["status"] == "error"
    (finding,) = bad_f["findings"]
    assert finding["rule"] == "unreadable"
    assert needle in finding["message"].lower()
    assert "\n" not in finding["message"]


def test_truncated_checkpoint(tmp_path: Path) -> None:
    full = training_checkpoint(tmp_path / "full.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full[: len(full) // 2])
    p = run_cli("check", str(cut))
    assert p.returncode == 1
    assert "unreadable" in p.stdout and "ERROR" in p.stdout


def test_symlink_leaving_repo_is_not_followed(tmp_path: Path, git_repo: Path) -> None:
    outside = training_checkpoint(tmp_path / "outside.pt")
    (git_repo / "link.pt").symlink_to(outside)
    p = run_cli("check", "--format", "json", "link.pt", cwd=git_repo)
    f = json.loads(p.stdout)["files"][0]
    assert f["status"] == "error"
    assert "outside the repository" in f["findings"][0]["message"]


def test_no_paths_checks_the_repository(git_repo: Path) -> None:
    training_checkpoint(git_repo / "models" / "last.pt") if (git_repo / "models").mkdir() \
        is None else None
    clean_checkpoint(git_repo / "best.pth")
    (git_repo / "README.md").write_text("hello\n")
    (git_repo / ".gitignore").write_text("ignored.pt\n")
    training_checkpoint(git_repo / "ignored.pt")
    subprocess.run(["git", "add", "-A"], cwd=git_repo, check=True)
    p = run_cli("check", "--format", "json", cwd=git_repo)
    paths = sorted(f["path"] for f in json.loads(p.stdout)["files"])
    assert paths == ["best.pth", "models/last.pt"]
    assert p.returncode == 1


def test_policy_error_exits_2_with_location(tmp_path: Path) -> None:
    pol = tmp_path / "policy.yml"
    pol.write_text("version: 1\nrules:\n  optimiser-state: fail\n")
    p = run_cli("check", "--policy", str(pol), str(clean_checkpoint(tmp_path / "x.pt")))
    assert p.returncode == 2
    assert "policy.yml:3:" in p.stderr
    assert "optimizer-state" in p.stderr  # the suggestion


def test_policy_fix_action_fails_and_says_fixable(tmp_path: Path) -> None:
    pol = tmp_path / ".ckpt-guard.yml"
    pol.write_text("version: 1\nrules:\n  optimizer-state: {action: fix}\n")
    path = training_checkpoint(tmp_path / "last.pt")
    p = run_cli("check", "--format", "json", "last.pt", cwd=tmp_path)
    assert p.returncode == 1
    finding = next(f for f in json.loads(p.stdout)["files"][0]["findings"]
                   if f["rule"] == "optimizer-state")
    assert finding["action"] == "fix" and finding["fixable"] is True
    assert path.exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("check", str(tmp_path / "missing.pt")).returncode == 2
    assert run_cli("check", "--format", "yaml", "x").returncode == 2
    assert run_cli().returncode == 2


def test_sarif_output(tmp_path: Path) -> None:
    out = tmp_path / "r.sarif"
    path = training_checkpoint(tmp_path / "last.pt")
    p = run_cli("check", "--format", "sarif", "--output", str(out), str(path))
    assert p.returncode == 1 and p.stdout == ""
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    res = next(r for r in run["results"] if r["ruleId"] == "optimizer-state")
    assert res["level"] == "error"
    assert rule_ids[res["ruleIndex"]] == "optimizer-state"
    assert res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("last.pt")


def test_markdown_output(tmp_path: Path) -> None:
    p = run_cli("check", "--format", "markdown", str(training_checkpoint(tmp_path / "l.pt")))
    assert p.returncode == 1
    assert "|" in p.stdout and "l.pt" in p.stdout


def test_inspect_text_and_json(tmp_path: Path) -> None:
    path = training_checkpoint(tmp_path / "last.pt")
    p = run_cli("inspect", str(path))
    assert p.returncode == 0, p.stderr
    for needle in ("torch-zip", "Top-level keys", "optimizer", "model", "float32",
                   "Tensor bytes by role", "torch._utils._rebuild_tensor_v2"):
        assert needle in p.stdout, needle
    j = json.loads(run_cli("inspect", "--format", "json", str(path)).stdout)
    top = {row["key"]: row for row in j["files"][0]["details"]["top_level"]}
    assert top["optimizer"]["role"] == "optimizer"
    assert top["model"]["role"] == "weights"
    assert top["epoch"]["bytes"] == 0


def test_init_writes_a_valid_policy(tmp_path: Path) -> None:
    p = run_cli("init", cwd=tmp_path)
    assert p.returncode == 0
    text = (tmp_path / ".ckpt-guard.yml").read_text()
    assert "optimizer-state" in text and text.count("#") > 10
    assert run_cli("init", cwd=tmp_path).returncode == 2  # no silent overwrite
    clean_checkpoint(tmp_path / "x.pt")
    assert run_cli("check", "x.pt", cwd=tmp_path).returncode == 0


def test_check_never_imports_torch(tmp_path: Path) -> None:
    import sys

    path = training_checkpoint(tmp_path / "last.pt")
    code = ("import sys, ckpt_guard.cli as c\n"
            f"rc = c.main(['check', '--format', 'json', '--output', {os.devnull!r}, "
            f"{str(path)!r}])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "raise SystemExit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 1, p.stderr


def test_torchscript_is_marked(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(tiny_model().eval()).save(str(path))
    r = json.loads(run_cli("check", "--format", "json", str(path)).stdout)
    assert r["files"][0]["format"] == "torchscript"
    assert zipfile.is_zipfile(path)


def test_symlinked_directory_leaving_repo_is_not_followed(tmp_path: Path, git_repo: Path) -> None:
    """A symlink in any component counts, not only the file's own name (check and fix)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = training_checkpoint(elsewhere / "a.pt")
    before = outside.read_bytes()
    (git_repo / "out").symlink_to(elsewhere, target_is_directory=True)
    p = run_cli("check", "--format", "json", "out/a.pt", cwd=git_repo)
    f = json.loads(p.stdout)["files"][0]
    assert f["status"] == "error"
    assert "outside the repository" in f["findings"][0]["message"]
    (git_repo / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  optimizer-state: fix\n")
    run_cli("fix", "out/a.pt", cwd=git_repo)
    assert outside.read_bytes() == before


def test_files_named_outside_the_repository_are_checked(tmp_path: Path, git_repo: Path) -> None:
    other = clean_checkpoint(tmp_path / "other.pt")
    p = run_cli("check", "--format", "json", str(other), cwd=git_repo)
    assert json.loads(p.stdout)["files"][0]["status"] == "pass"
