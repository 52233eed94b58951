"""The release: scripts/release_action.py makes the released action.yml; the workflows that
publish it, run CI and self-test the action have the shape the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "release_action.py"
WF = ROOT / ".github" / "workflows"
sys.path.insert(0, str(SCRIPT.parent))
import release_action  # noqa: E402

VERSION = release_action.package_version()


def _copy_project(tmp: Path) -> Path:
    (tmp / "src" / "ckpt_guard").mkdir(parents=True)
    for rel in ("action.yml", "pyproject.toml", "src/ckpt_guard/__init__.py"):
        shutil.copy(ROOT / rel, tmp / rel)
    return tmp / "action.yml"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_release_commit_points_the_action_at_the_pushed_image(tmp_path):
    action = _copy_project(tmp_path)
    before = action.read_text()
    r = _run("--version", f"v{VERSION}", "--image", "ghcr.io/My-Org/ckpt-guard",
             "--action", str(action))
    assert r.returncode == 0, r.stderr
    after = action.read_text()
    assert yaml.safe_load(after)["runs"] == {
        "using": "docker", "image": f"docker://ghcr.io/my-org/ckpt-guard:{VERSION}"}
    # nothing else changes: inputs, outputs, descriptions stay byte-identical
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert diff == [("  image: Dockerfile", f"  image: docker://ghcr.io/my-org/ckpt-guard:{VERSION}")]
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if Path(exe).exists():
        v = subprocess.run([exe, "--builtin-schema", "vendor.github-actions", str(action)],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
    # a release commit is not released again
    again = _run("--version", VERSION, "--image", "ghcr.io/org/ckpt-guard", "--action", str(action))
    assert again.returncode == 2 and "already a release commit" in again.stderr


@pytest.mark.parametrize(("version", "image", "why"), [
    ("9.9.9", "ghcr.io/org/ckpt-guard", "the package is"),
    (VERSION, "not a registry", "is not a registry path"),
])
def test_release_refuses_what_it_cannot_publish(tmp_path, version, image, why):
    action = _copy_project(tmp_path)
    before = action.read_text()
    r = _run("--version", version, "--image", image, "--action", str(action))
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr
    assert action.read_text() == before


def test_main_keeps_building_the_dockerfile():
    assert yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["image"] == "Dockerfile"


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_release_workflow_publishes_image_package_and_action():
    wf = yaml.safe_load((WF / "release.yml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads `on` as true
    assert on == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    jobs = wf["jobs"]
    build = next(s for s in _steps(jobs["image"]) if s.get("uses", "").startswith(
        "docker/build-push-action@"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] is True
    tags = build["with"]["tags"].strip().splitlines()
    assert [t.rsplit(":", 1)[1] for t in tags] == [
        "${{ needs.meta.outputs.version }}", "${{ needs.meta.outputs.major }}"]
    assert jobs["image"]["permissions"]["packages"] == "write"
    assert set(jobs["image"]["needs"]) == {"meta", "tests"}
    pypi = jobs["pypi"]
    assert pypi["permissions"] == {"id-token": "write"}  # trusted publishing, no token
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in _steps(pypi))
    action_job = jobs["action"]
    assert "image" in action_job["needs"]  # never point the action at an image not pushed yet
    script = "\n".join(s.get("run", "") for s in _steps(action_job))
    assert "scripts/release_action.py" in script
    assert re.search(r'git tag -f "v\$MAJOR"', script)  # the major tag moves
    meta = "\n".join(s.get("run", "") for s in _steps(jobs["meta"]))
    assert "${OWNER,,}" in meta  # registry paths are lower case


def test_ci_runs_lint_all_pythons_and_the_container():
    wf = yaml.safe_load((WF / "ci.yml").read_text())
    jobs = wf["jobs"]
    assert jobs["tests"]["strategy"]["matrix"]["python"] == ["3.10", "3.11", "3.12", "3.13"]
    assert any("ruff check" in s.get("run", "") for s in _steps(jobs["lint"]))
    assert any("-m docker" in s.get("run", "") for s in _steps(jobs["container"]))


def test_self_test_uses_the_checkout_itself():
    wf = yaml.safe_load((WF / "self-test.yml").read_text())
    (job,) = wf["jobs"].values()
    uses = [s for s in _steps(job) if s.get("uses") == "./"]
    assert len(uses) == 1 and uses[0]["with"]["paths"] == "examples/**"
