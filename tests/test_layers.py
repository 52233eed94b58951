"""Layers import one way: read → analyze → policy → rewrite/report → app → surfaces. A module
never imports (even lazily) from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ckpt_guard"
# Each layer and what it must not import.
ABOVE = {
    "vocab": ("read", "analyze", "policy", "rewrite", "report", "app", "cli", "action"),
    "units": ("read", "analyze", "policy", "rewrite", "report", "app", "cli", "action"),
    "read": ("analyze", "policy", "rewrite", "report", "app", "cli", "action"),
    "analyze": ("policy", "rewrite", "report", "app", "cli", "action"),
    "policy": ("rewrite", "report", "app", "cli", "action"),
    "rewrite": ("report", "app", "cli", "action"),
    "report": ("rewrite", "app", "cli", "action"),
    "app": ("cli", "action"),
}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m.split(".")[1] for m in out if m.startswith("ckpt_guard.")}


@pytest.mark.parametrize("path", sorted(p for p in SRC.rglob("*.py") if _layer(p) in ABOVE),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_from_a_layer_above(path: Path) -> None:
    wrong = _imports(path) & set(ABOVE[_layer(path)])
    assert not wrong, f"{path.relative_to(SRC)} imports {sorted(wrong)}"
