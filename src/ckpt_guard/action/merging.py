"""``merge``: one report from the shards' ``report.json`` files.

A job that checks a large repository in shards (``shard: 1/4`` …) writes one report per shard;
the merging job reads them back (their ``context.json``, when beside them, gives base sizes)
and comments, labels and sets outputs once, as if one job had checked everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ckpt_guard.action import twophase
from ckpt_guard.action.select import expand_globs
from ckpt_guard.report.markdown import Context
from ckpt_guard.report.merge import ReportError, load_report, merge_reports
from ckpt_guard.report.model import Report


class MergeError(Exception):
    """Nothing to merge, or a shard's report that does not load: one line for the log."""


@dataclass(frozen=True)
class Merged:
    report: Report
    context: Context
    count: int  # how many shard reports went in


def merge_shard_reports(patterns: Sequence[str], workspace: Path, *, footer: str,
                        full_report: str) -> Merged:
    """The merged report of the ``report.json`` files the ``merge`` globs match."""
    paths = expand_globs(patterns, workspace)
    reports = [p for p in paths if p.endswith(".json") and not p.endswith(
        twophase.CONTEXT_FILE)]
    if not reports:
        raise MergeError(f"no report.json matches {', '.join(patterns)}")
    try:
        report = merge_reports([load_report(workspace / p) for p in reports])
    except ReportError as e:
        raise MergeError(str(e)) from e
    context = twophase.merged_context(
        [workspace / Path(p).parent / twophase.CONTEXT_FILE for p in reports])
    context = replace(context, footer=footer, full_report=full_report)
    return Merged(report, context, len(reports))
