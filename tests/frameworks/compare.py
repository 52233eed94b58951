"""Shared by the real-trainer comparisons: run the CLI's fix, compare two loaded checkpoints
value by value (types included), tensors exactly or up to the declared cast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

STRIP_ONLY = "version: 1\nrules:\n  optimizer-state: fix\n  training-state: fix\n"
# max-bytes 0: the tiny models' FP32 would otherwise stay below the rule's threshold.
STRIP_AND_CAST = STRIP_ONLY + "  fp32-payload: {action: fix, cast-to: float16, max-bytes: 0}\n"
POLICIES = {"strip-only": STRIP_ONLY, "strip+cast": STRIP_AND_CAST}
# With the EMA kept as the weights, as the YOLO strips do when both are set.
KEEP_EMA = "  ema-duplicate: {action: fix, keep: ema}\n"
EMA_POLICIES = {"strip+ema": STRIP_ONLY + KEEP_EMA, "strip+ema+cast": STRIP_AND_CAST + KEEP_EMA}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def fix_copy(src: Path, policy: str, work: Path) -> Path:
    """``ckpt-guard fix --out`` of ``src`` under ``policy`` (text); the fixed file's path
    (``src`` itself when the policy finds nothing to fix).
    Also asserts that ``check`` of the output with the same policy passes."""
    work.mkdir(parents=True, exist_ok=True)
    pol = work / "policy.yml"
    pol.write_text(policy)
    out = work / "out"
    # Run beside the file: --out mirrors the path as given, so the copy is out/<name>.
    done = cli("fix", "--policy", str(pol), "--out", str(out), src.name, cwd=src.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    fixed = out / src.name
    if not fixed.is_file():  # nothing to fix under this policy: the file stays as it is
        assert "FIXED" not in done.stdout, done.stdout
        return src
    again = cli("check", "--policy", str(pol), str(fixed), cwd=work)
    assert again.returncode == 0, again.stdout + again.stderr
    return fixed


def assert_same(ours: Any, theirs: Any, path: str = "", cast: dict[str, str] | None = None) -> None:
    """``ours`` equals ``theirs``: same types, same keys in the same order, equal values;
    tensors bit-equal, or (where ``cast`` is given) ``theirs`` rounded to ``ours``' dtype —
    the declared FP32 → FP16 cast; ``cast`` collects how each tensor compared."""
    assert type(ours) is type(theirs), (path, type(ours), type(theirs))
    if isinstance(theirs, torch.Tensor):
        assert ours.shape == theirs.shape and ours.stride() == theirs.stride(), path
        if ours.dtype != theirs.dtype:
            assert cast is not None, (path, ours.dtype, theirs.dtype)
            assert theirs.dtype == torch.float32 and ours.dtype == torch.float16, path
            assert torch.equal(ours, theirs.to(torch.float16)), path
            cast[path] = "cast"
        else:
            assert torch.equal(ours, theirs), path
            if cast is not None:
                cast[path] = "equal"
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), (path, list(ours), list(theirs))
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{path}.{k}" if path else str(k), cast)
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]", cast)
    else:
        assert ours == theirs, (path, ours, theirs)


def assert_same_module(ours: Any, theirs: Any, path: str = "model") -> None:
    """Two pickled ``nn.Module`` trees are the same object for object: same classes, same
    attribute names, parameters and buffers bit-equal with the same dtype and
    ``requires_grad``, other attributes equal (tensors included)."""
    assert type(ours) is type(theirs), (path, type(ours), type(theirs))
    mine, other = vars(ours), vars(theirs)
    assert set(mine) == set(other), (path, set(mine) ^ set(other))
    for key, value in other.items():
        if key in ("_parameters", "_buffers"):
            assert list(mine[key]) == list(value), (path, key)
            for name, t in value.items():
                p = mine[key][name]
                assert (p is None) == (t is None), f"{path}.{name}"
                if t is not None:
                    assert type(p) is type(t) and p.requires_grad == t.requires_grad, \
                        f"{path}.{name}"
                    assert_same(p.detach(), t.detach(), f"{path}.{name}")
        elif key == "_modules":
            assert list(mine[key]) == list(value), path
            for name, sub in value.items():
                assert_same_module(mine[key][name], sub, f"{path}.{name}")
        else:
            assert_same(mine[key], value, f"{path}.{key}")
