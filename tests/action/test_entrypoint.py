"""``ckpt-guard action`` end to end: real git repositories (shallow clones, LFS), torch-made
checkpoints, event payload files, GITHUB_* files, and the loopback GitHub API."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ckpt_guard.action.comment import MARKER
from ckpt_guard.report.units import format_bytes
from tests.action.fakegithub import FakeGitHub
from tests.action.gitrepo import commit, git, has_lfs, init, lfs_init
from tests.action.runner import REPO, TOKEN, pr_payload, run_action
from tests.action.scenarios import ckpt_bytes, make_pr_repo, stripped, training


@pytest.fixture
def api():
    with FakeGitHub(REPO) as fake:
        yield fake


@pytest.fixture
def pr_repo(tmp_path):
    return make_pr_repo(tmp_path)


def report_of(ws: Path) -> dict:
    return json.loads((ws / "ckpt-guard-report" / "report.json").read_text())


def test_pull_request_end_to_end_then_all_clear_update(pr_repo, api):
    ws, tmp = pr_repo["ws"], pr_repo["tmp"]
    payload = pr_payload(7, pr_repo["base"], pr_repo["head"])
    r = run_action(ws, tmp / "run1", event="pull_request", payload=payload, api_url=api.url)
    assert r.rc == 1, r.stdout + r.stderr
    rep = report_of(ws)
    checked = {f["path"]: f for f in rep["files"]}
    # changed weight files only: deleted skipped, rename followed, unchanged and non-weights out
    assert set(checked) == {"models/train.pt", "models/base.pt", "models/new/renamed.pt"}
    assert checked["models/train.pt"]["status"] == "fail"
    assert any(f["rule"] == "optimizer-state" for f in checked["models/train.pt"]["findings"])
    assert r.outputs["status"] == "fail" and r.outputs["violations"] == "1"
    assert r.outputs["files_checked"] == "3"
    assert r.outputs["report_json"] == "ckpt-guard-report/report.json"
    assert int(r.outputs["bytes_total"]) == sum(f["size_bytes"] for f in rep["files"])
    assert int(r.outputs["bytes_removable"]) > 0 and r.outputs["bytes_saved"] == "0"
    sarif = json.loads((ws / "ckpt-guard-report" / "report.sarif").read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
    (err,) = r.annotations("error")
    assert err.startswith("::error file=models/train.pt,title=ckpt-guard%3A optimizer-state::")
    assert TOKEN not in r.stdout + r.stderr

    # the step summary and the comment carry the same report
    assert "### ckpt-guard: ❌ 1 of 3 weight files fail the policy" in r.summary
    (c,) = api.state.comments[7]
    body = c["body"]
    assert body.startswith(MARKER) and "### ckpt-guard: ❌ 1 of 3" in body
    row = next(line for line in body.splitlines() if "<code>models/train.pt</code> |" in line)
    assert "| new |" in row and "optimizer" in row and "❌ fail: optimizer-state" in row
    renamed = next(line for line in body.splitlines()
                   if line.startswith("| <code>models/new/renamed.pt</code>"))
    assert "| 0 B |" in renamed  # same bytes as old-name.pt at the base
    base_row = next(line for line in body.splitlines()
                    if line.startswith("| <code>models/base.pt</code>"))
    assert "| +" in base_row
    assert "Change vs `main`" in body and "[run](https://github.com/acme/models/actions/runs/4242)" in body
    assert api.of("POST", r"/repos/acme/models/issues/7/comments")
    auths = {r.headers.get("authorization") for r in api.requests}
    assert auths == {f"Bearer {TOKEN}"}

    # the author strips the checkpoint; the second run edits the same comment: all clear
    origin = pr_repo["origin"]
    head2 = commit(origin, "strip", {"models/train.pt": stripped()})
    git(ws, "fetch", "-q", "--depth", "1", "origin", "feature")
    git(ws, "checkout", "-q", "FETCH_HEAD")
    payload2 = pr_payload(7, pr_repo["base"], head2)
    r2 = run_action(ws, tmp / "run2", event="pull_request", payload=payload2, api_url=api.url)
    assert r2.rc == 0, r2.stdout + r2.stderr
    assert r2.outputs["status"] == "pass" and r2.outputs["violations"] == "0"
    (c2,) = api.state.comments[7]
    assert c2["id"] == c["id"] and "✅ all clear: 3 weight files pass the policy" in c2["body"]
    assert len(api.of("POST", r"/repos/acme/models/issues/7/comments")) == 1
    assert len(api.of("PATCH", rf"/repos/acme/models/issues/comments/{c['id']}")) == 1
    assert not r2.annotations("error")


def test_fork_403_falls_back_to_summary_and_never_fails_the_job(pr_repo, api):
    api.state.forbid_writes = True
    payload = pr_payload(8, pr_repo["base"], pr_repo["head"], head_repo="someone/models")
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "fork", event="pull_request",
                   payload=payload, api_url=api.url, inputs={"fail_on": "never"})
    assert r.rc == 0, r.stdout + r.stderr
    assert r.outputs["status"] == "fail"
    warn = next(w for w in r.annotations("warning") if "could not comment" in w)
    assert "pull-requests: write" in warn and "workflow_run" in warn
    assert "### ckpt-guard: ❌" in r.summary
    assert not api.state.comments.get(8)
    ctx = json.loads((pr_repo["ws"] / "ckpt-guard-report" / "context.json").read_text())
    assert ctx["pr_number"] == 8 and ctx["head_sha"] == pr_repo["head"]


def test_two_phase_comment_from_workflow_run(pr_repo, api, tmp_path):
    # phase 1: check with a read-only token, comment disabled
    payload = pr_payload(9, pr_repo["base"], pr_repo["head"], head_repo="someone/models")
    r1 = run_action(pr_repo["ws"], tmp_path / "p1", event="pull_request", payload=payload,
                    api_url=api.url, inputs={"comment": "false"})
    assert r1.rc == 1 and not api.requests
    # phase 2: a fresh workspace holding only the downloaded artifact
    ws2 = tmp_path / "ws2"
    shutil.copytree(pr_repo["ws"] / "ckpt-guard-report", ws2 / "ckpt-guard-report")
    api.state.pulls[9] = {"number": 9, "head": {"sha": pr_repo["head"]}}
    wr = {"workflow_run": {"id": 1, "event": "pull_request", "head_sha": pr_repo["head"]}}
    r2 = run_action(ws2, tmp_path / "p2", event="workflow_run", payload=wr, api_url=api.url)
    assert r2.rc == 0, r2.stdout + r2.stderr
    (c,) = api.state.comments[9]
    assert "<code>models/train.pt</code>" in c["body"] and "❌" in c["body"]
    # a PR that moved on since phase 1 is not commented with a stale report
    api.state.pulls[9]["head"]["sha"] = "f" * 40
    c["body"] = MARKER + "\nold"
    r3 = run_action(ws2, tmp_path / "p3", event="workflow_run", payload=wr, api_url=api.url)
    assert r3.rc == 0 and "not commenting" in r3.stdout
    assert api.state.comments[9][0]["body"] == MARKER + "\nold"


def test_push_event_checks_before_after(pr_repo, api):
    payload = {"before": pr_repo["base"], "after": pr_repo["head"], "ref": "refs/heads/feature"}
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "push", event="push", payload=payload,
                   api_url=api.url)
    assert r.rc == 1
    assert {f["path"] for f in report_of(pr_repo["ws"])["files"]} == {
        "models/train.pt", "models/base.pt", "models/new/renamed.pt"}
    assert not api.requests  # no PR, no comment


def test_workflow_dispatch_checks_every_matching_file_and_fail_on(pr_repo, api):
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "wd", event="workflow_dispatch", payload={},
                   api_url=api.url, inputs={"fail_on": "never"})
    assert r.rc == 0
    paths = {f["path"] for f in report_of(pr_repo["ws"])["files"]}
    assert paths == {"models/train.pt", "models/base.pt", "models/new/renamed.pt",
                     "models/same.pt"}
    assert "unchanged" not in r.summary


def test_paths_input_and_fail_on_warn(pr_repo, api):
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "paths", event="workflow_dispatch",
                   payload={}, api_url=api.url,
                   inputs={"paths": "models/same.pt\nmodels/new/*.pt", "fail_on": "warn"})
    assert {f["path"] for f in report_of(pr_repo["ws"])["files"]} == {
        "models/same.pt", "models/new/renamed.pt"}
    assert r.rc == (1 if r.outputs["status"] == "warn" else 0)


def test_bad_inputs_and_policy_exit_2(pr_repo, api):
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "bad", event="workflow_dispatch", payload={},
                   api_url=api.url, inputs={"mode": "strip"})
    assert r.rc == 2 and "::error" in r.stdout and "mode" in r.stdout
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "bad2", event="workflow_dispatch",
                   payload={}, api_url=api.url, inputs={"policy": "missing.yml"})
    assert r.rc == 2 and "missing.yml" in r.stdout and r.outputs["status"] == "error"
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.skipif(not has_lfs(), reason="git-lfs not installed (apt-get install git-lfs)")
@pytest.mark.parametrize("lfs", ["auto", "off"])
def test_lfs_pointers_pulled_or_reported(tmp_path, api, lfs):
    origin = init(tmp_path / "origin")
    lfs_init(origin)
    base = commit(origin, "base", {".gitattributes": (origin / ".gitattributes").read_bytes(),
                                   "w.pt": stripped()})
    head = commit(origin, "train", {"w.pt": ckpt_bytes(training())})
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(ws),
        env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (ws / "w.pt").read_bytes().startswith(b"version https://git-lfs")
    r = run_action(ws, tmp_path / "run", event="pull_request", payload=pr_payload(3, base, head),
                   api_url=api.url, inputs={"lfs": lfs})
    (f,) = report_of(ws)["files"]
    body = api.state.comments[3][0]["body"]
    row = next(line for line in body.splitlines() if line.startswith("| <code>w.pt</code>"))
    grown = len(ckpt_bytes(training())) - len(stripped())
    if lfs == "auto":
        assert f["format"] == "torch-zip", r.stdout + r.stderr
        assert f["status"] == "fail" and r.rc == 1
        assert not (ws / "w.pt").read_bytes().startswith(b"version https://git-lfs")
    else:
        assert f["format"] == "lfs-pointer"
        assert any("lfs: true" in w for w in r.annotations("warning"))
    # Δ vs base comes from the base commit's LFS pointer, not the pointer blob's size
    assert f"| +{format_bytes(grown)} (" in row, row


def test_release_gate_reads_assets_by_range_and_checks_them(tmp_path, api):
    ws = init(tmp_path / "ws")
    commit(ws, "src", {"README.md": b"x"})
    big = {"model": {f"l{i}.w": torch.zeros(8192) for i in range(60)},
           "optimizer": {"state": {i: {"exp_avg": torch.zeros(8192)} for i in range(60)},
                         "param_groups": [{"lr": 0.1, "params": list(range(60))}]}}
    rel = api.add_release(tag="v1.0", draft=False, assets={
        "yolo-train.pt": ckpt_bytes(big), "yolo.pt": stripped(), "CHANGELOG.md": b"#"})
    payload = {"action": "published", "release": rel, "repository": {"full_name": REPO}}
    r = run_action(ws, tmp_path / "run", event="release", payload=payload, api_url=api.url,
                   inputs={"release_assets": "true"})
    assert r.rc == 1, r.stdout + r.stderr
    files = {f["path"]: f["status"] for f in report_of(ws)["files"]}
    assert files == {"yolo-train.pt": "fail", "yolo.pt": "pass"}
    gate = json.loads((ws / "ckpt-guard-report" / "release.json").read_text())
    assert gate["skipped"] == ["CHANGELOG.md"] and gate["tag"] == "v1.0"
    # read by range from the blob host (never the token there), not downloaded whole
    assert api.blob_requests and all("authorization" not in q.headers and "range" in q.headers
                                     for q in api.blob_requests)
    assert api.blob_bytes < len(ckpt_bytes(big)) / 4
    (train,) = [f for f in report_of(ws)["files"] if f["path"] == "yolo-train.pt"]
    assert any(n.startswith("read remotely by range") for n in train["notes"])
    assert "::error file=yolo-train.pt" in r.stdout
    assert "release gate <code>v1.0</code>" in r.summary


def test_release_gate_by_tag_finds_the_draft(tmp_path, api):
    ws = init(tmp_path / "ws")
    commit(ws, "src", {"README.md": b"x"})
    api.add_release(tag="v2.0", draft=True, assets={"m.pt": stripped()})
    payload = {"ref": "refs/tags/v2.0", "before": "0" * 40, "after": "1" * 40}
    r = run_action(ws, tmp_path / "run", event="push", payload=payload, api_url=api.url,
                   inputs={"release_assets": "true"})
    assert r.rc == 0, r.stdout + r.stderr
    assert [f["path"] for f in report_of(ws)["files"]] == ["m.pt"]


def test_console_script_runs_the_action(pr_repo, api):
    exe = shutil.which("ckpt-guard")
    if exe is None:
        pytest.skip("ckpt-guard console script not installed (pip install -e .)")
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "cli", event="workflow_dispatch",
                   payload={}, api_url=api.url, argv=[exe, "action"],
                   inputs={"paths": "models/same.pt"})
    assert r.rc == 0, r.stdout + r.stderr
    assert r.outputs["files_checked"] == "1" and r.outputs["status"] == "pass"


FIX_POLICY = b"version: 1\nrules:\n  optimizer-state:\n    action: fix\n"


def load_weights_only(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


@pytest.fixture
def fix_repo(tmp_path):
    repo = make_pr_repo(tmp_path)
    origin = repo["origin"]
    git(origin, "checkout", "-q", "main")  # so the PR branch can be pushed to
    ws = tmp_path / "ws-head"  # actions/checkout with ref: github.head_ref (depth 1)
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{origin}",
        str(ws))
    (ws / ".ckpt-guard.yml").write_bytes(FIX_POLICY)
    # The gate reads the base branch's policy: the repository's main branch asks for fixes.
    repo["base"] = commit(origin, "policy: fix optimizer state", {".ckpt-guard.yml": FIX_POLICY})
    repo["ws"] = ws
    return repo


def test_fix_and_commit_to_the_pr_branch(fix_repo, api):
    ws, origin = fix_repo["ws"], fix_repo["origin"]
    before = (ws / "models/train.pt").stat().st_size
    r = run_action(ws, fix_repo["tmp"] / "fix", event="pull_request", api_url=api.url,
                   payload=pr_payload(11, fix_repo["base"], fix_repo["head"]),
                   inputs={"mode": "fix", "commit_fixes": "true"})
    assert r.rc == 0, r.stdout + r.stderr
    assert r.outputs["status"] == "fixed" and int(r.outputs["bytes_saved"]) > 0
    after = (ws / "models/train.pt").stat().st_size
    assert after < before and before - after == int(r.outputs["bytes_saved"])
    pushed = git(origin, "log", "-1", "--format=%s%n%an", "feature")
    assert pushed.splitlines() == [
        "ckpt-guard: strip training state from 1 weight file", "github-actions[bot]"]
    sd = load_weights_only(subprocess_show(origin, "feature:models/train.pt"))
    assert "optimizer" not in sd or sd["optimizer"] is None
    assert "model" in sd
    assert "pushed" in r.stdout
    body = api.state.comments[11][0]["body"]
    assert "🔧" in body and "fixed" in body


def subprocess_show(repo: Path, spec: str) -> bytes:
    return subprocess.run(["git", "show", spec], cwd=repo, capture_output=True,
                          check=True).stdout


def test_commit_fixes_refuses_a_merge_commit_checkout_and_forks(fix_repo, api):
    ws, origin = fix_repo["ws"], fix_repo["origin"]
    head_before = git(origin, "rev-parse", "feature")
    r = run_action(ws, fix_repo["tmp"] / "merge", event="pull_request", api_url=api.url,
                   payload=pr_payload(12, fix_repo["base"], "e" * 40),
                   inputs={"mode": "fix", "commit_fixes": "true"})
    assert "github.head_ref" in r.stdout and r.rc == 0
    git(ws, "checkout", "-q", "--", "models/train.pt")
    r = run_action(ws, fix_repo["tmp"] / "fork", event="pull_request", api_url=api.url,
                   payload=pr_payload(13, fix_repo["base"], fix_repo["head"],
                                      head_repo="someone/models"),
                   inputs={"mode": "fix", "commit_fixes": "true"})
    assert "not pushing to a fork" in r.stdout
    assert git(origin, "rev-parse", "feature") == head_before


@pytest.mark.parametrize("draft", [True, False])
def test_release_gate_fix_replaces_draft_assets_only(tmp_path, api, draft):
    ws = init(tmp_path / "ws")
    commit(ws, "policy", {".ckpt-guard.yml": FIX_POLICY})
    big = ckpt_bytes(training())
    rel = api.add_release(tag="v3", draft=draft, assets={"model.pt": big})
    payload = {"action": "created", "release": rel, "repository": {"full_name": REPO}}
    r = run_action(ws, tmp_path / "run", event="release", payload=payload, api_url=api.url,
                   inputs={"release_assets": "true", "mode": "fix"})
    (asset,) = api.state.releases[0]["assets"]
    assert asset["name"] == "model.pt"
    if draft:
        assert r.rc == 0, r.stdout + r.stderr
        assert asset["size"] < len(big)
        sd = load_weights_only(api.state.blobs[asset["id"]])
        assert sd.get("optimizer") is None
        assert "replaced release asset model.pt" in r.stdout
    else:
        assert r.rc == 1 and asset["size"] == len(big)
        assert "immutable" in r.stdout
        assert not [q for q in api.requests if q.method in ("POST", "DELETE", "PATCH")]


def test_unreachable_base_falls_back_to_every_file_without_delta(pr_repo, api):
    payload = pr_payload(14, "d" * 40, pr_repo["head"])  # force-pushed away / unknown
    r = run_action(pr_repo["ws"], pr_repo["tmp"] / "nobase", event="pull_request",
                   payload=payload, api_url=api.url, inputs={"policy_from": "head"})
    assert any("could not be fetched" in w for w in r.annotations("warning"))
    assert len(report_of(pr_repo["ws"])["files"]) == 4
    body = api.state.comments[14][0]["body"]
    assert "Change vs" not in body and "| — |" in body


def test_commit_fixes_runs_no_hooks_and_commits_only_the_fixed_files(tmp_path, api):
    origin = init(tmp_path / "origin")
    base = commit(origin, "base", {"w/other.pt": stripped(), "w/keep.txt": b"k",
                                   ".ckpt-guard.yml": FIX_POLICY})
    git(origin, "checkout", "-q", "-b", "feature")
    head = commit(origin, "train", {"w/*.pt": ckpt_bytes(training())})  # a glob-looking name
    git(origin, "checkout", "-q", "main")
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{origin}",
        str(ws))
    (ws / ".ckpt-guard.yml").write_bytes(FIX_POLICY)
    (ws / "w/other.pt").write_bytes(ckpt_bytes(training()))  # dirty, not part of the PR
    canary = tmp_path / "canary"
    for hooks in (ws / ".git" / "hooks", ws / "planted"):
        hooks.mkdir(exist_ok=True)
        for name in ("pre-commit", "commit-msg", "post-commit", "pre-push",
                     "reference-transaction"):
            (hooks / name).write_text(f"#!/bin/sh\necho {name} >> {canary}\n")
            (hooks / name).chmod(0o755)
    git(ws, "config", "core.hooksPath", str(ws / "planted"))
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(15, base, head), inputs={"mode": "fix",
                                                               "commit_fixes": "true",
                                                               "paths": "w/[*].pt"})
    assert r.rc == 0 and "pushed" in r.stdout, r.stdout + r.stderr
    assert not canary.exists(), canary.read_text()
    changed = git(origin, "show", "--name-only", "--format=", "feature").splitlines()
    assert changed == ["w/*.pt"]


def test_commit_fixes_never_pushes_when_the_head_repository_is_gone(fix_repo, api):
    """A deleted fork has head.repo null: its branch name must not be pushed to the base."""
    origin = fix_repo["origin"]
    before = git(origin, "rev-parse", "feature")
    payload = pr_payload(16, fix_repo["base"], fix_repo["head"])
    payload["pull_request"]["head"]["repo"] = None
    r = run_action(fix_repo["ws"], fix_repo["tmp"] / "gone", event="pull_request",
                   api_url=api.url, payload=payload,
                   inputs={"mode": "fix", "commit_fixes": "true"})
    assert "not pushing to a fork" in r.stdout, r.stdout
    assert git(origin, "rev-parse", "feature") == before


def test_release_gate_fails_closed_on_an_asset_it_cannot_download(tmp_path, api):
    ws = init(tmp_path / "ws")
    commit(ws, "src", {"README.md": b"x"})
    rel = api.add_release(tag="v4", draft=False, assets={"m.pt": stripped()})
    api.fail("GET", r"/repos/acme/models/releases/assets/\d+", 404)
    r = run_action(ws, tmp_path / "run", event="release", api_url=api.url,
                   payload={"action": "published", "release": rel},
                   inputs={"release_assets": "true"})
    assert r.rc == 1 and r.outputs["status"] == "error", r.stdout + r.stderr
    (f,) = report_of(ws)["files"]
    assert f["path"] == "m.pt" and f["findings"][0]["rule"] == "unreadable"
    assert "could not fetch the release asset" in f["findings"][0]["message"]


def _commands(stdout: str) -> list[str]:
    """Lines the runner would take for workflow commands (v2 after TrimStart, v1 anywhere)."""
    return [line for line in stdout.splitlines()
            if line.lstrip().startswith("::") or "##[" in line]


def test_hostile_file_names_in_a_pull_request(tmp_path, api):
    """A fork chooses file names: none may inject workflow commands, outputs or Markdown."""
    names = ["evil\n::error title=pwned::x.pt", "::warning::lead.pt", "100%0A::notice::p.pt",
             "@octocat [a](javascript:alert(1)) ![i](x) <details>-->.pt", "##[error]v1.pt",
             "sp ace,comma:colon.pt"]
    origin = init(tmp_path / "origin")
    base = commit(origin, "base", {"README.md": b"x"})
    head = commit(origin, "add", {n: ckpt_bytes(training(8)) for n in names})
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", f"file://{origin}", str(ws))
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(17, base, head))
    assert r.rc == 1 and r.outputs["files_checked"] == str(len(names)), r.stdout + r.stderr
    cmds = _commands(r.stdout)
    assert cmds and all(c.startswith(("::error file=", "::warning ", "::notice ")) for c in cmds)
    for c in cmds:  # parsed the way the runner does: only our properties, our titles
        _name, _, props = c[2:].split("::", 1)[0].partition(" ")
        kv = dict(p.split("=", 1) for p in props.split(",") if p)
        assert set(kv) <= {"file", "title"} and kv.get("title", "ckpt").startswith("ckpt")
    files = sorted(c.split("file=", 1)[1].split(",title=")[0] for c in cmds if "file=" in c)
    unescaped = sorted(f.replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",")
                       .replace("%25", "%") for f in files)
    assert unescaped == sorted(names)
    assert set(r.outputs) == {"status", "files_checked", "violations", "bytes_total",
                              "bytes_removable", "bytes_saved", "report_json"}
    body = api.state.comments[17][0]["body"].rsplit("<sub>", 1)[0]  # the footer links the run
    for bad in ("](", "![", "@octocat", "<details>-->", "\n::"):
        assert bad not in body, bad


@pytest.mark.parametrize("tamper", ["bad_types", "no_head_sha", "huge"])
def test_two_phase_trusts_nothing_in_the_artifact(pr_repo, api, tmp_path, tamper):
    """Phase 1 of a fork's PR runs the fork's workflow: its artifact is attacker-made."""
    ws2 = tmp_path / "ws2"
    rd = ws2 / "ckpt-guard-report"
    rd.mkdir(parents=True)
    api.state.pulls[9] = {"number": 9, "head": {"sha": pr_repo["head"]}}
    wr = {"workflow_run": {"id": 1, "event": "pull_request", "head_sha": pr_repo["head"]}}
    report = {"files": [{"path": "m.pt", "status": "fail",
                         "findings": [{"rule": "x", "action": "fail", "message": "m"}]}]}
    ctx = {"pr_number": 9, "base_label": "`main` [x](javascript:1)", "changed": ["m.pt"],
           "base_sizes": {"m.pt": 1}}
    if tamper == "bad_types":
        report["files"].append("not a dict")
        ctx["base_sizes"] = {"m.pt": "lots"}
    elif tamper == "no_head_sha":
        wr["workflow_run"].pop("head_sha")
    (rd / "report.json").write_text(json.dumps(report))
    (rd / "context.json").write_text(json.dumps(ctx))
    if tamper == "huge":
        with open(rd / "report.json", "ab") as fh:
            fh.truncate(65 * 1024 * 1024)  # sparse: a bomb costs the attacker nothing
    r = run_action(ws2, tmp_path / "p2", event="workflow_run", payload=wr, api_url=api.url)
    assert "Traceback" not in r.stdout + r.stderr and "internal error" not in r.stdout
    assert not api.state.comments.get(9)
    if tamper == "no_head_sha":
        assert r.rc == 0 and "not commenting" in r.stdout
    else:
        assert r.rc == 2 and "no usable ckpt-guard report" in r.stdout


def test_files_written_as_root_go_back_to_the_workspace_owner(fix_repo, api):
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root, as the container runs")
    ws = fix_repo["ws"]
    subprocess.run(["chown", "-R", "1001:1001", str(ws)], check=True)
    # as the image's system gitconfig does: git may read the runner user's workspace
    safe = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": "*"}
    r = run_action(ws, fix_repo["tmp"] / "own", event="pull_request", api_url=api.url,
                   payload=pr_payload(18, fix_repo["base"], fix_repo["head"]),
                   inputs={"mode": "fix"}, extra_env=safe)
    assert r.outputs["status"] == "fixed", r.stdout + r.stderr
    for p in [ws / "models/train.pt", *(ws / "ckpt-guard-report").rglob("*"),
              ws / "ckpt-guard-report"]:
        assert p.stat().st_uid == 1001, p
