"""The real container, run the way the GitHub runner runs a Docker action.

Needs a Docker engine and the stand-in base image (scripts/docker-ci.sh prepares both: no
registry is reachable here, so `python:3.12-slim` is replaced by a debootstrap-built image).
Without an engine the test says so loudly and is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.action.commands_parse import parse_outputs
from tests.action.fakegithub import FakeGitHub
from tests.action.runner import REPO, TOKEN, pr_payload
from tests.action.scenarios import make_pr_repo

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CKPT_GUARD_CACHE", "/var/cache/ckpt-guard"))
BASE = os.environ.get("CKPT_GUARD_BASE_IMAGE", "ckpt-guard-ci-base:bookworm")
IMAGE = "ckpt-guard-action:test"
RUNNER_UID = 1001  # the runner user owns the workspace; the container runs as root


def loud_skip(reason: str) -> None:
    bar = "!" * 78
    msg = f"\n{bar}\nDOCKER CONTAINER TEST SKIPPED: {reason}\n{bar}\n"
    print(msg, file=sys.stderr)
    sys.stderr.flush()
    pytest.skip(f"DOCKER CONTAINER TEST SKIPPED: {reason}")


def docker(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=check)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None:
        loud_skip("no docker client; run `bash scripts/docker-ci.sh` (installs docker.io)")
    if docker("info", check=False, timeout=60).returncode != 0:
        why = (CACHE / "docker-unavailable")
        loud_skip(why.read_text().strip() if why.exists() else
                  "no Docker engine answers; run `bash scripts/docker-ci.sh` to start dockerd")
    if docker("image", "inspect", BASE, check=False, timeout=60).returncode != 0:
        loud_skip(f"base image {BASE} missing; run `bash scripts/docker-ci.sh` to build it")
    args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE]
    index = os.environ.get("PIP_INDEX_URL", "")
    if index.startswith(("http://", "https://")):
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    r = docker(*args, str(ROOT), check=False)
    assert r.returncode == 0, f"docker build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return IMAGE


def run_container(image: str, ws: Path, tmp: Path, payload: dict, *, event: str,
                  api_url: str, inputs: dict[str, str], mounts: list[Path]):
    (tmp / "workflow").mkdir(parents=True)
    (tmp / "workflow" / "event.json").write_text(json.dumps(payload))
    fc = tmp / "file_commands"
    fc.mkdir()
    (fc / "set_output").write_text("")
    (fc / "step_summary").write_text("")
    (tmp / "home").mkdir()
    env = {"HOME": "/github/home", "GITHUB_EVENT_NAME": event,
           "GITHUB_EVENT_PATH": "/github/workflow/event.json",
           "GITHUB_WORKSPACE": "/github/workspace", "GITHUB_REPOSITORY": REPO,
           "GITHUB_API_URL": api_url, "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_RUN_ID": "77", "GITHUB_ACTIONS": "true", "CI": "true",
           "GITHUB_OUTPUT": "/github/file_commands/set_output",
           "GITHUB_STEP_SUMMARY": "/github/file_commands/step_summary",
           "RUNNER_TEMP": "/github/runner_temp",
           **{f"INPUT_{k.upper()}": v for k, v in inputs.items()}}
    (tmp / "runner_temp").mkdir()
    cmd = ["run", "--rm", "--network", "host", "--workdir", "/github/workspace",
           "-v", f"{ws}:/github/workspace", "-v", f"{tmp / 'workflow'}:/github/workflow",
           "-v", f"{fc}:/github/file_commands", "-v", f"{tmp / 'home'}:/github/home",
           "-v", f"{tmp / 'runner_temp'}:/github/runner_temp"]
    for m in mounts:  # e.g. the file:// origin the shallow checkout fetches the base from
        cmd += ["-v", f"{m}:{m}:ro"]
    for k in env:
        cmd += ["-e", k]
    t = time.perf_counter()
    r = subprocess.run(["docker", *cmd, image], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env})
    r.wall = time.perf_counter() - t  # container start to finished report
    return r, parse_outputs((fc / "set_output").read_text()), (fc / "step_summary").read_text()


def test_container_pull_request(image, tmp_path):
    repo = make_pr_repo(tmp_path)
    ws = repo["ws"]
    # like the runner: the workspace belongs to another user than the container's root
    subprocess.run(["chown", "-R", f"{RUNNER_UID}:{RUNNER_UID}", str(ws)], check=True)
    with FakeGitHub(REPO) as api:
        r, outputs, summary = run_container(
            image, ws, tmp_path / "run", pr_payload(7, repo["base"], repo["head"]),
            event="pull_request", api_url=api.url,
            inputs={"github_token": TOKEN, "mode": "check", "lfs": "auto", "fail_on": "fail",
                    "comment": "true", "commit_fixes": "false", "release_assets": "false",
                    "paths": "", "policy": ""},
            mounts=[repo["origin"]])
        log = r.stdout + r.stderr
        assert r.returncode == 1, log
        # Generous bound (README records the measured figure, benchmarks/bench_container.py):
        # a prebuilt slim image answers a small pull request in well under 1.5 s.
        print(f"container start to report: {r.wall:.2f} s", file=sys.stderr)
        assert r.wall < 30, f"the container took {r.wall:.1f} s"
        assert "dubious ownership" not in log and "Traceback" not in log and TOKEN not in log
        assert outputs["status"] == "fail" and outputs["files_checked"] == "3", log
        assert outputs["violations"] == "1"
        assert "::error file=models/train.pt" in r.stdout
        report = json.loads((ws / outputs["report_json"]).read_text())
        # what the root container wrote belongs to the runner's user afterwards
        assert (ws / outputs["report_json"]).stat().st_uid == RUNNER_UID
        assert {f["path"] for f in report["files"]} == {
            "models/train.pt", "models/base.pt", "models/new/renamed.pt"}
        assert "### ckpt-guard: ❌ 1 of 3 weight files fail the policy" in summary
        (c,) = api.state.comments[7]
        assert "<code>models/train.pt</code>" in c["body"] and "| new |" in c["body"]
        assert "Change vs `main`" in c["body"]  # the base was fetched inside the container
        assert {q.headers.get("authorization") for q in api.requests} == {f"Bearer {TOKEN}"}


def test_image_adds_little_to_its_base(image):
    """Multi-stage build: only the package, its dependencies, git and git-lfs (with the
    libraries the base lacks) are added — no apt lists, pip caches, compilers or perl."""
    def size(ref: str) -> int:
        return int(docker("image", "inspect", ref, "--format", "{{.Size}}").stdout)

    added = size(image) - size(BASE)
    print(f"image adds {added / 1e6:.1f} MB to {BASE}", file=sys.stderr)
    assert added < 160_000_000, f"the image adds {added / 1e6:.1f} MB on top of {BASE}"
    r = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
               "git --version && git lfs version && ls /usr/lib/git-core "
               "&& ls /var/lib/apt/lists 2>/dev/null | wc -l && python3 -m ckpt_guard --version")
    out = r.stdout.splitlines()
    assert out[0].startswith("git version") and out[1].startswith("git-lfs/")
    assert "git-remote-https" in out  # fetching the base commit over HTTPS works
    assert out[-1].startswith("ckpt-guard ")
