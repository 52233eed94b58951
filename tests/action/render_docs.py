"""Refresh the generated parts of README.md (the GitHub Action section): the example workflows (docs/workflows/*.yml)
and the rendered example comment (tests/action/golden/pr_mixed.md).

    python -m tests.action.render_docs          # rewrite README.md
    python -m tests.action.render_docs --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "README.md"
_BLOCK = re.compile(r"<!-- BEGIN (?P<src>\S+) -->\n.*?<!-- END (?P=src) -->", re.S)


def render(text: str) -> str:
    def fill(m: re.Match[str]) -> str:
        src = m.group("src")
        body = (ROOT / src).read_text(encoding="utf-8")
        if src.endswith((".yml", ".yaml")):
            body = f"```yaml\n{body}```\n"
        return f"<!-- BEGIN {src} -->\n{body}<!-- END {src} -->"

    return _BLOCK.sub(fill, text)


def main(argv: list[str]) -> int:
    current = DOC.read_text(encoding="utf-8")
    fresh = render(current)
    if "--check" in argv:
        return 0 if fresh == current else 1
    DOC.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
