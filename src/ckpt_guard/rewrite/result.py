"""What fixing one path did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckpt_guard.policy.plan_types import Change


@dataclass(frozen=True)
class FixResult:
    """The outcome of :func:`ckpt_guard.rewrite.fix_file` for one path.

    ``changed``: the file was (or, with ``dry_run``, would be) rewritten. ``size_after`` is
    the output's size (projected in a dry run; equal to ``size_before`` when unchanged).
    ``removed`` maps role → bytes of storages no longer in the file; ``cast_bytes`` is how many
    FP32 bytes were cast (they now take half); ``max_abs_err``/``max_rel_err`` are the true
    largest errors the cast introduced, ``flushed_to_zero``/``subnormal`` count values that
    became zero or subnormal. ``kept_fp32`` lists tensors left FP32 and why.
    ``error`` set means nothing was written and the original is untouched.
    """

    path: str
    changed: bool = False
    size_before: int = 0
    size_after: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    cast_bytes: int = 0
    cast_to: str | None = None
    kept_fp32: tuple[tuple[str, str], ...] = ()
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0  # over every non-zero value: a value flushed to zero counts 1.0
    flushed_to_zero: int = 0  # non-zero values the cast made zero
    subnormal: int = 0  # values the cast left in the target's subnormal range
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    out_path: str | None = None
    dry_run: bool = False
    removed_files: tuple[str, ...] = ()  # directories: training files deleted
    # The written file as verification read it back (a Checkpoint, its path the file's
    # final one), so the post-fix re-check judges it without reading it again; None when
    # nothing was written or the writer does not hand it back.
    verified: Any = field(default=None, compare=False, repr=False)

    @property
    def saved(self) -> int:
        return max(0, self.size_before - self.size_after) if self.changed else 0

    @property
    def status(self) -> str:
        """``error`` | ``fixed`` | ``unchanged``."""
        if self.error:
            return "error"
        return "fixed" if self.changed else "unchanged"
