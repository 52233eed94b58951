"""Run the action's entrypoint the way the runner does: a real process, GITHUB_* variables,
an event payload file, GITHUB_OUTPUT/GITHUB_STEP_SUMMARY files, INPUT_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.action.commands_parse import parse_outputs

TOKEN = "ghs_e2eSECRET0123456789"
REPO = "acme/models"


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str

    def annotations(self, kind: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(f"::{kind} ")]


def pr_payload(number: int, base_sha: str, head_sha: str, *, head_ref: str = "feature",
               head_repo: str = REPO) -> dict[str, Any]:
    return {"action": "synchronize", "number": number,
            "pull_request": {"number": number,
                             "base": {"sha": base_sha, "ref": "main",
                                      "repo": {"full_name": REPO}},
                             "head": {"sha": head_sha, "ref": head_ref,
                                      "repo": {"full_name": head_repo}}},
            "repository": {"full_name": REPO}}


def run_action(workspace: Path, tmp: Path, *, event: str, payload: dict[str, Any],
               api_url: str, inputs: dict[str, str] | None = None,
               argv: list[str] | None = None, extra_env: dict[str, str] | None = None) -> Run:
    tmp.mkdir(parents=True, exist_ok=True)
    event_path = tmp / "event.json"
    event_path.write_text(json.dumps(payload))
    output, summary = tmp / "output", tmp / "summary"
    output.write_text("")
    summary.write_text("")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    env.update({
        "GITHUB_ACTIONS": "true", "CI": "true",
        "GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_WORKSPACE": str(workspace), "GITHUB_REPOSITORY": REPO,
        "GITHUB_API_URL": api_url, "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "4242", "GITHUB_SHA": payload.get("after", "") or "",
        "GITHUB_REF": payload.get("ref", "refs/heads/main"),
        "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
        "RUNNER_TEMP": str(tmp),
        "INPUT_GITHUB_TOKEN": TOKEN,
        "GIT_CONFIG_NOSYSTEM": "1",
    })
    for k, v in (inputs or {}).items():
        env[f"INPUT_{k.upper()}"] = v
    env.update(extra_env or {})
    cmd = argv or [sys.executable, "-m", "ckpt_guard.action"]
    p = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    return Run(p.returncode, p.stdout, p.stderr, parse_outputs(output.read_text()),
               summary.read_text())
