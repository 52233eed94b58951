"""size-growth in the Action: judged against the pull request's base (sizes the selection
already read from git), with per-path budgets from overrides. Real git repositories (base
and head commits, a depth-1 checkout), the entrypoint as a real process, the API on
loopback."""

from __future__ import annotations

import pytest

from tests.action.fakegithub import FakeGitHub
from tests.action.runner import REPO, pr_payload, run_action
from tests.action.scenarios import ckpt_bytes, make_small_pr, stripped, weights

BUDGET = (b"version: 1\nrules:\n  size-growth: {action: fail, max-bytes: 4kB, max-percent: 50}\n"
          b"overrides:\n  - paths: ['models/zoo/**']\n"
          b"    rules: {size-growth: {max-bytes: 10MB, max-percent: null}}\n")


@pytest.fixture
def api():
    with FakeGitHub(REPO) as server:
        yield server


def _half(n: int) -> bytes:
    return ckpt_bytes({k: v.half() for k, v in weights(n).items()})


def test_growth_over_budget_fails_the_pull_request(tmp_path, api):
    ws, base, head = make_small_pr(
        tmp_path, {".ckpt-guard.yml": BUDGET, "models/grow.pt": _half(16),
                   "models/zoo/big.pt": _half(16)},
        {"models/grow.pt": _half(64), "models/zoo/big.pt": _half(64),
         "models/new.pt": _half(64), "models/ok.pt": stripped()})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(31, base, head))
    assert r.rc == 1, r.stdout + r.stderr
    errors = [a for a in r.annotations("error") if "size-growth" in a]
    assert any("models/grow.pt" in a and "grew by" in a and "max-bytes" in a for a in errors)
    assert any("models/new.pt" in a and "new since the base" in a for a in errors)
    assert not any("models/zoo/big.pt" in a for a in errors)  # its override allows it
    assert "size-growth" in api.state.comments[31][0]["body"]


def test_within_budget_passes(tmp_path, api):
    ws, base, head = make_small_pr(tmp_path, {".ckpt-guard.yml": BUDGET,
                                              "models/grow.pt": _half(32)},
                                   {"models/grow.pt": _half(33)})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(32, base, head))
    assert r.rc == 0, r.stdout + r.stderr
    assert not [a for a in r.annotations("error") if "size-growth" in a]


def test_built_in_policy_does_not_judge_growth(tmp_path, api):
    ws, base, head = make_small_pr(tmp_path, {"models/grow.pt": _half(16)},
                                   {"models/grow.pt": _half(64)})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(33, base, head))
    assert r.rc == 0, r.stdout + r.stderr
    assert "size-growth" not in r.stdout
