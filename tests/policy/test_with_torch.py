"""The policy layer on real checkpoints: torch writes them, our reader and analysis read them
(never executing them), evaluate judges them; torch is the oracle for the byte counts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ckpt_guard.analyze import analyze  # noqa: E402
from ckpt_guard.policy import builtin_policy, evaluate, load_policy  # noqa: E402
from ckpt_guard.read import read_path  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 6 * 6, 1000))


def _train(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()


def _unique_nbytes(tensors: list) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _findings(path: Path, rules: dict) -> tuple[dict, int]:
    findings, removable = evaluate(analyze(read_path(str(path))), rules, path=path.name)
    return {f.rule: f for f in findings}, removable


def test_adam_training_checkpoint(tmp_path: Path) -> None:
    model = _net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _train(model, opt)
    f = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, f)

    rules = builtin_policy().rules_for("last.pt")
    by_rule, removable = _findings(f, rules)
    sd = torch.load(f, weights_only=True)
    opt_bytes = _unique_nbytes([v for s in sd["optimizer"]["state"].values()
                                for v in s.values()])
    n_params = len(sd["optimizer"]["state"])
    o = by_rule["optimizer-state"]
    assert (o.action, o.bytes) == ("fail", opt_bytes)
    assert o.message.endswith(f"at 'optimizer': Adam-style state (exp_avg, exp_avg_sq) for "
                              f"{n_params} params")
    # FP32 weights: 1000x2304 linear ≈ 9.2 MB castable, under the 10 MB default: no finding
    assert "fp32-payload" not in by_rule
    assert removable == opt_bytes

    rules["fp32-payload"] = rules["fp32-payload"].merged({"max-bytes": 1_000_000})
    by_rule, removable = _findings(f, rules)
    # The BatchNorm layer ("1.*" in the Sequential) stays FP32 whole, found by structure
    # (running stats, 1-D weight) — the same decision `fix` makes.
    kept = {k for k in sd["model"] if k.startswith("1.")}
    castable = _unique_nbytes([v for k, v in sd["model"].items()
                               if v.dtype == torch.float32 and k not in kept])
    fp32 = by_rule["fp32-payload"]
    assert fp32.detail["castable_bytes"] == castable
    assert fp32.bytes == castable // 2
    assert removable == opt_bytes + castable // 2


def test_unsafe_pickle_is_found_without_running_it(tmp_path: Path) -> None:
    canary = tmp_path / "canary"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    f = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "x": Boom()}, f)
    by_rule, _ = _findings(f, builtin_policy().rules)
    assert not canary.exists()
    u = by_rule["unsafe-pickle"]
    assert u.action == "fail"
    assert "system" in u.message and "can run arbitrary code" in u.message


def test_policy_file_in_a_repo_drives_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    repo = tmp_path / "repo"
    (repo / "resume").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".ckpt-guard.yml").write_text(
        "version: 1\n"
        "rules:\n"
        "  optimizer-state: fix\n"
        "overrides:\n"
        "  - paths: [resume/]\n"
        "    rules: {optimizer-state: off}\n")
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt)
    ckpt = {"state_dict": model.state_dict(), "optimizer": opt.state_dict()}
    torch.save(ckpt, repo / "model.pt")
    torch.save(ckpt, repo / "resume" / "model.pt")

    monkeypatch.chdir(repo / "resume")
    policy = load_policy(None, Path.cwd())
    # found above the current directory: shown as an absolute path
    assert policy.source == str((repo / ".ckpt-guard.yml").resolve())
    top, _ = _findings(repo / "model.pt", policy.rules_for(policy.relpath(repo / "model.pt",
                                                                          repo)))
    assert top["optimizer-state"].fixable
    assert top["optimizer-state"].message.endswith(
        ": SGD momentum state (momentum_buffer) for 6 params")
    rel = policy.relpath(repo / "resume" / "model.pt", repo)
    assert rel == "resume/model.pt"
    resumed, removable = _findings(repo / "resume" / "model.pt", policy.rules_for(rel))
    assert "optimizer-state" not in resumed and removable == 0
