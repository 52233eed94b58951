"""On pull requests the gate's policy comes from the base commit: a pull request cannot switch
off (or exclude itself from) the rule that would fail it. Real git repositories (base and head
commits, a depth-1 checkout), the entrypoint as a real process, the API on loopback."""

from __future__ import annotations

import re

import pytest

from tests.action.fakegithub import FakeGitHub
from tests.action.runner import REPO, pr_payload, run_action
from tests.action.scenarios import ckpt_bytes, make_small_pr, training

STRICT = b"version: 1\nrules:\n  needs-code: fail\n"
LOOSE = (b"version: 1\nexclude: ['models/train.pt']\n"
         b"rules:\n  optimizer-state: 'off'\n  needs-code: fail\n")


@pytest.fixture
def api():
    with FakeGitHub(REPO) as server:
        yield server


def _repo(tmp_path, base_files: dict, head_files: dict):
    return make_small_pr(tmp_path, base_files, head_files)


def test_a_pull_request_cannot_loosen_its_own_gate(tmp_path, api):
    ws, base, head = _repo(tmp_path, {".ckpt-guard.yml": STRICT},
                           {".ckpt-guard.yml": LOOSE, "models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(21, base, head))
    assert r.rc == 1, r.stdout + r.stderr
    assert r.outputs["status"] == "fail"
    assert any("optimizer-state" in a and "models/train.pt" in a for a in r.annotations("error"))
    (warning,) = [a for a in r.annotations("warning") if "policy changed" in a]
    assert "optimizer-state: fail → off" in warning and "exclude adds models/train.pt" in warning
    body = api.state.comments[21][0]["body"]
    assert "This pull request changes the policy <code>.ckpt-guard.yml</code>" in body
    assert "the base commit " + base[:7] in body
    # what the pull request's own policy would have done with its files
    assert "<code>models/train.pt</code> fail → not checked (excluded)" in body
    assert "fail → not checked (excluded)" in r.summary


def test_policy_from_head_trusts_the_pull_request(tmp_path, api):
    ws, base, head = _repo(tmp_path, {".ckpt-guard.yml": STRICT},
                           {".ckpt-guard.yml": LOOSE, "models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(22, base, head), inputs={"policy_from": "head"})
    assert r.rc == 0, r.stdout + r.stderr
    assert not [a for a in r.annotations("warning") if "policy changed" in a]


def test_base_without_a_policy_file_gates_with_the_built_in_policy(tmp_path, api):
    ws, base, head = _repo(tmp_path, {}, {".ckpt-guard.yml": LOOSE,
                                          "models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(23, base, head))
    assert r.rc == 1 and r.outputs["status"] == "fail", r.stdout + r.stderr
    assert any("policy changed" in a for a in r.annotations("warning"))


def test_unchanged_policy_says_nothing(tmp_path, api):
    ws, base, head = _repo(tmp_path, {".ckpt-guard.yml": STRICT},
                           {"models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(24, base, head))
    assert r.rc == 1
    assert not [a for a in r.annotations("warning") if "policy" in a]
    assert "changes the policy" not in api.state.comments[24][0]["body"]


def test_a_broken_pull_request_policy_is_reported_not_used(tmp_path, api):
    ws, base, head = _repo(tmp_path, {".ckpt-guard.yml": STRICT},
                           {".ckpt-guard.yml": b"version: 1\nrules: {optimizer-state: nope}\n",
                            "models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(25, base, head))
    assert r.rc == 1 and r.outputs["status"] == "fail", r.stdout + r.stderr
    (warning,) = [a for a in r.annotations("warning") if "policy changed" in a]
    assert "does not load" in warning


def test_unreachable_base_fails_closed(tmp_path, api):
    ws, base, head = _repo(tmp_path, {".ckpt-guard.yml": STRICT},
                           {".ckpt-guard.yml": LOOSE, "models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(26, "d" * 40, head))
    assert r.rc == 2, r.stdout + r.stderr
    assert r.outputs["status"] == "error"
    (err,) = r.annotations("error")
    assert "cannot read the policy of the base commit" in err and "policy_from: head" in err
    assert "Traceback" not in r.stderr


def test_the_comment_names_files_whose_verdict_the_new_policy_changes(tmp_path, api):
    off = b"version: 1\nrules:\n  optimizer-state: 'off'\n  needs-code: fail\n"
    ws, base, head = _repo(tmp_path, {".ckpt-guard.yml": STRICT},
                           {".ckpt-guard.yml": off, "models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(27, base, head))
    assert r.rc == 1
    body = api.state.comments[27][0]["body"]
    assert re.search(r"<code>models/train\.pt</code> fail → (pass|warn)", body), body
