"""``ckpt-guard action``: the container's entrypoint (also runnable by hand for debugging).

One run: read the inputs and the event → choose files → pull LFS objects → check (or fix) →
write reports (JSON, SARIF, Markdown) into the workspace → step summary, annotations,
outputs → sticky PR comment → commit fixes / replace release assets. Only the policy and
``fail_on`` decide the exit code; GitHub API trouble is logged, never fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ckpt_guard import __version__
from ckpt_guard.action import checking, twophase
from ckpt_guard.action.commands import ANNOTATION_LIMIT, SUMMARY_LIMIT, Workflow
from ckpt_guard.action.comment import comment_wanted, set_label, upsert_comment
from ckpt_guard.action.event import EventError, RunContext, scope_for
from ckpt_guard.action.gating import gate_policy, policy_notes
from ckpt_guard.action.github import GitHub, GitHubError
from ckpt_guard.action.gitio import Git, GitError
from ckpt_guard.action.lfsresolve import remote_objects, warn_pointers
from ckpt_guard.action.merging import MergeError, merge_shard_reports
from ckpt_guard.action.release import (
    check_assets,
    download_assets,
    find_release,
    replace_asset,
)
from ckpt_guard.action.select import Selection, file_size, pull_lfs, select
from ckpt_guard.action.settings import CommentMode, FailOn, Mode, Settings, SettingsError
from ckpt_guard.action.shard import assign
from ckpt_guard.exitcodes import Exit
from ckpt_guard.policy import PolicyError
from ckpt_guard.report.markdown import Context, code, render_markdown
from ckpt_guard.report.model import FileReport, Finding, Report

REPORT_DIR = "ckpt-guard-report"
FULL_REPORT = f"the job's step summary and `{REPORT_DIR}/report.json`"
FORBIDDEN_HELP = (
    "ckpt-guard could not comment on the pull request ({reason}). The report is in the job's "
    "step summary. To get the comment: give the job `permissions: pull-requests: write`; for "
    "pull requests from forks (whose token is read-only) upload the `ckpt-guard-report` "
    "directory as an artifact and post it from a `workflow_run` job — see "
    "docs/workflows/fork-safe-comment.yml.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ckpt-guard action",
        description="Run as the GitHub Action. Reads INPUT_* and GITHUB_* from the "
                    "environment (see the README's GitHub Action section); outside Actions set them by hand.")
    parser.add_argument("--version", action="version", version=f"ckpt-guard {__version__}")
    parser.parse_args(list(argv) if argv is not None else [])
    wf = Workflow()
    try:
        settings = Settings.from_env()
        ctx = RunContext.from_env()
    except (SettingsError, EventError) as e:
        wf.error(str(e), title="ckpt-guard")
        return Exit.USAGE
    wf.mask(settings.github_token)
    action = Action(settings, ctx, wf)
    try:
        return action.run()
    except Exception as e:  # a bug must reach users as one line, not a traceback
        if os.environ.get("CKPT_GUARD_DEBUG"):
            raise
        wf.error(f"internal error: {type(e).__name__}: {e} (set CKPT_GUARD_DEBUG=1 for the "
                 "traceback and report it)", title="ckpt-guard")
        return Exit.USAGE
    finally:
        action.hand_back()


def overall_status(report: Report) -> str:
    if any(f.status == "error" for f in report.files) and not any(
            f.status == "fail" for f in report.files):
        return "error"
    if report.failed:
        return "fail"
    if report.warned:
        return "warn"
    if any(f.status == "fixed" for f in report.files):
        return "fixed"
    return "pass"


def exit_code(report: Report, fail_on: FailOn) -> int:
    if fail_on is FailOn.NEVER:
        return Exit.OK
    if report.failed or (fail_on is FailOn.WARN and report.warned):
        return Exit.VIOLATIONS
    return Exit.OK


class Action:
    def __init__(self, settings: Settings, ctx: RunContext, wf: Workflow) -> None:
        self.s, self.ctx, self.wf = settings, ctx, wf
        self.workspace = ctx.workspace
        self.report_dir = self.workspace / REPORT_DIR
        self._gh: GitHub | None = None
        self._written: list[str] = []  # workspace files rewritten by mode: fix

    @property
    def gh(self) -> GitHub:
        if self._gh is None:
            self._gh = GitHub(self.s.github_token, self.ctx.api_url)
        return self._gh

    def hand_back(self) -> None:
        """The container runs as root, the workspace belongs to the runner's user: give what
        we wrote (reports, fixed files) to the workspace's owner, so later steps (upload,
        commit, the next checkout's clean-up) can use and remove it."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or not self.workspace.is_dir():
            return
        st = self.workspace.stat()
        if st.st_uid == 0:
            return
        paths = [self.report_dir, *self.report_dir.rglob("*")] if self.report_dir.is_dir() else []
        paths += [self.workspace / p for p in self._written]
        for p in paths:
            try:
                if p.exists() and not p.is_symlink() and p.stat().st_uid == 0:
                    os.chown(p, st.st_uid, st.st_gid)
            except OSError:
                pass

    # -- the run ---------------------------------------------------------------------
    def run(self) -> int:
        if self.ctx.event_name == "workflow_run":
            return twophase.post(self.ctx, self.s, self.wf, self.gh, self.report_dir)
        if self.s.merge:
            return self.merge()
        scope = scope_for(self.ctx, release_assets=self.s.release_assets)
        try:
            gate = gate_policy(self.s, self.ctx, self.workspace, scope)
        except PolicyError as e:
            self.wf.error(str(e), title="ckpt-guard: policy")
            self.wf.set_output("status", "error")
            return Exit.USAGE
        policy = gate.policy
        self.wf.info(f"ckpt-guard {__version__}: {scope.why}")
        if scope.kind == "release":
            return self.release_gate(policy)
        sel = select(scope, workspace=self.workspace, paths=self.s.paths,
                     matches=lambda p: checking.matches(policy, p, self.workspace))
        if self.s.shard is not None:
            everything = len(sel.files)
            sel.files = assign(sel.files, lambda p: file_size(self.workspace / p), self.s.shard)
            self.wf.info(f"shard {self.s.shard}: {len(sel.files)} of {everything} file(s); "
                         "the merging job comments")
        remote = (remote_objects(self.s, self.ctx, self.workspace, sel, self.wf)
                  if self.s.mode is Mode.CHECK else {})
        warn_pointers(self.wf, pull_lfs(sel, self.workspace, self.s.lfs, skip=set(remote)))
        for w in sel.warnings:
            self.wf.warning(w, title="ckpt-guard")
        for n in sel.notes:
            self.wf.info(n)
        self.wf.info(f"checking {len(sel.files)} file(s)")
        if self.s.mode is Mode.FIX:
            report = checking.run_fix(sel.files, policy, self.workspace)
        else:
            report = checking.run_check(sel.files, policy, self.workspace, remote=remote,
                                        base_sizes=sel.base_sizes)
        self._written = [f.path for f in report.files if f.rewritten]
        notes = policy_notes(self.s, self.workspace, gate, report, sel.files, self.wf)
        context = self.markdown_context(sel, notes)
        self.publish(report, context)
        if self.ctx.is_pull_request and self.s.shard is None:
            self.comment(report, context)
            self.label(report)
        if self.s.mode is Mode.FIX and self.s.commit_fixes:
            self.commit_fixes(report)
        return exit_code(report, self.s.fail_on)

    # -- merging the shards' reports -------------------------------------------------------
    def merge(self) -> int:
        """``merge``: one report, summary, comment, label and outputs from the shards'
        report.json files."""
        try:
            got = merge_shard_reports(self.s.merge, self.workspace, footer=self.footer(),
                                      full_report=FULL_REPORT)
        except MergeError as e:
            self.wf.error(f"merge: {e}", title="ckpt-guard")
            self.wf.set_output("status", "error")
            return Exit.USAGE
        self.wf.info(f"merged {got.count} report(s): {len(got.report.files)} file(s)")
        self.publish(got.report, got.context)
        if self.ctx.is_pull_request:
            self.comment(got.report, got.context)
            self.label(got.report)
        return exit_code(got.report, self.s.fail_on)

    def footer(self) -> str:
        run = f" · [run]({self.ctx.run_url})" if self.ctx.run_url else ""
        return f"<sub>ckpt-guard {__version__}{run}</sub>"

    def markdown_context(self, sel: Selection, notes: tuple[str, ...] = ()) -> Context:
        return Context(base_sizes=sel.base_sizes, changed=sel.changed, notes=notes,
                       base_label=sel.base_label, full_report=FULL_REPORT,
                       footer=self.footer())

    # -- reports, summary, annotations, outputs -------------------------------------------
    def publish(self, report: Report, context: Context) -> None:
        from ckpt_guard.report.json_report import render_json
        from ckpt_guard.report.sarif import render_sarif

        self.report_dir.mkdir(parents=True, exist_ok=True)
        (self.report_dir / "report.json").write_text(render_json(report), encoding="utf-8")
        (self.report_dir / "report.sarif").write_text(render_sarif(report), encoding="utf-8")
        comment_md = render_markdown(report, context)
        (self.report_dir / "comment.md").write_text(comment_md, encoding="utf-8")
        if self.ctx.is_pull_request:
            twophase.save_context(self.report_dir, self.ctx, context)
        self.wf.add_summary(render_markdown(report, context, max_chars=SUMMARY_LIMIT - 4096))
        self.annotate(report)
        s = report.summary()
        self.wf.set_output("status", overall_status(report))
        self.wf.set_output("files_checked", s["files"])
        self.wf.set_output("violations", s["failed"])
        self.wf.set_output("bytes_total", s["bytes_total"])
        self.wf.set_output("bytes_removable", s["bytes_removable"])
        self.wf.set_output("bytes_saved", s.get("bytes_saved", 0))
        self.wf.set_output("report_json", f"{REPORT_DIR}/report.json")
        self.wf.info(f"ckpt-guard: {s['files']} checked, {s['failed']} failing, "
                     f"{s['warned']} warning; reports in {REPORT_DIR}/")

    def annotate(self, report: Report) -> None:
        errors = [f for f in report.files if f.status in ("fail", "error")]
        warns = [f for f in report.files if f.status == "warn"]
        for kind, files in (("error", errors), ("warning", warns)):
            acts = ("fail", "fix") if kind == "error" else ("warn",)
            for fr in files[:ANNOTATION_LIMIT]:
                found = [f for f in fr.findings if f.action in acts] or fr.findings
                rules = ", ".join(sorted({f.rule for f in found}))
                msg = "\n".join(f"{f.rule}{' (fixable)' if f.fixable else ''}: {f.message}"
                                for f in found)
                getattr(self.wf, kind)(msg or fr.status, file=fr.path,
                                       title=f"ckpt-guard: {rules or fr.status}")
            if len(files) > ANNOTATION_LIMIT:
                self.wf.notice(f"{len(files) - ANNOTATION_LIMIT} more file(s) with "
                               f"{kind}s are not annotated (GitHub shows at most "
                               f"{ANNOTATION_LIMIT}); see the step summary.")

    # -- PR comment -------------------------------------------------------------------
    def comment(self, report: Report, context: Context) -> None:
        number = self.ctx.pr_number
        if self.s.comment is CommentMode.NEVER or number is None:
            return
        if not self.s.github_token:
            self.wf.warning(FORBIDDEN_HELP.format(reason="no github_token"), title="ckpt-guard")
            return
        create, why = comment_wanted(self.s.comment, report, context, self.s.comment_threshold)
        body = render_markdown(report, context)
        res = upsert_comment(self.gh, self.ctx.repository, number, body, create=create)
        if res.action == "skipped":
            self.wf.info(f"no PR comment: {why}")
            return
        if res.action == "forbidden":
            self.wf.warning(FORBIDDEN_HELP.format(reason=res.reason), title="ckpt-guard")
        elif res.action == "failed":
            self.wf.warning(f"ckpt-guard could not comment: {res.reason}", title="ckpt-guard")
        else:
            self.wf.info(f"PR comment {res.action}{': ' + res.url if res.url else ''}")

    def label(self, report: Report) -> None:
        """``label``: on the pull request while files fail the policy, off once they pass."""
        number = self.ctx.pr_number
        if not self.s.label or number is None or not self.s.github_token:
            return
        try:
            what = set_label(self.gh, self.ctx.repository, number, self.s.label,
                             present=bool(report.failed))
        except GitHubError as e:
            self.wf.warning(f"could not update the label {self.s.label!r}: {e}",
                            title="ckpt-guard")
            return
        self.wf.info(what)

    # -- fix mode: commit ---------------------------------------------------------------
    def commit_fixes(self, report: Report) -> None:
        fixed = [f.path for f in report.files if f.rewritten]
        if not fixed:
            return
        if not self.ctx.is_pull_request:
            self.wf.notice("commit_fixes applies to pull requests; the fixed files are left "
                           "in the workspace for later steps.")
            return
        if self.ctx.is_fork:
            self.wf.warning("commit_fixes: not pushing to a fork's branch (the workflow's "
                            "token cannot write there). The fixed files are in the workspace; "
                            "ask the author to run `ckpt-guard fix`.", title="ckpt-guard")
            return
        git = Git(self.workspace)
        head = git.head()
        if self.ctx.head_sha and head != self.ctx.head_sha:
            self.wf.warning("commit_fixes: the checkout is not the pull request's head commit "
                            "(on pull_request it is a merge commit). Check out the head with "
                            "actions/checkout `ref: ${{ github.head_ref }}` — see "
                            "docs/workflows/fix-and-commit.yml.", title="ckpt-guard")
            return
        n = len(fixed)
        msg = (f"ckpt-guard: strip training state from {n} weight file{'s' if n != 1 else ''}"
               "\n\n" + "\n".join(f"- {p}" for p in fixed))
        try:
            sha = git.commit_and_push(fixed, msg, self.ctx.head_ref)
        except GitError as e:
            self.wf.warning(f"commit_fixes: could not commit and push: {e}", title="ckpt-guard")
            return
        self.wf.info(f"pushed {sha[:12]} to {self.ctx.head_ref} with {n} fixed file(s)")

    # -- release gate ---------------------------------------------------------------------
    def release_gate(self, policy) -> int:
        try:
            rel = find_release(self.gh, self.ctx.repository, payload_release=self.ctx.release,
                               tag=self.ctx.tag)
        except GitHubError as e:
            self.wf.error(f"release gate: cannot list releases: {e}", title="ckpt-guard")
            return Exit.USAGE
        if rel is None:
            self.wf.error("release gate: no release for this event (run on `release` events "
                          "or on a tag with a draft release)", title="ckpt-guard")
            return Exit.USAGE
        tmp = Path(os.environ.get("RUNNER_TEMP") or tempfile.gettempdir())
        dest = Path(tempfile.mkdtemp(prefix="ckpt-guard-assets-", dir=tmp))
        fix = self.s.mode is Mode.FIX  # a fix needs the bytes; a check reads by range
        gate = download_assets(self.gh, self.ctx.repository, rel, dest,
                               lambda name: bool(policy.matches(name)), by_range=not fix)
        names = {str(a.path): a.name for a in gate.assets}
        report = (checking.run_fix([str(a.path) for a in gate.assets], policy, dest) if fix
                  else check_assets(self.gh, self.ctx.repository, gate, policy, dest))
        by_name = {a.name: a for a in gate.assets}
        for fr in report.files:
            fr.path = names.get(str(dest / fr.path), fr.path)
        # A gate must not pass what it could not look at: an asset that could not be fetched
        # is a file that cannot be read.
        report.files += [FileReport(path=name, status="error",
                                    findings=[Finding("unreadable", "fail", why)])
                         for name, why in gate.failed.items()]
        if self.s.mode is Mode.FIX:
            for fr in report.files:
                if fr.rewritten:
                    why = replace_asset(self.gh, self.ctx.repository, gate, by_name[fr.path])
                    if why:
                        self.wf.warning(f"release gate: {fr.path} not replaced: {why}",
                                        title="ckpt-guard")
                        fr.notes.append(f"not replaced in the release: {why}")
                        fr.status = "fail"  # the release still ships the baggage
                    else:
                        self.wf.info(f"replaced release asset {fr.path}")
        tag = rel.get("tag_name", "")
        self.publish(report, Context(title=f"ckpt-guard release gate {code(tag)}",
                                     full_report=f"`{REPORT_DIR}/report.json`"))
        (self.report_dir / "release.json").write_text(json.dumps(
            {"tag": tag, "draft": gate.draft, "checked": [a.name for a in gate.assets],
             "skipped": gate.skipped, "replaced": gate.replaced, "errors": gate.errors},
            indent=2) + "\n", encoding="utf-8")
        return exit_code(report, self.s.fail_on)
