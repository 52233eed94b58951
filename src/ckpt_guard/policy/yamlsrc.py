"""Read a policy file's YAML safely, remembering where every key and value was written.

pyyaml's safe loader is used with two changes that matter for a policy file:

* only ``true``/``false`` are booleans (YAML 1.2). YAML 1.1 would read ``action: off`` as
  ``False`` and ``yes``/``no``/``on`` likewise — a trap for a file whose actions include
  ``off``;
* duplicate keys are errors (pyyaml silently keeps the last one).

The document is composed into nodes first so that each JSON path (``("rules",
"fp32-payload", "max-bytes")``) maps to the marks of its key and value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from ckpt_guard.policy.problem import Problem
from ckpt_guard.policy.source import Path, Source

__all__ = ["Path", "Source", "Where", "parse"]


@dataclass(frozen=True)
class Where:
    """1-based position of a key (when the value sits under one) and of the value."""

    key: tuple[int, int] | None
    value: tuple[int, int]


_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 64  # a policy file is shallow; this bounds walks over alias-made cycles
_MAX_NODES = 100_000  # and this bounds walks over alias-made "billion laughs" DAGs


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans."""


# Drop the YAML 1.1 bool resolver (yes/no/on/off/y/n) and add the YAML 1.2 one.
_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def parse(text: str) -> tuple[Source | None, list[Problem]]:
    """Parse ``text``. Returns ``(source, [])``, or ``(None, problems)`` for YAML syntax
    errors and duplicate keys. An empty document gives ``Source(data=None)``."""
    loader = _PolicyLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            return None, [_syntax_problem(e)]
        except yaml.YAMLError as e:
            return None, [Problem(0, 0, f"YAML error: {e}")]
        if node is None:
            return Source(data=None), []
        problems: list[Problem] = []
        _check_duplicates(loader, node, problems, 0, [_MAX_NODES])
        if problems:
            return None, problems
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as e:
            return None, [_syntax_problem(e)]
        src = Source(data=data)
        _record(loader, node, (), None, src.where, 0, [_MAX_NODES])
        return src, []
    finally:
        loader.dispose()


def _syntax_problem(e: yaml.MarkedYAMLError) -> Problem:
    mark = e.problem_mark or e.context_mark
    what = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
    kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else \
        "YAML syntax error"
    if "while scanning an alias" in what:  # `include: *.pt` — a glob read as an alias
        what += " (quote globs that start with '*': '*.pt')"
    elif "'\\t'" in what or "\t" in what:  # an editor indented with a tab
        what = "found a tab (YAML indents with spaces, not tabs)"
    if mark is None:
        return Problem(0, 0, f"{kind}: {what}")
    line, col = _pos(mark)
    return Problem(line, col, f"{kind}: {what}")


def _key_value(loader: yaml.SafeLoader, key_node: yaml.Node) -> Any:
    if isinstance(key_node, yaml.ScalarNode):
        return loader.construct_object(key_node)
    return None  # complex keys: not part of a valid policy; the schema will say so


def _check_duplicates(loader: yaml.SafeLoader, node: yaml.Node, problems: list[Problem],
                      depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if depth > _MAX_DEPTH or budget[0] < 0:
        return
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                key = _key_value(loader, key_node)
                if key is not None:
                    try:
                        first = seen.get(key)
                    except TypeError:  # unhashable key: the schema reports it
                        first = None
                    if first is not None:
                        line, col = _pos(key_node.start_mark)
                        problems.append(Problem(
                            line, col, f"duplicate key {key!r} (first defined at line "
                                       f"{first.start_mark.line + 1})"))
                    else:
                        seen[key] = key_node
            _check_duplicates(loader, value_node, problems, depth + 1, budget)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(loader, item, problems, depth + 1, budget)


def _record(loader: yaml.SafeLoader, node: yaml.Node, path: Path,
            key_node: yaml.Node | None, where: dict[Path, Where], depth: int,
            budget: list[int]) -> None:
    budget[0] -= 1
    if depth > _MAX_DEPTH or budget[0] < 0:
        return
    where[path] = Where(_pos(key_node.start_mark) if key_node is not None else None,
                        _pos(node.start_mark))
    if isinstance(node, yaml.MappingNode):
        # After construction, merge keys (<<) have been flattened into node.value, merged
        # pairs first: the last pair for a key is the one whose value was kept.
        pairs: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for k_node, v_node in node.value:
            key = _key_value(loader, k_node) if k_node.tag != _MERGE_TAG else None
            if isinstance(key, (str, int)):
                pairs[key] = (k_node, v_node)
        for key, (k_node, v_node) in pairs.items():
            _record(loader, v_node, (*path, key), k_node, where, depth + 1, budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record(loader, item, (*path, i), None, where, depth + 1, budget)
