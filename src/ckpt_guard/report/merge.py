"""Reports back from their JSON form, and several reports merged into one.

A sharded run (the Action's ``shard: I/N`` across a job matrix) writes one ``report.json``
per runner; ``ckpt-guard merge`` and the Action's ``merge`` input read them back and make one
report — one summary, one comment — as if a single runner had checked every file. Reports
are data from other jobs (for forks, untrusted): they are parsed strictly into the contract's
types and rendered by our own escaping renderers, never echoed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ckpt_guard.report.model import FileReport, Report, finding_from_dict
from ckpt_guard.vocab import Format, Status

MAX_REPORT_BYTES = 64 * 1024 * 1024  # report.json of 100k files is far below; a bomb is not
_STATUS_RANK = {Status.ERROR: 0, Status.FAIL: 1, Status.WARN: 2, Status.FIXED: 3,
                Status.PASS: 4}


class ReportError(ValueError):
    """A report file that cannot be read or merged (one line, naming the file)."""


def report_from_dict(d: dict[str, Any]) -> Report:
    """Rebuild a :class:`Report` from its JSON form (the contract's names)."""
    files = []
    for f in d.get("files", []):
        tb = f.get("tensor_bytes") or {}
        files.append(FileReport(
            path=str(f["path"]), format=str(f.get("format", Format.UNKNOWN)),
            framework=str(f.get("framework", "generic")), size_bytes=int(f.get("size_bytes", 0)),
            tensor_bytes_total=int(tb.get("total", 0)),
            by_role={str(k): int(v) for k, v in (tb.get("by_role") or {}).items()},
            by_dtype={str(k): int(v) for k, v in (tb.get("by_dtype") or {}).items()},
            findings=[finding_from_dict(x) for x in f.get("findings", [])],
            status=str(f.get("status", Status.PASS)), bytes_removable=int(f.get("bytes_removable", 0)),
            size_after=int(f["size_after"]) if f.get("size_after") is not None else None,
            tensor_count=int(f.get("tensor_count", 0)),
            notes=[str(n) for n in f.get("notes", [])],
            details=f["details"] if isinstance(f.get("details"), dict) else {},
            shards=[r for r in f.get("shards", []) if isinstance(r, dict)]))
    return Report(files=files, policy_source=str(d.get("policy", "built-in")))


def load_report(path: str | Path) -> Report:
    """A ``report.json`` (``--format json`` output). Raises :class:`ReportError`."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise ReportError(f"{p}: larger than {MAX_REPORT_BYTES} bytes")
        data = json.loads(p.read_text("utf-8"))
        if not isinstance(data, dict) or data.get("tool") != "ckpt-guard":
            raise ReportError(f"{p}: not a ckpt-guard JSON report")
        return report_from_dict(data)
    except ReportError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ReportError(f"{p}: cannot read the report ({type(e).__name__}: {e})") from e


def merge_reports(reports: Sequence[Report]) -> Report:
    """One report of every file the ``reports`` hold. They must come from the same policy (a
    shard checked under another policy is not part of the same run); a path reported twice
    keeps its worse verdict."""
    sources = sorted({r.policy_source for r in reports})
    if len(sources) > 1:
        raise ReportError("the reports were made under different policies: "
                          + ", ".join(sources))
    by_path: dict[str, FileReport] = {}
    for report in reports:
        for fr in report.files:
            have = by_path.get(fr.path)
            if have is None or _STATUS_RANK.get(fr.status, 5) < _STATUS_RANK.get(have.status, 5):
                by_path[fr.path] = fr
    return Report(files=sorted(by_path.values(), key=lambda f: f.path),
                  policy_source=sources[0] if sources else "built-in")
