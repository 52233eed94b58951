"""A cold ``check`` imports only what it uses (issue 9: cold check of a small file ≤ 80 ms).

Structural, not timed: ``check`` of one small clean file runs in a fresh interpreter and the
modules it imported are compared with lists of what it has no use for. It starts without the
site module (``-S``), so no site-packages ``.pth`` imports anything (certifi, typing…) first
and hides what the check imports; modules the bare interpreter has at start are not held
against it.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI as the console script does; reports the modules present at start and at exit
# (stdout is a pipe, as in CI: no TTY).
PROBE = """\
import sys
start = set(sys.modules)
from ckpt_guard.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    sys.stderr.write("\\nMODULES " + " ".join(sorted(set(sys.modules) - start)) + "\\n")
raise SystemExit(rc)
"""

# Never needed to check a clean small torch zip with the built-in policy or a cached one.
THIRD_PARTY = ("numpy", "torch", "jsonschema", "yaml", "rich", "requests", "urllib3", "isal")
STDLIB = ("typing", "hashlib", "subprocess", "shutil", "tempfile", "zipfile", "difflib",
          "importlib.resources", "threading", "decimal", "bz2", "lzma", "email", "http",
          "socket", "ssl")
OURS = (
    "ckpt_guard.rewrite",  # fix only
    "ckpt_guard.action",  # the GitHub Action
    "ckpt_guard.report.sarif", "ckpt_guard.report.markdown", "ckpt_guard.report.text",
    "ckpt_guard.report.json_report",
    "ckpt_guard.read.torchscript_code", "ckpt_guard.analyze.torchscript",  # TorchScript
    "ckpt_guard.read.dcp", "ckpt_guard.analyze.dcp",  # torch.distributed.checkpoint
    "ckpt_guard.read.remote", "ckpt_guard.read.remote_sharded",  # remote URLs
    "ckpt_guard.read.torch_legacy", "ckpt_guard.read.torch_tar",  # other formats
    "ckpt_guard.read.directories", "ckpt_guard.analyze.directory",
    "ckpt_guard.policy.planning", "ckpt_guard.policy.plan_types",  # plans: none to make
    "ckpt_guard.policy.strips", "ckpt_guard.policy.conventions",
    "ckpt_guard.policy.problem", "ckpt_guard.policy.yamlsrc",  # policy problems, YAML
    "ckpt_guard.policy.validate",
)


def _imported(cwd: Path, env: dict[str, str], *args: str) -> set[str]:
    # -S: no site module, so no site-packages .pth runs first and hides what the check itself
    # imports (this VM's imports typing; CI's clean machines have none). The paths the site
    # module would add come through PYTHONPATH instead, this checkout's src first.
    paths = [str(ROOT / "src"), *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    env = {**env, "PYTHONPATH": os.pathsep.join(
        [*paths, *filter(None, [env.get("PYTHONPATH", "")])])}
    p = subprocess.run([sys.executable, "-S", "-c", PROBE, "check", *args], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    line = p.stderr.rsplit("\nMODULES ", 1)[1]
    return set(line.split())


def _unwanted(modules: set[str]) -> list[str]:
    def under(name: str, roots: tuple[str, ...]) -> bool:
        return any(name == r or name.startswith(r + ".") for r in roots)

    return sorted(m for m in modules if under(m, THIRD_PARTY + STDLIB + OURS))


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("CKPT_GUARD_NO_CACHE", None)
    return env


def test_cold_check_imports_only_what_it_uses(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(4, 4)}, tmp_path / "small.pt")
    modules = _imported(tmp_path, _env(tmp_path), "small.pt")
    assert "ckpt_guard.read.torch_zip" in modules  # the probe saw the check itself
    assert _unwanted(modules) == []


def test_cold_check_with_a_cached_policy_file(tmp_path: Path) -> None:
    """A policy file validated once is built from the cache: no pyyaml, no jsonschema."""
    torch.save({"w": torch.zeros(4, 4)}, tmp_path / "small.pt")
    (tmp_path / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  optimizer-state: fix\n  fp32-payload:\n    action: warn\n"
        "    max-bytes: 5MB\n")
    env = _env(tmp_path)
    first = _imported(tmp_path, env, "small.pt")
    assert {"yaml", "jsonschema"} <= first  # validated the first time
    assert _unwanted(_imported(tmp_path, env, "small.pt")) == []
