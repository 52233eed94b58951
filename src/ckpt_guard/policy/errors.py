"""Policy errors: every problem is one line ``file:line:column: message``."""

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


class PolicyError(Exception):
    """The policy file cannot be used. ``str(err)`` is one line per problem, each naming the
    file, line and column; the CLI prints it and exits 2.

    ``PolicyError(filename, problems)``; ``PolicyError("one-line message")`` also works for
    callers that have no position to give (``problems`` is then empty).
    """

    def __init__(self, filename: str, problems: list[Problem] | None = None) -> None:
        self.filename = filename
        self.problems = sorted(set(problems or ()))
        if problems is None:
            super().__init__(filename)
        else:
            super().__init__("\n".join(p.format(filename) for p in self.problems))
