"""The fix pipeline for a set of paths: discover → read → analyze → rewrite → re-check.

Like :mod:`ckpt_guard.app.check`, nothing here raises for a bad file: each path ends as a
:class:`FileReport` whose status is ``fixed``, ``pass``/``warn`` (nothing to do), ``fail``
(violations a fix cannot remove) or ``error`` (the original is untouched, with the reason).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ckpt_guard.app.check import Target, check_target, discover, examine, status_of
from ckpt_guard.policy.plan_types import summarize
from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.report.units import format_bytes
from ckpt_guard.vocab import Action, Status

# Files smaller than this get no progress display: they take milliseconds.
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


class _Progress:
    """Bytes processed for one large file: a rich bar on a terminal, a few plain lines
    elsewhere (CI logs)."""

    def __init__(self, label: str, terminal: bool) -> None:
        self.label, self.terminal = label, terminal
        self._bar = self._task = None
        self._next_pct = 25
        self._shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_MIN_BYTES:
            return
        if self.terminal:
            if self._bar is None:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                                     DownloadColumn(binary_units=False), TransferSpeedColumn(),
                                     TimeRemainingColumn(),
                                     console=Console(file=sys.stderr), transient=True,
                                     auto_refresh=False)
                self._bar.start()
                self._task = self._bar.add_task(self.label, total=total)
            # Refreshed from here, a few times a second: no refresh thread (the cast's worker
            # process is forked only from a single-threaded process).
            now = time.monotonic()
            refresh = now - self._shown >= 0.1 or done >= total
            if refresh:
                self._shown = now
            self._bar.update(self._task, completed=done, refresh=refresh)
            return
        pct = 100 * done // max(total, 1)
        if pct >= self._next_pct:
            print(f"{self.label}: {pct}% ({format_bytes(done)} of {format_bytes(total)})",
                  file=sys.stderr, flush=True)
            self._next_pct = (pct // 25 + 1) * 25

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _mirror(t: Target, out_dir: str, root: Path) -> str:
    """Where ``--out DIR`` puts the fixed copy of ``t``: its path below DIR."""
    rel = t.path
    if os.path.isabs(rel) or rel.startswith(".."):
        try:
            rel = os.path.relpath(t.abspath, root)
        except ValueError:
            rel = os.path.basename(t.abspath)
        if rel.startswith(".."):
            rel = os.path.basename(t.abspath)
    return os.path.join(out_dir, rel)


def _kept_kind(why: str) -> str:
    """The kind of reason a tensor stayed FP32, without its own figures: a real file can keep
    dozens of tensors for their values, each with its own counts (one line, not seventy)."""
    prefix = "values: " if why.startswith("values: ") else ""
    rest = why[len(prefix):]
    if rest.startswith("shares its storage with "):
        return "shares its storage with a tensor that is not cast"
    if " range (max |x| " in rest:
        return prefix + "values beyond the target's range"
    if "would flush to zero" in rest or "would be subnormal" in rest:
        return prefix + "too many values would flush to zero or be subnormal"
    return why


def _describe(result) -> list[str]:
    lines = summarize(result.changes, result.dry_run)
    if result.cast_bytes:
        verb = "would cast" if result.dry_run else "cast"
        line = f"{verb} {format_bytes(result.cast_bytes)} of FP32 to {result.cast_to}"
        if not result.dry_run:
            line += (f"; largest error {result.max_abs_err:.3g} absolute, "
                     f"{result.max_rel_err:.3g} relative")
            small = []
            if result.flushed_to_zero:
                small.append(f"{result.flushed_to_zero} value"
                             f"{'s' if result.flushed_to_zero != 1 else ''} flushed to zero")
            if result.subnormal:
                small.append(f"{result.subnormal} value{'s' if result.subnormal != 1 else ''}"
                             f" subnormal")
            if small:
                line += f" ({', '.join(small)})"
        lines.append(line)
    if result.kept_fp32:
        reasons: dict[str, int] = {}
        collapsed = False
        for _, why in result.kept_fp32:
            kind = _kept_kind(why)
            collapsed |= kind != why
            reasons[kind] = reasons.get(kind, 0) + 1
        line = "kept FP32: " + ", ".join(f"{n} tensor{'s' if n > 1 else ''} ({why})"
                                         for why, n in reasons.items())
        if collapsed:
            line += "; each tensor's figures in --format json (details.fix.kept_fp32)"
        lines.append(line)
    lines.extend(result.notes)
    if result.out_path and not result.dry_run:
        lines.append(f"wrote {result.out_path}")
    return lines


def _keeper(policy, t: Target, before: FileReport, stash: str | None, convert: str | None):
    """The stash hook for an in-place fix of ``t`` (None: originals are not kept).
    ``stash`` overrides the policy's ``stash.when`` (the Action: ``never`` unless ``always``).
    """
    cfg = getattr(policy, "stash", None)
    if cfg is None or (stash or cfg.when) == "never":
        return None
    from ckpt_guard.rewrite.stash import Keeper, Limits

    rules = [str(f.rule) for f in before.findings if f.action == Action.FIX]
    rules = list(dict.fromkeys(rules)) + (["convert"] if convert else [])
    return Keeper(rules=tuple(rules), shown=t.path,
                  limits=Limits(cfg.max_entries, cfg.max_bytes))


def _stash_info(keeper) -> dict | None:
    """``details.fix.stash`` of the JSON report: where the original went."""
    if keeper is None or keeper.entry is None:
        return None
    e = keeper.entry
    info = {"path": e.path, "id": e.id, "how": e.how, "size": e.size,
            "pruned": keeper.pruned, "kind": e.kind}
    if e.kind != "file":  # a sharded set: its index and the shards the fix replaced or
        info["files"] = list(e.files)  # removed; a directory: the training files it deleted
    return info


def _kept_line(kept: dict, shown: str) -> str:
    what = "original"
    if kept.get("kind") == "directory":
        n = len(kept["files"])
        return (f"deleted file{'s' if n != 1 else ''} kept: {kept['path']} (`ckpt-guard "
                f"restore {shown}` puts {'them' if n != 1 else 'it'} back)")
    if "files" in kept:
        n = len(kept["files"]) - 1
        what = f"original set (index + {n} shard{'s' if n != 1 else ''})"
    return f"{what} kept: {kept['path']} (`ckpt-guard restore {shown}` puts it back)"


def _one_file_now(t: Target, recovered: str | None) -> Target:
    """The target to judge after recovery: a set whose interrupted re-shard into one file
    was just finished (rewrite/set_single.py) is that file now, its index gone."""
    if not recovered or os.path.lexists(t.abspath):
        return t
    from ckpt_guard.read.sharded import unsharded_name

    single = unsharded_name(t.abspath)
    if not os.path.isfile(single):
        return t
    return replace(t, path=unsharded_name(t.path), abspath=single)


def fix_target(t: Target, policy, *, root: Path, dry_run: bool, out_dir: str | None,
               progress: bool, stash: str | None = None) -> FileReport:
    from ckpt_guard.policy.directories import DIRECTORY_FORMATS
    from ckpt_guard.policy.planning import REWRITABLE, project, refusal
    from ckpt_guard.rewrite import fix_file, plan_fix

    recovered = None
    if not dry_run and not out_dir and not t.outside:
        from ckpt_guard.read.sharded import is_index_name
        from ckpt_guard.rewrite.set_single import left_journal

        # A set a killed fix left half-swapped (or re-sharded into this one file): finish first.
        if is_index_name(t.abspath) or left_journal(t.abspath):
            from ckpt_guard.rewrite.sharded import recover

            recovered = recover(t.abspath)
            t = _one_file_now(t, recovered)
    # The file's identity and times before it is read: the rewrite refuses to replace a file
    # that changed since (or while) it was analyzed.
    try:
        stat_before = os.stat(t.abspath)
    except OSError:
        stat_before = None  # the check below reports why the file cannot be read
    before, analysis = examine(t, policy)
    if recovered:
        before.notes.append(recovered)
    if before.status == Status.ERROR or t.outside or analysis is None or stat_before is None:
        return before
    rules = policy.rules_for(t.relpath)
    convert = policy.convert_for(t.relpath)
    reshard = (policy.max_shard_size_for(t.relpath)
               if analysis.checkpoint.format.startswith("sharded-") else None)
    if not convert and reshard is None and not any(
            f.action == Action.FIX for f in before.findings):
        return before
    if any(g.safety == "unsafe" for g in analysis.globals):
        # Whatever the policy's action for unsafe-pickle: a rewrite re-emits every object as
        # read, so it would launder nothing, and a file that can run code on load is not one
        # to hand back "fixed".
        what = ("TorchScript code" if any(g.safety == "unsafe" and g.use.opcode == "TorchScript"
                                          for g in analysis.globals) else "the pickle")
        before.notes.append(f"not rewritten: {what} is unsafe; remove its payload first")
        return before
    out_path = _mirror(t, out_dir, root) if out_dir else None
    # A dry run writes nothing: it only scans the values a cast would touch.
    bar = _Progress(f"{'scanning (dry run)' if dry_run else 'fixing'} {t.path}",
                    terminal=progress)
    keeper = None if dry_run or out_path else _keeper(policy, t, before, stash, convert)
    # One plan, the rules' own (check's "fixable" came from the same function): the rewrite
    # carries it out and the dry run projects it.
    plan = plan_fix(analysis, rules, convert=convert) if not refusal(
        analysis, (*REWRITABLE, *DIRECTORY_FORMATS)) else None
    try:
        result = fix_file(t.abspath, analysis, rules, out_path=out_path, dry_run=dry_run,
                          progress=bar, convert=convert, stat_before=stat_before,
                          keep=keeper, max_shard_size=reshard, plan=plan)
    finally:
        bar.close()
    kept = _stash_info(keeper)
    if result.error and result.changed:
        # A checkpoint directory's files are deleted one by one: some were, some were not.
        after = check_target(t, policy)
        after.findings.append(Finding(
            "fix", Action.FAIL, f"could not fix completely: {result.error}"))
        return replace(after, status=Status.ERROR, size_after=result.size_after,
                       notes=before.notes + _describe(result) + (
                           [_kept_line(kept, t.path)] if kept else []),
                       details={**after.details, **({"fix": {"stash": kept}} if kept else {})})
    if result.error:
        before.findings.append(Finding(
            "fix", Action.FAIL, f"could not fix, the original is untouched: {result.error}"))
        before.status = Status.ERROR
        return before
    fix_info = {"changes": _describe(result), "dry_run": dry_run,
                "removed": result.removed, "cast_bytes": result.cast_bytes,
                "max_abs_err": result.max_abs_err, "max_rel_err": result.max_rel_err,
                "flushed_to_zero": result.flushed_to_zero, "subnormal": result.subnormal,
                "kept_fp32": [list(k) for k in result.kept_fp32]}
    if out_path:
        fix_info["out_path"] = out_path
    if kept:
        fix_info["stash"] = kept
    if not result.changed:
        before.details = {**before.details, "fix": fix_info}
        before.notes.extend(result.notes)
        return before
    if dry_run:
        remaining = project(analysis, plan, rules, before.findings, path=t.relpath,
                            size_after=result.size_after, out_path=result.out_path)
    else:
        # Judge the rewritten file as check would: what is left after the fix.
        written = result.out_path or out_path or t.abspath
        # What verification read back is the file as renamed into place: judged from it,
        # not from a third read (a writer that hands nothing back is re-read).
        verified = result.verified
        if verified is not None and os.path.realpath(verified.path) != os.path.realpath(
                written):
            verified = None
        after = check_target(replace(t, abspath=os.path.abspath(written)), policy,
                             ckpt=verified)
        remaining = after.findings
    status = status_of(remaining)
    report = replace(before, findings=remaining, size_after=result.size_after,
                     status=Status.FIXED if status in (Status.PASS, Status.WARN) else status,
                     notes=before.notes + _describe(result) + (
                         [_kept_line(kept, t.path)] if kept else []),
                     details={**before.details, "fix": fix_info})
    return report


def run_fix(paths: list[str], policy, *, root: Path, dry_run: bool = False,
            out_dir: str | None = None, progress: bool = False,
            on_fixed: Callable[[FileReport], None] | None = None,
            stash: str | None = None) -> Report:
    """Fix ``paths`` (none ⇒ the repository) as the policy's ``fix`` rules say; ``stash``
    (``auto``/``always``/``never``) overrides the policy's ``stash.when``."""
    report = Report(policy_source=str(getattr(policy, "source", "built-in")))
    # Each output is written once. One file named twice (a symlink and its target) is fixed
    # once and the second name re-checked; two inputs whose --out mirrors collide would
    # overwrite each other's copy, so the second is not written.
    claimed: dict[str, tuple[str, str]] = {}  # real output path → (shown path, real input)
    for t in discover(paths, policy, root=root):
        real = os.path.realpath(t.abspath)
        dest = os.path.realpath(_mirror(t, out_dir, root)) if out_dir else real
        first, first_real = claimed.setdefault(dest, (t.path, real))
        if first != t.path:
            if first_real == real and not out_dir:
                fr = check_target(t, policy)
                fr.notes.append(f"the same file as {first}")
            else:
                fr = FileReport(path=t.path, status=Status.ERROR, findings=[Finding(
                    "fix", Action.FAIL, f"not written: the fixed copy of {first} goes to the "
                                   f"same place ({dest})")])
            report.files.append(fr)
            continue
        fr = fix_target(t, policy, root=root, dry_run=dry_run, out_dir=out_dir,
                        progress=progress, stash=stash)
        if on_fixed and fr.rewritten and not dry_run:  # partial fixes too (defect 5)
            on_fixed(fr)
        report.files.append(fr)
    return report
