"""A parsed policy document and where its parts were written (no YAML needed to use it:
the built-in policy is loaded from JSON so that a plain ``check`` never imports pyyaml)."""

from __future__ import annotations

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.policy.yamlsrc import Where

Path = tuple  # JSON path: keys and list indexes (a bare tuple is tuple[Any, ...])


def __getattr__(name: str) -> Any:
    # ``Where`` (positions in a YAML file) is made by policy.yamlsrc, where it is defined: the
    # built-in policy and a cached one have none, and a check need not create its class.
    if name == "Where":
        from ckpt_guard.policy.yamlsrc import Where

        return Where
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Source:
    """A parsed policy document and the positions of its parts. (A plain class: a dataclass
    costs every cold ``check`` ~0.3 ms to create.)"""

    __slots__ = ("data", "where")

    def __init__(self, data: Any, where: dict[Path, Where] | None = None) -> None:
        self.data = data
        self.where: dict[Path, Where] = {} if where is None else where

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
