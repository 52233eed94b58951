"""The fork-safe two-phase comment.

Phase 1 runs on ``pull_request`` with a read-only token (forks): it checks, writes
``ckpt-guard-report/`` (report.json + context.json) and the workflow uploads it as an
artifact. Phase 2 runs on ``workflow_run`` with a write token, downloads the artifact into the
workspace and runs this action again, which posts the sticky comment.

The artifact comes from untrusted code, so phase 2 trusts nothing in it: the comment is
re-rendered from report.json by our own (escaping) renderer, the PR number must be an integer
whose PR head is the commit the triggering run built.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ckpt_guard.action.commands import Workflow
from ckpt_guard.action.comment import comment_wanted, upsert_comment
from ckpt_guard.action.event import RunContext
from ckpt_guard.action.github import GitHub, GitHubError
from ckpt_guard.action.settings import CommentMode, Settings
from ckpt_guard.exitcodes import Exit
from ckpt_guard.report.markdown import Context, render_markdown
from ckpt_guard.report.merge import report_from_dict

CONTEXT_FILE = "context.json"
MAX_ARTIFACT = 64 * 1024 * 1024  # report.json of 100k files is far below; a bomb is not


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_ARTIFACT:
        raise ValueError(f"{path.name} is larger than {MAX_ARTIFACT} bytes")
    return json.loads(path.read_text("utf-8"))


def save_context(report_dir: Path, ctx: RunContext, context: Context) -> None:
    data = {"pr_number": ctx.pr_number, "head_sha": ctx.head_sha,
            "base_label": context.base_label,
            "base_sizes": dict(context.base_sizes) if context.base_sizes is not None else None,
            "changed": sorted(context.changed) if context.changed is not None else None,
            "notes": list(context.notes)}
    (report_dir / CONTEXT_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _context(meta: dict[str, Any]) -> Context:
    """The comment's context from the artifact's context.json (validated: it is untrusted)."""
    sizes = meta.get("base_sizes")
    label = re.sub(r"[^\w./-]", "", str(meta.get("base_label", "base")))[:100]
    return Context(
        base_sizes={str(k): (int(v) if v is not None else None) for k, v in sizes.items()}
        if isinstance(sizes, dict) else None,
        changed=[str(p) for p in meta["changed"]] if isinstance(meta.get("changed"), list)
        else None,
        base_label=f"`{label}`" if label not in ("", "base") else "base",
        notes=tuple(str(n)[:2000] for n in meta.get("notes", [])[:20])
        if isinstance(meta.get("notes"), list) else (),
        full_report="the triggering run's step summary and its `ckpt-guard-report` artifact")


def merged_context(paths: list[Path]) -> Context:
    """The comment's context for merged shard reports: base sizes and changed paths of
    every context.json found (each validated as in phase 2)."""
    sizes: dict[str, int | None] = {}
    changed: set[str] = set()
    label, have_sizes, all_changed, notes, found = "base", False, False, (), 0
    for p in paths:
        try:
            ctx = _context(_read_json(p))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        found += 1
        label, notes = ctx.base_label, ctx.notes or notes
        if ctx.base_sizes is not None:
            have_sizes = True
            sizes.update(ctx.base_sizes)
        if ctx.changed is None:
            all_changed = True
        else:
            changed.update(ctx.changed)
    return Context(base_sizes=sizes if have_sizes else None,
                   changed=None if all_changed or not found else changed,
                   base_label=label, notes=notes)


def post(ctx: RunContext, s: Settings, wf: Workflow, gh: GitHub, report_dir: Path) -> int:
    """Phase 2: post the comment for the artifact found in ``report_dir``. Never fails the
    job over the comment; exits 2 only when the artifact is missing or malformed."""
    try:
        report = report_from_dict(_read_json(report_dir / "report.json"))
        meta = _read_json(report_dir / CONTEXT_FILE)
        number = meta.get("pr_number")
        if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
            raise ValueError("pr_number is not a positive integer")
        context = _context(meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        wf.error(f"workflow_run: no usable ckpt-guard report in {report_dir.name}/ ({e}); "
                 "download the phase-1 artifact into it first", title="ckpt-guard")
        return Exit.USAGE
    run = ctx.payload.get("workflow_run") or {}
    expected = str(run.get("head_sha", ""))
    try:
        pr = gh.get_json(f"/repos/{ctx.repository}/pulls/{number}")
    except GitHubError as e:
        wf.warning(f"workflow_run: cannot read pull request #{number}: {e}", title="ckpt-guard")
        return Exit.OK
    head = (pr.get("head") or {}).get("sha") if isinstance(pr, dict) else None
    if not expected or head != expected:
        wf.warning(f"workflow_run: pull request #{number} is not at {expected[:12]} (the commit "
                   "the report is about); not commenting", title="ckpt-guard")
        return Exit.OK
    mode = CommentMode.AUTO if s.comment is CommentMode.NEVER else s.comment
    create, _ = comment_wanted(mode, report, context, s.comment_threshold)
    res = upsert_comment(gh, ctx.repository, number, render_markdown(report, context),
                         create=create)
    if res.action in ("forbidden", "failed"):
        wf.warning(f"workflow_run: could not comment on #{number}: {res.reason}",
                   title="ckpt-guard")
    else:
        wf.info(f"PR #{number} comment {res.action}{': ' + res.url if res.url else ''}")
    if s.comment is CommentMode.NEVER:
        wf.info("(comment: never is ignored on workflow_run: posting is this phase's job)")
    return Exit.OK
