"""A parsed policy document and where its parts were written (no YAML needed to use it:
the built-in policy is loaded from JSON so that a plain ``check`` never imports pyyaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Path = tuple[Any, ...]


@dataclass(frozen=True)
class Where:
    """1-based position of a key (when the value sits under one) and of the value."""

    key: tuple[int, int] | None
    value: tuple[int, int]


@dataclass
class Source:
    """A parsed policy document and the positions of its parts."""

    data: Any
    where: dict[Path, Where] = field(default_factory=dict)

    def at_key(self, path: Path) -> tuple[int, int]:
        """Position of the key naming ``path`` (falls back to the value, then the parent)."""
        w = self._lookup(path)
        if w is None:
            return (1, 1)
        return w.key or w.value

    def at_value(self, path: Path) -> tuple[int, int]:
        """Position of the value at ``path`` (falls back to the nearest known parent)."""
        w = self._lookup(path)
        return w.value if w is not None else (1, 1)

    def _lookup(self, path: Path) -> Where | None:
        path = tuple(path)
        while path not in self.where and path:
            path = path[:-1]
        return self.where.get(path)
