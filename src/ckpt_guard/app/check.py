"""The check pipeline for a set of paths: discover → read → analyze → evaluate → report.

Surfaces (CLI, hook, Action) call :func:`check_paths` and render the :class:`Report`. Nothing
here prints; every per-file problem becomes a finding, so one bad file never stops a run.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

# Discovery lives in its own module; its names stay importable from here.
from ckpt_guard.app.discover import Target, discover, git_files, git_root, is_remote
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.vocab import Action, Format, Status

__all__ = ["PARALLEL_THRESHOLD", "Target", "check_paths", "check_target", "discover", "examine",
           "git_files", "git_root", "is_remote", "status_of"]

# Above this many files, reading fans out to one worker process per core.
PARALLEL_THRESHOLD = 64


def status_of(findings: list[Finding]) -> Status:
    actions = {f.action for f in findings}
    if any(f.rule == "unreadable" and f.action in (Action.FAIL, Action.FIX) for f in findings):
        return Status.ERROR
    if actions & {Action.FAIL, Action.FIX}:
        return Status.FAIL
    if Action.WARN in actions:
        return Status.WARN
    return Status.PASS


def check_target(t: Target, policy, *, details: bool = False, ckpt=None) -> FileReport:
    """Read, analyze and evaluate one target. Never raises for a bad file. ``ckpt``: the
    target as already read (a fix's verified output), judged without reading it again."""
    return examine(t, policy, details=details, ckpt=ckpt)[0]


def examine(t: Target, policy, *, details: bool = False, ckpt=None):
    """:func:`check_target`, also handing back the analysis (``None`` for an unreadable
    file) so a caller that goes on to rewrite the file need not read it again.

    Nothing about one file stops a run: an unexpected exception anywhere in examining it
    (reading, analysis, policy, building its report) becomes that file's ``error`` with a
    one-line reason; globals its pickles referenced before are still judged.
    """
    try:
        return _examine(t, policy, details=details, ckpt=ckpt)
    except Exception as e:
        if os.environ.get(_DEBUG_ENV):
            raise
        return _crashed(t, policy, e), None


_DEBUG_ENV = "CKPT_GUARD_DEBUG"  # set to re-raise instead of reporting (developers)


def _crashed(t: Target, policy, err: Exception) -> FileReport:
    from ckpt_guard.policy import evaluate_failure
    from ckpt_guard.read import one_line

    fr = FileReport(path=t.path, status=Status.ERROR)
    reason = f"internal error while examining the file ({one_line(err)})"
    try:
        fr.findings = [f for f in evaluate_failure(err, policy.rules_for(t.relpath))
                       if f.rule != "unreadable"]
    except Exception:  # noqa: BLE001 - the file's verdict below does not depend on it
        fr.findings = []
    # Always a failure, whatever the unreadable rule says: the file was not judged.
    fr.findings.append(Finding("unreadable", Action.FAIL, reason, detail={
        "error": type(err).__name__}))
    with contextlib.suppress(OSError):
        fr.size_bytes = os.stat(t.abspath).st_size
    return fr


def _examine(t: Target, policy, *, details: bool = False, ckpt=None):
    from ckpt_guard.analyze import analyze
    from ckpt_guard.policy import evaluate, evaluate_failure
    from ckpt_guard.read import read_path, read_remote

    rules = policy.rules_for(t.relpath)
    fr = FileReport(path=t.path)
    try:
        if t.outside:
            raise UnreadableError(t.outside)
        if ckpt is not None:
            pass  # read already (and verified) by the caller
        elif t.source:
            ckpt = read_remote(t.source, headers=dict(t.source_headers), name=t.path)
        elif is_remote(t.abspath):
            ckpt = read_remote(t.abspath)
        elif t.shard_sources:
            ckpt = read_path(t.abspath, sources={p: (u, h) for p, u, h in t.shard_sources})
        else:
            ckpt = read_path(t.abspath)
        analysis = analyze(ckpt)
    except UnreadableError as e:
        if ckpt is not None and not e.partial_globals:  # read, then analysis hit a limit
            e.partial_globals = list(ckpt.globals)
        fr.findings = evaluate_failure(e, rules)
        fr.notes = list(t.notes)
        with contextlib.suppress(OSError):
            fr.size_bytes = os.stat(t.abspath).st_size
        fr.status = status_of(fr.findings)
        return fr, None
    except Exception as e:
        if ckpt is not None and not getattr(e, "partial_globals", None):
            e.partial_globals = list(ckpt.globals)  # type: ignore[attr-defined]
        raise
    try:
        fr.format = ckpt.format
        fr.framework = analysis.framework
        fr.size_bytes = ckpt.size_bytes
        if ckpt.format == Format.LFS_POINTER and isinstance(ckpt.metadata.get("size"), int):
            fr.size_bytes = ckpt.metadata["size"]  # the weights' size, not the pointer's
        fr.tensor_bytes_total = analysis.tensor_bytes_total
        fr.by_role = {k: v for k, v in analysis.bytes_by_role.items() if v}
        fr.by_dtype = dict(sorted(analysis.bytes_by_dtype.items(), key=lambda kv: -kv[1]))
        fr.tensor_count = analysis.tensor_count
        fr.notes = [*t.notes, *ckpt.notes]
        if ckpt.format in (Format.SHARDED_SAFETENSORS, Format.SHARDED_TORCH):
            fr.shards = shard_rows(analysis)
        if "remote_bytes" in ckpt.metadata:
            from ckpt_guard.report.units import format_bytes

            n = ckpt.metadata["remote_requests"]
            fr.notes.append(f"read remotely by range: {n} request{'s' if n != 1 else ''}, "
                            f"{format_bytes(ckpt.metadata['remote_bytes'])} of "
                            f"{format_bytes(ckpt.size_bytes)} transferred")
        fr.findings, fr.bytes_removable = evaluate(analysis, rules, path=t.relpath,
                                                   base_size=t.base_size,
                                                   output_size=_output_size(
                                                       _convert_for(policy, t.relpath)))
        fr.status = status_of(fr.findings)
        if details:
            fr.details = describe(analysis)
        # Every surface renders from this data: a value that cannot be rendered (a huge int,
        # a lone surrogate) must fail this file here, not the whole run later.
        # (Its path is the user's own: a non-UTF-8 file name is each renderer's to escape.)
        probe = fr.to_dict()
        probe.pop("path")
        json.dumps(probe, ensure_ascii=False).encode("utf-8", "strict")
    except Exception as e:
        if not getattr(e, "partial_globals", None):
            e.partial_globals = list(ckpt.globals)  # type: ignore[attr-defined]
        raise
    return fr, analysis


def _convert_for(policy, relpath: str) -> str | None:
    convert_for = getattr(policy, "convert_for", None)
    return convert_for(relpath) if convert_for is not None else None


def _output_size(convert: str | None):
    """The size of the zip a fix would write for a plan (asked only of legacy files; none
    for one converted to a new safetensors file)."""
    def size(analysis, plan) -> int | None:
        from ckpt_guard.rewrite.plan import output_size_for

        return output_size_for(convert)(analysis, plan)
    return size


def shard_rows(analysis) -> list[dict]:
    """A sharded set's shards for reports (JSON ``shards``, the Action's details)."""
    rows = []
    for rel, a, _hint in analysis.children:
        if isinstance(a, Exception):
            rows.append({"path": rel, "error": str(a)})
            continue
        rows.append({"path": rel, "format": a.checkpoint.format,
                     "size_bytes": a.checkpoint.size_bytes,
                     "tensor_bytes": a.tensor_bytes_total, "tensor_count": a.tensor_count})
    return rows


def describe(analysis) -> dict:
    """The inspect-level detail of an analysis, as JSON-ready data."""
    ckpt = analysis.checkpoint
    d: dict = {
        "top_level": [{"key": k.key, "kind": k.kind, "bytes": k.bytes, "role": k.role}
                      for k in analysis.top_level],
        "subtrees": [{"path": s.path, "role": s.role, "bytes": s.bytes, "what": s.what}
                     for s in analysis.subtrees],
        "globals": [{"name": g.use.qualname, "opcode": g.use.opcode, "member": g.use.member,
                     "uses": sorted(g.use.uses), "safety": g.safety, "reason": g.reason}
                    for g in analysis.globals],
        # Exactly which pickles the verdict covered (a directory: its members', each
        # ``member`` prefixed with the file's relative path and ``:``).
        "pickles": [p.to_dict() for p in ckpt.pickles],
    }
    if ckpt.metadata:
        d["metadata"] = {k: v for k, v in ckpt.metadata.items() if isinstance(v, (str, int))}
    if analysis.children:
        d["members"] = [
            {"path": rel, "hint": hint,
             **({"error": str(a)} if isinstance(a, Exception) else
                {"format": a.checkpoint.format, "size_bytes": a.checkpoint.size_bytes,
                 "tensor_bytes": a.tensor_bytes_total,
                 "by_role": {k: v for k, v in a.bytes_by_role.items() if v}})}
            for rel, a, hint in analysis.children]
    return d


def _check_many(args: tuple[list[Target], object, bool]) -> list[FileReport]:
    targets, policy, details = args
    return [check_target(t, policy, details=details) for t in targets]


def check_paths(paths: list[str], policy, *, root: Path, details: bool = False,
                jobs: int | None = None,
                sources: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] | None = None,
                base_size: Callable[[str], int | None] | None = None) -> Report:
    """Check ``paths`` (files or directories; none ⇒ the repository) against ``policy``.
    ``sources``: absolute path → (URL, headers) to read by range instead of the file.
    ``base_size``: absolute path → its size in the base revision (``size-growth``)."""
    targets = list(discover(paths, policy, root=root))
    if base_size is not None:
        from dataclasses import replace

        targets = [replace(t, base_size=base_size(t.abspath)) if not t.outside else t
                   for t in targets]
    if sources:
        from dataclasses import replace

        from ckpt_guard.read.sharded import is_index_name

        targets = [replace(t, source=sources[t.abspath][0],
                           source_headers=sources[t.abspath][1])
                   if t.abspath in sources else t for t in targets]
        # A set's shards that are LFS pointers are read through their objects, too.
        targets = [replace(t, shard_sources=tuple(
            (p, url, hdrs) for p, (url, hdrs) in sources.items()
            if os.path.dirname(p) == os.path.dirname(t.abspath)))
            if is_index_name(t.abspath) and not t.source else t for t in targets]
    report = Report(policy_source=str(getattr(policy, "source", "built-in")))
    jobs = jobs or min(os.cpu_count() or 1, 8)
    if len(targets) < PARALLEL_THRESHOLD or jobs < 2:
        report.files = [check_target(t, policy, details=details) for t in targets]
        return report
    from concurrent.futures import ProcessPoolExecutor  # ~20 ms to import: only when used

    # Fan out in contiguous chunks so output order stays the input order.
    n = max(1, len(targets) // (jobs * 4))
    chunks = [targets[i:i + n] for i in range(0, len(targets), n)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_check_many, (c, policy, details)) for c in chunks]
        for chunk, future in zip(chunks, futures, strict=True):
            try:
                report.files.extend(future.result())
            except Exception:  # noqa: BLE001 - a worker died (killed, out of memory)
                report.files.extend(_isolated(chunk, policy, details))
    return report


def _isolated(targets: list[Target], policy, details: bool) -> list[FileReport]:
    """Re-check a chunk whose worker died, one file per fresh process, so the file that
    kills its process becomes that file's error and the others are still checked."""
    from concurrent.futures import ProcessPoolExecutor

    out = []
    for t in targets:
        try:
            with ProcessPoolExecutor(max_workers=1) as pool:
                out.append(pool.submit(check_target, t, policy, details=details).result())
        except Exception as e:  # noqa: BLE001 - this file kills the process that reads it
            fr = FileReport(path=t.path, status=Status.ERROR, findings=[Finding(
                "unreadable", Action.FAIL, f"the process examining the file died ({type(e).__name__})",
                detail={"error": type(e).__name__})])
            out.append(fr)
    return out
