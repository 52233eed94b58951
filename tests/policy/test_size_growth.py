"""size-growth: a budget against the base revision. The rule on its own (a table of base
sizes and budgets), then `ckpt-guard check --base` in real git repositories."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ckpt_guard.analyze import analyze
from ckpt_guard.policy import load_text
from ckpt_guard.policy.rules import evaluate
from ckpt_guard.read import read_path
from tests.action.gitrepo import commit, git, init

POLICY = "version: 1\nrules:\n  size-growth: {action: fail, max-bytes: %s, max-percent: %s}\n"


def _save(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _weights(n: int) -> dict:
    return {"w": torch.arange(n * n, dtype=torch.float16).reshape(n, n)}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("sg") / "m.pt"
    path.write_bytes(_save(_weights(64)))
    return analyze(read_path(str(path))), path.stat().st_size


@pytest.mark.parametrize(("max_bytes", "max_percent", "base", "fires"), [
    ("null", "null", 0, False),          # no budget at all
    ("1kB", "null", None, False),        # no base given: not judged
    ("1kB", "null", "same", False),      # unchanged
    ("1kB", "null", "bigger", False),    # shrank
    ("1kB", "null", 0, True),            # new file: all its bytes are growth
    ("100MB", "null", 0, False),         # new file within the byte budget
    ("null", "5", 0, False),             # a percentage of nothing judges no new file
    ("1kB", "null", "half", True),       # doubled: 4 kB over 1 kB
    ("100MB", "50", "half", True),       # +100 % over 50 %
    ("100MB", "150", "half", False),
])
def test_budgets(model, max_bytes, max_percent, base, fires) -> None:
    analysis, size = model
    base_size = {"same": size, "bigger": size + 10, "half": size // 2}.get(base, base)
    rules = load_text(POLICY % (max_bytes, max_percent)).rules_for("m.pt")
    findings, removable = evaluate(analysis, rules, path="m.pt", base_size=base_size)
    hits = [f for f in findings if f.rule == "size-growth"]
    assert bool(hits) is fires
    assert removable == 0 and not any(f.fixable for f in hits)
    if hits:
        d = hits[0].detail
        assert d["size_bytes"] == size and d["growth_bytes"] == size - base_size
        assert hits[0].message.startswith("new since the base" if base == 0 else "grew by")


def test_built_in_policy_leaves_it_off(model) -> None:
    analysis, _ = model
    rules = load_text("version: 1\n").rules_for("m.pt")
    findings, _ = evaluate(analysis, rules, path="m.pt", base_size=0)
    assert not [f for f in findings if f.rule == "size-growth"]


# --- ckpt-guard check --base, real repositories -------------------------------------------------

def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main: models/a.pt (small) and the policy; feature: a.pt grows 4×, b.pt is added,
    c.pt (in an override with a looser budget) grows too."""
    r = init(tmp_path / "repo")
    policy = (b"version: 1\nrules:\n  size-growth: {action: fail, max-bytes: 2kB}\n"
              b"overrides:\n  - paths: ['models/big/**']\n"
              b"    rules: {size-growth: {max-bytes: 1MB}}\n")
    commit(r, "base", {".ckpt-guard.yml": policy, "models/a.pt": _save(_weights(16)),
                       "models/big/c.pt": _save(_weights(16))})
    git(r, "checkout", "-q", "-b", "feature")
    commit(r, "grow", {"models/a.pt": _save(_weights(64)), "models/b.pt": _save(_weights(64)),
                       "models/big/c.pt": _save(_weights(64))})
    return r


def _by_path(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    return {f["path"]: f for f in json.loads(proc.stdout)["files"]}


def _growth(f: dict) -> list[dict]:
    return [x for x in f["findings"] if x["rule"] == "size-growth"]


def test_check_base_alone_is_the_merge_base_with_main(repo: Path) -> None:
    p = _cli(repo, "check", "--format", "json", "--base")
    assert p.returncode == 1, p.stderr
    files = _by_path(p)
    (a,) = _growth(files["models/a.pt"])
    assert a["action"] == "fail" and a["detail"]["base_bytes"] < a["detail"]["size_bytes"]
    (b,) = _growth(files["models/b.pt"])
    assert b["detail"]["base_bytes"] == 0 and b["message"].startswith("new since the base")
    assert not _growth(files["models/big/c.pt"])  # its override's budget holds it


def test_check_without_base_does_not_judge_growth(repo: Path) -> None:
    p = _cli(repo, "check", "--format", "json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not any(_growth(f) for f in _by_path(p).values())


def test_check_base_rev_and_paths_after_it(repo: Path) -> None:
    # An explicit revision: against HEAD itself nothing grew.
    p = _cli(repo, "check", "--format", "json", "--base", "HEAD", "models/a.pt")
    assert p.returncode == 0 and not _growth(_by_path(p)["models/a.pt"])
    # pre-commit appends file names after `--base`: a name that is not a revision is a path.
    p = _cli(repo, "check", "--format", "json", "--base", "models/a.pt")
    assert p.returncode == 1, p.stderr
    assert list(_by_path(p)) == ["models/a.pt"]


def test_check_base_unknown_revision_is_a_usage_error(repo: Path) -> None:
    p = _cli(repo, "check", "--base", "no-such-rev")
    assert p.returncode == 2 and "--base no-such-rev" in p.stderr
    git(repo, "branch", "-q", "-m", "main", "trunk")
    p = _cli(repo, "check", "--base")
    assert p.returncode == 2 and "no default branch" in p.stderr
