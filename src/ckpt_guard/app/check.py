"""The check pipeline for a set of paths: discover → read → analyze → evaluate → report.

Surfaces (CLI, hook, Action) call :func:`check_paths` and render the :class:`Report`. Nothing
here prints; every per-file problem becomes a finding, so one bad file never stops a run.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.vocab import Action, Format, Status

# Above this many files, reading fans out to one worker process per core.
PARALLEL_THRESHOLD = 64


def is_remote(path: str) -> bool:
    """:func:`ckpt_guard.read.remote.is_remote`, importing that module (its range reader,
    URL parsing and dataclasses) only for a path that can be a URL at all."""
    if "://" not in path:
        return False
    from ckpt_guard.read.remote import is_remote as remote

    return remote(path)


@dataclass(frozen=True)
class Target:
    """One path to check: ``path`` as shown to users, ``abspath`` to read, ``relpath`` (POSIX,
    relative to the policy's base directory) for glob matching."""

    path: str
    abspath: str
    relpath: str
    outside: str = ""  # non-empty: why this path must not be read (e.g. symlink escape)
    # Read this URL by range instead of the local file (e.g. an LFS pointer's object).
    source: str = ""
    source_headers: tuple[tuple[str, str], ...] = ()
    # A sharded set's shards to read by range instead (absolute path, URL, headers).
    shard_sources: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = ()
    # Size in the base revision (``size-growth``): None = no base; 0 = new since the base.
    base_size: int | None = None


def git_root(start: Path) -> Path | None:
    """The enclosing git work tree: the nearest directory holding ``.git`` (a folder, or a
    file in worktrees and submodules). A walk up, not a ``git`` subprocess: it runs on every
    start of every hook invocation."""
    here = Path(start).resolve()
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return None


def git_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the repository at ``root``."""
    import subprocess  # only here: ~8 ms of every cold start otherwise

    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, timeout=120, check=True)
    return sorted({p for p in out.stdout.decode("utf-8", "surrogateescape").split("\0") if p})


def _display(path: Path, cwd: Path) -> str:
    try:
        return os.path.relpath(path, cwd)
    except ValueError:  # another drive (Windows)
        return str(path)


def _relpath(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _escape_reason(path: Path, root: Path) -> str:
    """Why ``path`` must not be read, or ``""``: a path named inside the repository whose
    real location — through a symlink at any component, not only the last — is outside it
    (or nowhere). Paths named outside the repository are the user's explicit choice."""
    named = Path(os.path.abspath(path))
    roots = (Path(os.path.abspath(root)), root.resolve())
    if not any(_inside(named, r) for r in roots):
        return ""
    real = Path(os.path.realpath(path))
    if not os.path.lexists(real) or (path.is_symlink() and not path.exists()):
        return "broken symlink" if os.path.lexists(path) else ""
    if not _inside(real, roots[1]):
        return f"symlink points outside the repository ({real})"
    return ""


def discover(paths: Iterable[str], policy, *, root: Path, cwd: Path | None = None
             ) -> Iterator[Target]:
    """Expand ``paths`` into targets; with no paths, every repository file the policy matches.

    Files named explicitly are checked unless the policy excludes them; directories are walked
    with include and exclude applied, and a checkpoint directory (Hugging Face Trainer,
    DeepSpeed) is one target.
    """
    from ckpt_guard.read.sharded import SetFinder, is_index_name, unsharded_name

    cwd = cwd or Path.cwd()
    base = Path(policy.base_dir) if getattr(policy, "base_dir", None) else root
    seen: set[str] = set()
    sets = SetFinder()

    def target(p: Path) -> Target | None:
        key = os.path.abspath(p)
        if key in seen:
            return None
        seen.add(key)
        return Target(_display(p, cwd), key, _relpath(Path(key), base), _escape_reason(p, root))

    def set_target(p: Path, matched: bool) -> Target | None:
        """The target for ``p``: its sharded set's index when ``p`` is an index or a shard
        (the set is one unit, however many of its files are named or staged), else ``p``
        itself when ``matched``. Policy globs see the set as its unsharded name
        (``model.safetensors``)."""
        idx = sets.index_for(os.path.abspath(p))
        if idx is None:
            return target(p) if matched else None
        t = target(Path(idx))
        if t is None:
            return None
        t = replace(t, relpath=_relpath(Path(unsharded_name(t.abspath)), base))
        return None if policy.excludes(t.relpath) else t

    def walked(p: Path, rel: str) -> Target | None:
        if is_index_name(rel):
            return set_target(p, False) if policy.matches(unsharded_name(rel)) else None
        return set_target(p, True) if policy.matches(rel) else None

    paths = list(paths)
    if not paths:
        for rel in git_files(root) if git_root(root) else []:
            p = root / rel
            if p.name == ".metadata" and _checkpoint_dir(p.parent):
                # A torch.distributed.checkpoint directory: no file of it matches the
                # weight globs, yet torch unpickles .metadata. Checked as one target.
                t = target(p.parent)
                if t and not policy.excludes(t.relpath):
                    yield t
                continue
            if p.is_dir():
                continue
            t = walked(p, _relpath(Path(os.path.abspath(p)), base))
            if t:
                yield t
        return
    for raw in paths:
        if is_remote(raw):  # read by range, never downloaded (read/remote.py)
            from ckpt_guard.read.remote_expand import expand

            try:
                for entry in expand(raw, lambda rel: policy.matches(rel)):
                    if entry.url not in seen:
                        seen.add(entry.url)
                        yield Target(entry.url, entry.url, _remote_relpath(entry.url))
            except UnreadableError as e:  # no such repository, revision, token… : a finding
                yield Target(raw, raw, _remote_relpath(raw), outside=str(e))
            continue
        p = Path(raw) if os.path.isabs(raw) else cwd / raw
        if p.is_dir() and not p.is_symlink() and not _checkpoint_dir(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if d != ".git")
                d = Path(dirpath)
                for name in list(dirnames):
                    sub = d / name
                    if _checkpoint_dir(sub):
                        dirnames.remove(name)
                        t = target(sub)
                        if t and not policy.excludes(t.relpath):
                            yield t
                for name in sorted(filenames):
                    sub = d / name
                    t = walked(sub, _relpath(Path(os.path.abspath(sub)), base))
                    if t:
                        yield t
        else:
            if p.is_file() and not p.is_symlink() and not _escape_reason(p, root):
                t = set_target(p, not policy.excludes(
                    _relpath(Path(os.path.abspath(p)), base)))
                if t:
                    yield t
                continue
            t = target(p)
            if t and not policy.excludes(t.relpath):
                yield t


def _remote_relpath(url: str) -> str:
    """What policy globs match for a remote file: its path inside the repository or bucket
    (``hf://org/repo@rev/models/x.pt`` → ``models/x.pt``)."""
    from urllib.parse import urlsplit

    from ckpt_guard.read.sharded import unsharded_name

    if url.startswith("hf://"):
        from ckpt_guard.read.remote import HubPath

        return unsharded_name(HubPath.parse(url).path)  # a set: as its unsharded name
    return unsharded_name(urlsplit(url).path.lstrip("/"))


def _checkpoint_dir(p: Path) -> bool:
    """Is ``p`` a Hugging Face Trainer or DeepSpeed checkpoint directory (checked as one)?"""
    from ckpt_guard.read.directories import directory_format

    try:
        return directory_format(str(p)) is not None
    except UnreadableError:
        return False


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
        fr.notes = list(ckpt.notes)
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
