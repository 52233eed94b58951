"""The README's first command and its shown output stay true (README examples are run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    start = README.index(marker)
    m = re.compile(r"```text\n(.*?)```", re.S).search(README, start)
    assert m, marker
    return m.group(1)


def test_readme_starts_with_the_two_setup_commands() -> None:
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert first[0].startswith("pip install . && ckpt-guard check examples/")
    assert first[1].startswith("bash scripts/test.sh")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_readme_shows_what_check_examples_prints() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", "check", "examples/"], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1  # the README says so: the training examples fail
    assert _block_after("The first command exits") == p.stdout
