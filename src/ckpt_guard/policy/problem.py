"""One problem of a policy file (a module of its own: creating a dataclass with ``order=True``
compiles ten methods, ~1 ms that a ``check`` whose policy is valid has no use for)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a policy file; ``line``/``column`` are 1-based (0 = unknown)."""

    line: int
    column: int
    message: str

    def format(self, filename: str) -> str:
        if self.line <= 0:
            return f"{filename}: {self.message}"
        return f"{filename}:{self.line}:{self.column}: {self.message}"
