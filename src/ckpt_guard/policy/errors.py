"""Policy errors: every problem is one line ``file:line:column: message``."""

from __future__ import annotations

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.policy.problem import Problem


def __getattr__(name: str) -> Any:
    # ``Problem`` lives in policy.problem, imported when first asked for (see its docstring).
    if name == "Problem":
        from ckpt_guard.policy.problem import Problem

        return Problem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
