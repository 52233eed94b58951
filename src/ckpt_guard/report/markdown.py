"""The Markdown report: ``check --format markdown``, the step summary and the PR comment.

Layout (after compressed-size-action's size report): a headline with total weight bytes, the
change against the base, the training baggage found and what a fix would remove; a table of
the changed weight files (size, Δ vs base, what each carries, verdict); one collapsed
``<details>`` per file (framework, roles, dtypes, findings); unchanged files collapsed at the
end. The whole text stays under ``max_chars`` whatever the number of files: what does not fit
is left out with a note pointing at the full report.

Everything that comes from a checked file or an artifact (paths, finding messages carrying key
and global names, formats, rule names) goes through :func:`text` / :func:`inline`: it can
never open a tag, a link, an image, a code span, a table cell or a new line, ping anyone
(``@user``) or cross-reference an issue (``#1``) — pull requests from forks choose them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ckpt_guard import __version__
from ckpt_guard.report.model import FileReport, Report
from ckpt_guard.report.units import format_bytes, format_percent
from ckpt_guard.vocab import Action, Format, Role, Status

COMMENT_LIMIT = 65_536  # GitHub's cap on a comment body
DEFAULT_MAX_CHARS = 60_000  # leaves room for the sticky marker and a footer

BAGGAGE_ROLES = (Role.OPTIMIZER, Role.EMA, Role.SCHEDULER, Role.SCALER, Role.RNG)
ROLE_LABELS = {Role.OPTIMIZER: "optimizer", Role.EMA: "EMA", Role.SCHEDULER: "scheduler",
               Role.SCALER: "scaler", Role.RNG: "RNG", Role.WEIGHTS: "weights",
               Role.OTHER: "other"}
ICONS = {Status.ERROR: "💥", Status.FAIL: "❌", Status.WARN: "⚠️", Status.FIXED: "🔧",
         Status.PASS: "✅"}
_ORDER = {Status.ERROR: 0, Status.FAIL: 1, Status.WARN: 2, Status.FIXED: 3, Status.PASS: 4}
_FAILED = (Status.FAIL, Status.ERROR)
_FAILS = (Action.FAIL, Action.FIX)  # actions whose findings fail the file
ACTION_ICONS = {Action.FAIL: "❌", Action.FIX: "❌", Action.WARN: "⚠️"}


@dataclass(frozen=True)
class Context:
    """What the report is about beyond the files: sizes at the base commit (``None`` = the
    file is new there; a path absent from the mapping = unknown), which paths changed
    (``None`` = all shown as changed), where the full report lives, a title."""

    base_sizes: Mapping[str, int | None] | None = None
    changed: Collection[str] | None = None
    base_label: str = "base"
    full_report: str = ""  # e.g. "the step summary and `ckpt-guard-report/report.json`"
    title: str = "ckpt-guard"
    footer: str = ""
    notes: tuple[str, ...] = ()  # shown under the headline (e.g. a policy the PR changes)


# Markdown and HTML punctuation as entities: inert in text, in table cells and inside <code>
# (links and images need "[", code spans "`", autolinks "www." or "://"). `@` and `#` keep a
# zero-width space after them, so mentions and issue references (which GitHub finds in the
# rendered text) never form.
_ESCAPES = {c: f"&#{ord(c)};" for c in "\\`*_[]|~"}
_ESCAPES.update({"&": "&amp;", "<": "&lt;", ">": "&gt;", "@": "@&#8203;", "#": "&#35;&#8203;"})
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_AUTOLINK = re.compile(r"(www)\.|:(//)", re.I)  # GFM autolinks "www." and "scheme://"
MAX_NAME = 200  # characters of a path shown; a 4 kB name must not push other files out


def _visible(ch: str) -> str:
    """Control, line-separator and bidi-override characters as a visible ``\\uXXXX``: they
    could end a table row or make ``evil.pt`` read as another name (Trojan Source)."""
    if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
        return f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}"
    return ch


def text(value: object, *, newline: str = " ") -> str:
    """``value`` as inert Markdown text (see the module docstring)."""
    s = str(value).replace("\r\n", "\n")
    s = "".join(newline if ch == "\n" and newline else _visible(ch) for ch in s)
    s = "".join(_ESCAPES.get(ch, ch) for ch in s)
    return _AUTOLINK.sub(lambda m: f"{m[1]}&#46;" if m[1] else f"&#58;{m[2]}", s)


def inline(message: object) -> str:
    """A message with our own `code` spans kept as <code>; everything else inert text. With
    an odd number of backticks (a name carrying one) nothing is a code span."""
    parts = str(message).split("`")
    if len(parts) % 2 == 0:
        return text(message)
    return "".join(f"<code>{text(p)}</code>" if i % 2 else text(p) for i, p in enumerate(parts))


def _short(path: str) -> str:
    if len(path) <= MAX_NAME:
        return path
    keep = (MAX_NAME - 1) // 2
    return f"{path[:keep]}…{path[-keep:]}"


def code(value: object) -> str:
    return f"<code>{text(value, newline='')}</code>"


def _code(path: str) -> str:
    return code(_short(path))


def _signed(n: int) -> str:
    return ("+" if n > 0 else "") + format_bytes(n) if n else "0 B"


def size_of(fr: FileReport) -> int:
    """The file's size as users think of it: after a fix when fixed; for a Git LFS pointer,
    the size of the object it stands for (from the pointer), not the pointer's ~130 bytes."""
    if fr.size_after is not None:
        return fr.size_after
    if fr.format == Format.LFS_POINTER:
        for f in fr.findings:
            size = f.detail.get("size") if f.rule == "lfs-pointer" else None
            if isinstance(size, int):
                return size
    return fr.size_bytes


def baggage(fr: FileReport) -> int:
    return sum(fr.by_role.get(r, 0) for r in BAGGAGE_ROLES)


def carries(fr: FileReport) -> str:
    """What training baggage the file carries (for a fixed file: what the fix removed), as
    Markdown."""
    if fr.status == Status.FIXED:
        fix = fr.details.get("fix") if isinstance(fr.details.get("fix"), dict) else {}
        removed = fix.get("removed") if isinstance(fix.get("removed"), dict) else {}
        parts = [f"{ROLE_LABELS.get(r) or text(r)} {format_bytes(n)}"
                 for r, n in removed.items() if isinstance(n, int) and n]
        cast = fix.get("cast_bytes")
        if isinstance(cast, int) and cast:
            parts.append(f"cast {format_bytes(cast)}")
        if parts:
            return "removed " + " · ".join(parts)
    parts = [f"{ROLE_LABELS[r]} {format_bytes(fr.by_role[r])}"
             for r in BAGGAGE_ROLES if fr.by_role.get(r)]
    fp32 = fr.by_dtype.get("float32", 0)
    if fp32:
        parts.append(f"FP32 {format_bytes(fp32)}")
    text = " · ".join(parts) if parts else "—"
    return f"before the fix: {text}" if fr.status == Status.FIXED and parts else text


def verdict(fr: FileReport) -> str:
    """Icon, status and the rules behind it, as Markdown."""
    rules = sorted({f.rule for f in fr.findings
                    if f.action in (_FAILS if fr.status in _FAILED else (Action.WARN,))})
    out = f"{ICONS.get(fr.status, '')} {text(fr.status)}"
    if rules and fr.status in (*_FAILED, Status.WARN):
        out += ": " + ", ".join(text(r) for r in rules)
    if any(f.fixable and f.action in _FAILS for f in fr.findings) \
            and fr.status != Status.FIXED:
        out += " (fixable)"
    return out


def _delta(fr: FileReport, ctx: Context) -> str:
    if ctx.base_sizes is None or fr.path not in ctx.base_sizes:
        return "—"
    base = ctx.base_sizes[fr.path]
    if base is None:
        return "new"
    d = size_of(fr) - base
    pct = f" ({'+' if d > 0 else '-' if d < 0 else ''}{format_percent(abs(d), base)})" \
        if base and d else ""
    return _signed(d) + pct


def _headline(files: list[FileReport], report: Report, ctx: Context) -> str:
    failed = sum(1 for f in files if f.status in _FAILED)
    warned = sum(1 for f in files if f.status == Status.WARN)
    fixed = sum(1 for f in files if f.status == Status.FIXED)
    n = len(files)
    files_word = f"weight file{'s' if n != 1 else ''}"
    if not n:
        state = "✅ no weight files to check"
    elif failed:
        state = f"❌ {failed} of {n} {files_word} fail{'s' if n == 1 else ''} the policy"
    elif warned:
        state = f"⚠️ {warned} of {n} {files_word} with warnings"
    elif fixed:
        state = f"🔧 {fixed} of {n} {files_word} fixed; all pass the policy"
    else:
        state = f"✅ all clear: {n} {files_word} pass{'es' if n == 1 else ''} the policy"
    if fixed and (failed or warned):
        state += f" · 🔧 {fixed} fixed"
    lines = [f"### {ctx.title}: {state}", ""]
    if not n:
        return "\n".join(lines)
    total = sum(size_of(f) for f in files)
    facts = [f"**Weights:** {format_bytes(total)}"]
    if ctx.base_sizes is not None:
        known = [f for f in files if f.path in ctx.base_sizes]
        if known:
            now = sum(size_of(f) for f in known)
            before = sum(ctx.base_sizes[f.path] or 0 for f in known)
            facts.append(f"**Change vs {ctx.base_label}:** {_signed(now - before)}")
    # A fixed file no longer carries what it was fixed for.
    carrying = [f for f in files if baggage(f) and f.status != Status.FIXED]
    bag = sum(baggage(f) for f in carrying)
    facts.append(f"**Training baggage:** {format_bytes(bag)} in {len(carrying)} file"
                 f"{'s' if len(carrying) != 1 else ''}" if bag else "**Training baggage:** none")
    removable = sum(f.bytes_removable for f in files if f.status != Status.FIXED)
    if removable:
        facts.append(f"**A fix would remove:** {format_bytes(removable)}")
    saved = sum(f.size_bytes - f.size_after for f in files if f.size_after is not None)
    if saved:
        facts.append(f"**Saved by fixing:** {format_bytes(saved)}")
    lines.append(" · ".join(facts))
    return "\n".join(lines)


def _table_head(ctx: Context) -> str:
    if ctx.base_sizes is None:  # no base to compare with (CLI, release gate): no Δ column
        return "| File | Size | Carries | Verdict |\n|---|---:|---|---|"
    return "| File | Size | Δ vs base | Carries | Verdict |\n|---|---:|---:|---|---|"


def _row(fr: FileReport, ctx: Context) -> str:
    size = format_bytes(size_of(fr))
    if fr.size_after is not None and fr.size_after != fr.size_bytes:
        size = f"{format_bytes(fr.size_bytes)} → {size}"
    delta = "" if ctx.base_sizes is None else f" {_delta(fr, ctx)} |"
    return (f"| {_code(fr.path)} | {size} |{delta} "
            f"{carries(fr)} | {verdict(fr)} |")


def _details(fr: FileReport) -> str:
    out = [f"<details><summary>{_code(fr.path)} — {verdict(fr)}</summary>", ""]
    facts = [f"format {code(fr.format)}", f"framework **{text(fr.framework)}**"]
    if fr.tensor_count:
        facts.append(f"{fr.tensor_count} tensors")
    facts.append(f"{format_bytes(fr.tensor_bytes_total)} of tensors in "
                 f"{format_bytes(fr.size_bytes)}")
    out += [", ".join(facts), ""]
    total = fr.tensor_bytes_total or sum(fr.by_role.values())
    if fr.status in _FAILED:
        out += _pie(fr)
    if fr.shards:  # a sharded set is one row; its shards are listed here
        out += ["| Shard | Format | Size | Tensors |", "|---|---|---:|---:|"]
        for r in fr.shards:
            if "error" in r:
                out.append(f"| {_code(str(r['path']))} | unreadable | | {inline(r['error'])} |")
            else:
                out.append(f"| {_code(str(r['path']))} | {code(r.get('format', ''))} | "
                           f"{format_bytes(int(r.get('size_bytes', 0)))} | "
                           f"{int(r.get('tensor_count', 0))} |")
        out.append("")
    if fr.by_role:
        out += ["| Role | Bytes | Share |", "|---|---:|---:|"]
        for role, n in sorted(fr.by_role.items(), key=lambda kv: -kv[1]):
            out.append(f"| {ROLE_LABELS.get(role) or text(role)} | {format_bytes(n)} | "
                       f"{format_percent(n, total)} |")
        out.append("")
    if fr.by_dtype:
        out += ["| dtype | Bytes | Share |", "|---|---:|---:|"]
        for dtype, n in sorted(fr.by_dtype.items(), key=lambda kv: -kv[1]):
            out.append(f"| {text(dtype)} | {format_bytes(n)} | {format_percent(n, total)} |")
        out.append("")
    if fr.findings:
        out.append("**Findings**")
        out.append("")
        for f in fr.findings:
            icon = ACTION_ICONS.get(f.action, "•")
            extra = [text(f.action)] + (["fixable"] if f.fixable else [])
            size = f" — {format_bytes(f.bytes)}" if f.bytes else ""
            out.append(f"- {icon} **{text(f.rule)}** ({', '.join(extra)}): "
                       f"{inline(f.message)}{size}")
        out.append("")
    for note in fr.notes:
        out.append(f"> {inline(note)}")
    if fr.notes:
        out.append("")
    out.append("</details>")
    return "\n".join(out)


def _pie(fr: FileReport) -> list[str]:
    """Where a failing file's bytes go, as a Mermaid pie (GitHub renders it in comments).
    Only our own role names become labels — a role key from an untrusted report.json is
    counted as "other" — and the title is fixed: nothing from the file reaches the chart."""
    slices: dict[str, int] = {}
    for role, n in fr.by_role.items():
        label = ROLE_LABELS.get(role, ROLE_LABELS[Role.OTHER])
        if isinstance(n, int) and n > 0:
            slices[label] = slices.get(label, 0) + n
    if len(slices) < 2:
        return []
    lines = ["```mermaid", "pie showData title Tensor bytes by role"]
    lines += [f'    "{label}" : {n}' for label, n in sorted(slices.items(), key=lambda kv: -kv[1])]
    return [*lines, "```", ""]


def _unchanged(files: list[FileReport], shown: int) -> str:
    rows = "\n".join(f"| {_code(f.path)} | {format_bytes(size_of(f))} | {verdict(f)} |"
                     for f in files[:shown])
    more = len(files) - shown
    note = f"\n\n… and {more} more (left out to fit)" if more > 0 else ""
    return (f"<details><summary>{len(files)} unchanged weight file"
            f"{'s' if len(files) != 1 else ''}</summary>\n\n"
            f"| File | Size | Verdict |\n|---|---:|---|\n{rows}{note}\n\n</details>")


def sort_files(files: list[FileReport]) -> list[FileReport]:
    return sorted(files, key=lambda f: (_ORDER.get(f.status, 5), -f.size_bytes, f.path))


def render_markdown(report: Report, context: Context | None = None, *,
                    max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The report as GitHub-flavoured Markdown, at most ``max_chars`` characters."""
    ctx = context or Context()
    files = sort_files(report.files)
    if ctx.changed is None:
        changed, unchanged = files, []
    else:
        wanted = set(ctx.changed)
        changed = [f for f in files if f.path in wanted]
        unchanged = [f for f in files if f.path not in wanted]

    head = _headline(changed + unchanged, report, ctx)
    if ctx.notes:
        head += "\n\n" + "\n".join(f"> ⚠️ {inline(n)}" for n in ctx.notes)
    footer = ctx.footer or (f"<sub>ckpt-guard {__version__} · policy: "
                            f"{text(report.policy_source)}</sub>")
    where = ctx.full_report or "the JSON report"
    reserve = 300  # room for the truncation note
    budget = max_chars - len(head) - len(footer) - reserve
    parts: list[str] = []
    omitted_rows = omitted_details = 0

    if changed:
        rows: list[str] = []
        head_row = _table_head(ctx)
        used = len(head_row) + 2
        for fr in changed:
            r = _row(fr, ctx)
            if used + len(r) + 1 > budget:
                omitted_rows += 1
                continue
            rows.append(r)
            used += len(r) + 1
        table = head_row + "\n" + "\n".join(rows)
        parts.append(table)
        budget -= len(table) + 2
        details: list[str] = []
        for fr in changed:
            d = _details(fr)
            if len(d) + 2 > budget:
                omitted_details += 1
                continue
            details.append(d)
            budget -= len(d) + 2
        if details:
            parts.append("\n\n".join(details))
    if unchanged:
        shown = len(unchanged)
        block = _unchanged(unchanged, shown)
        while len(block) + 2 > budget and shown > 0:
            shown = max(0, shown - max(1, len(unchanged) // 10))
            block = _unchanged(unchanged, shown)
        if len(block) + 2 <= budget:
            parts.append(block)
        else:
            omitted_rows += len(unchanged)
    if omitted_rows or omitted_details:
        what = []
        if omitted_rows:
            what.append(f"{omitted_rows} file row{'s' if omitted_rows != 1 else ''}")
        if omitted_details:
            what.append(f"details of {omitted_details} file{'s' if omitted_details != 1 else ''}")
        parts.append(f"> **Truncated** to stay under GitHub's size limit: "
                     f"{' and '.join(what)} left out. The full report is in {where}.")
    body = "\n\n".join([head, *parts, footer]) + "\n"
    if len(body) > max_chars:  # a pathological path or message: hard cut, still valid text
        note = f"\n\n> **Truncated**: see {where}.\n"
        body = body[: max_chars - len(note)] + note
    return body
