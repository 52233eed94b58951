"""action.yml, settings.py and the docs agree; linters accept action.yml, workflows, Dockerfile."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ckpt_guard.action.settings import INPUTS, OUTPUTS

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
DOC = (ROOT / "README.md").read_text()
WORKFLOWS = sorted((ROOT / "docs" / "workflows").glob("*.yml"))
OWN_WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_inputs_match_settings():
    assert set(ACTION["inputs"]) == set(INPUTS)
    for name, spec in ACTION["inputs"].items():
        assert "-" not in name, "hyphenated inputs are unreadable from shells"
        default = str(spec.get("default", ""))
        if "${{" not in default:
            assert default == INPUTS[name], name


def test_outputs_match_what_main_writes():
    assert tuple(ACTION["outputs"]) == OUTPUTS
    src = Path(importlib.import_module("ckpt_guard.action.main").__file__).read_text()
    written = set(re.findall(r'set_output\("(\w+)"', src))
    assert written == set(OUTPUTS)


def test_runs_the_dockerfile():
    assert ACTION["runs"] == {"using": "docker", "image": "Dockerfile"}
    docker = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python3", "-m", "ckpt_guard", "action"]' in docker
    assert not re.search(r"^\s*USER\b", docker, re.M)
    assert "ARG BASE_IMAGE=python:3.12-slim" in docker
    assert "torch" not in re.sub(r"#.*", "", docker)


@pytest.mark.parametrize("name", sorted(set(INPUTS) | set(OUTPUTS)))
def test_docs_mention_every_input_and_output(name):
    assert f"`{name}`" in DOC, f"README.md does not document {name}"


def test_docs_show_the_current_rendered_comment_and_workflows():
    from tests.action.render_docs import render

    assert render(DOC) == DOC, "README.md is stale: python -m tests.action.render_docs"
    assert (Path(__file__).parent / "golden" / "pr_mixed.md").read_text() in DOC
    for wf in WORKFLOWS:
        assert wf.read_text() in DOC, f"README.md does not show {wf.name}"


def test_docs_examples_use_only_real_inputs():
    used = set()
    for text in [DOC] + [p.read_text() for p in WORKFLOWS]:
        for block in re.findall(r"uses: org/ckpt-guard@v1\n((?:\s+.*\n)*)", text):
            m = re.search(r"with:\n((?:\s{8,}.*\n)*)", block)
            if m:
                used |= set(re.findall(r"^\s+(\w+):", m.group(1), re.M))
    assert used and used <= set(INPUTS), used - set(INPUTS)


def _tool(name: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).exists():
        pytest.skip(f"{name} is not installed (pip install the test extras)")
    return exe


def test_action_yml_schema():
    exe = _tool("check-jsonschema")
    r = subprocess.run([exe, "--builtin-schema", "vendor.github-actions",
                        str(ROOT / "action.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_workflows_schema_and_actionlint():
    """The documented examples and the project's own CI/self-test/release workflows."""
    assert len(WORKFLOWS) >= 5
    assert {p.name for p in OWN_WORKFLOWS} >= {"ci.yml", "self-test.yml", "release.yml"}
    files = [*map(str, WORKFLOWS), *map(str, OWN_WORKFLOWS)]
    exe = _tool("check-jsonschema")
    r = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", *files],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    lint = _tool("actionlint")
    r = subprocess.run([lint, "-no-color", *files], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_dockerfile():
    exe = _tool("hadolint")
    r = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
