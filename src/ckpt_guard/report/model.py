"""Results of a run: findings per file, file reports, the whole report.

The JSON produced by :meth:`Report.to_dict` is a contract other tools (and the GitHub Action)
parse: keep the names. Keys may be added, never renamed or removed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ckpt_guard import __version__
from ckpt_guard.policy.rules.base import Finding, finding_from_dict
from ckpt_guard.policy.rules.registry import RULE_IDS
from ckpt_guard.vocab import Format, Status

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

# Rule ids (the registry's) and file statuses, as the JSON contract spells them.
RULES: tuple[str, ...] = RULE_IDS
STATUSES: tuple[str, ...] = Status.values()


@dataclass
class FileReport:
    """Everything known about one checked path."""

    path: str
    format: str = Format.UNKNOWN
    framework: str = "generic"
    size_bytes: int = 0
    tensor_bytes_total: int = 0
    by_role: dict[str, int] = field(default_factory=dict)
    by_dtype: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    status: str = Status.PASS
    bytes_removable: int = 0
    size_after: int | None = None  # set by fix (projected in a dry run)
    tensor_count: int = 0
    notes: list[str] = field(default_factory=list)
    # Inspect-level detail: top-level keys table, globals with safety class, etc.
    details: dict[str, Any] = field(default_factory=dict)
    # A sharded set (format sharded-*): its shard files, each {path, format, size_bytes,
    # tensor_bytes, tensor_count} or {path, error}.
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rewritten(self) -> bool:
        """``fix`` rewrote this path (in a dry run: would), whether or not findings remain —
        a partial fix is still a rewrite (issue 9, defect 5). ``size_after`` says it."""
        return self.size_after is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "format": self.format,
            "framework": self.framework,
            "size_bytes": self.size_bytes,
            "tensor_bytes": {"total": self.tensor_bytes_total, "by_role": dict(self.by_role),
                             "by_dtype": dict(self.by_dtype)},
            "tensor_count": self.tensor_count,
            "findings": [f.to_dict() for f in self.findings],
            "status": str(self.status),
            "bytes_removable": self.bytes_removable,
            # Always present (the JSON contract): null from check and for a file fix left
            # as it was; the size after fix, projected with fix --dry-run.
            "size_after": self.size_after,
        }
        if self.notes:
            d["notes"] = list(self.notes)
        if self.details:
            d["details"] = self.details
        if self.shards:
            d["shards"] = [dict(r) for r in self.shards]
        return d


@dataclass
class Report:
    files: list[FileReport] = field(default_factory=list)
    policy_source: str = "built-in"

    @property
    def failed(self) -> int:
        return sum(1 for f in self.files if f.status in (Status.FAIL, Status.ERROR))

    @property
    def warned(self) -> int:
        return sum(1 for f in self.files if f.status == Status.WARN)

    def summary(self) -> dict[str, int]:
        s = {
            "files": len(self.files),
            "failed": self.failed,
            "warned": self.warned,
            "bytes_total": sum(f.size_bytes for f in self.files),
            "bytes_removable": sum(f.bytes_removable for f in self.files),
        }
        fixed = [f for f in self.files if f.size_after is not None]
        if fixed:
            s["fixed"] = sum(1 for f in fixed if f.rewritten)  # partial fixes count
            s["bytes_saved"] = sum(f.size_bytes - f.size_after for f in fixed)
        return s

    def to_dict(self) -> dict[str, Any]:
        return {"tool": "ckpt-guard", "version": __version__, "policy": self.policy_source,
                "files": [f.to_dict() for f in self.files], "summary": self.summary()}


__all__ = ["Finding", "FileReport", "Report", "RULES", "STATUSES", "asdict", "finding_from_dict"]
