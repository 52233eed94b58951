"""Output on consoles that cannot encode `✗`/`→`/box rules (issue 9, defect 10): a Windows
console (cp1252), PYTHONIOENCODING=ascii, latin-1, a C locale. Every command and format
falls back to ASCII, never crashes, exits as under UTF-8, and JSON/SARIF carry the same data.
Real subprocesses, the real console entry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_guard.report.encoding import to_ascii

ROOT = Path(__file__).resolve().parents[2]
NAME = "modèle-✗.pt"  # a path the report prints as is: è fits cp1252, ✗ fits nothing
POLICY = ("version: 1\nrules:\n  optimizer-state: fix\n  training-state: fix\n"
          "  fp32-payload: {action: fix, max-bytes: 0}\n")

COMMANDS = {
    **{f"check-{f}": ["check", "--format", f, NAME] for f in ("text", "json", "markdown",
                                                               "sarif")},
    **{f"inspect-{f}": ["inspect", "--format", f, NAME] for f in ("text", "json")},
    **{f"fix-dry-{f}": ["fix", "--dry-run", "--format", f, NAME]
       for f in ("text", "json", "markdown", "sarif")},
    "fix-text": ["fix", NAME],
    "fix-json": ["fix", "--format", "json", NAME],
    "init": ["init", "new-policy.yml"],
    "policy-error": ["check", "--policy", "bad.yml", NAME],
}


def _run(args: list[str], cwd: Path, encoding: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONIOENCODING", "COLUMNS", "PYTHONUTF8")}
    if encoding is None:  # a C locale without UTF-8 coercion or UTF-8 mode
        env.update(LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    else:
        env["PYTHONIOENCODING"] = encoding
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd, env=env,
                          capture_output=True, timeout=120, check=False)


def _workdir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(ROOT / "examples" / "training" / "yolo-last.pt", d / NAME)
    (d / ".ckpt-guard.yml").write_text(POLICY, encoding="utf-8")
    (d / "bad.yml").write_text("version: 1\nrules:\n  optimizer-stat: fix\n", encoding="utf-8")
    return d


# Exit codes as under UTF-8: the policy's `fix` rules fail check; fix and init succeed.
EXIT = {"check": 1, "inspect": 0, "fix": 0, "init": 0, "policy": 2}
STRUCTURED = ("check-json", "check-sarif", "inspect-json", "fix-dry-json", "fix-dry-sarif")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, object]:
    """The JSON/SARIF documents under UTF-8, to compare data with."""
    base = tmp_path_factory.mktemp("utf8")
    out = {}
    for key in STRUCTURED:
        p = _run(COMMANDS[key], _workdir(base, key), "utf-8")
        out[key] = json.loads(p.stdout.decode("utf-8"))
    return out


SUBSET = ("check-text", "inspect-text", "fix-dry-markdown", "policy-error")


@pytest.mark.parametrize("encoding, keys", [
    ("cp1252", tuple(COMMANDS)), ("ascii", tuple(COMMANDS)), ("latin-1", SUBSET),
    (None, SUBSET)], ids=["cp1252", "ascii", "latin-1", "LC_ALL=C"])
def test_every_command_and_format_falls_back_to_ascii(tmp_path, baseline, encoding, keys):
    console = encoding or "utf-8"  # Python's C locale handling still picks UTF-8 here
    for key in keys:
        p = _run(COMMANDS[key], _workdir(tmp_path, key), encoding)
        assert b"Traceback" not in p.stderr + p.stdout, (key, p.stderr.decode("utf-8", "replace"))
        assert p.returncode == EXIT[key.split("-")[0]], (key, p.returncode, p.stderr)
        out = p.stdout.decode(console)  # text in the console's own encoding
        if key in baseline:
            assert json.loads(out) == baseline[key], key  # the same data, escaped
        if key == "check-text":
            assert "optimizer-state" in out and "FAIL" in out
        if key == "fix-text" and encoding == "ascii":
            assert "Fixing mod\\xe8le-x.pt" in out and "set to None" in out, out
        if key == "policy-error":
            assert "optimizer-stat" in p.stderr.decode(console)


def test_to_ascii_stand_ins():
    assert to_ascii("✗ a → b … ─┼│ ❌ ⚠️ é ✓") == "x a -> b ... -+| [x] [!] \\xe9 v"
