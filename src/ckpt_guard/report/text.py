"""Human text reports: rich tables on a terminal, plain aligned text everywhere else
(pre-commit, CI logs, pipes).

On a terminal, long cells wrap inside their column (paths and class names fold, never turn
into "…") and findings wrap with a hanging indent. Plain text never wraps a finding (one
grep-able line each) and carries no trailing spaces.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.report.plain import (
    ACTION_MARK,
    DRY_RUN_FIXED,  # noqa: F401 - re-exported
    STATUS_STYLE,  # noqa: F401 - re-exported
    check_rows,
    plain_width,
    render_check_plain,
    status_label,
    summary_text,
)
from ckpt_guard.report.plain import NUMERIC as _NUMERIC
from ckpt_guard.report.plain import dry_run as _dry_run  # noqa: F401 - re-exported
from ckpt_guard.report.plain import fitting as _fitting
from ckpt_guard.report.plain import plural as _plural
from ckpt_guard.report.units import format_bytes
from ckpt_guard.vocab import Role

# Free text and identifiers that may be long: wrap (folding long names) instead of "…".
_WRAPPING = ("File", "Key", "Kind", "Member", "Global", "Why")


def _console(color: bool, width: int | None = None) -> Console:
    width = width or int(os.environ.get("COLUMNS", "0") or 0) or (None if color else
                                                                  plain_width())
    return Console(file=io.StringIO(), force_terminal=color, no_color=not color,
                   color_system="auto" if color else None, width=width, highlight=False,
                   emoji=False, soft_wrap=not color)


def _table(color: bool, *columns: str, title: str | None = None) -> Table:
    t = Table(box=box.ROUNDED if color else box.SIMPLE_HEAD, title=title,
              title_justify="left", show_edge=color, pad_edge=color)
    for c in columns:
        if c in _NUMERIC:
            t.add_column(c, justify="right", no_wrap=True)
        elif c in _WRAPPING:
            t.add_column(c, overflow="fold")
        else:
            t.add_column(c, no_wrap=True)
    return t


def _render(renderables: list, color: bool, console: Console | None = None) -> str:
    console = console or _console(color)
    console.print(Group(*renderables))
    text = console.file.getvalue()
    if color:
        return text
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def _status(f: FileReport) -> Text:
    label, style = status_label(f)
    return Text(label, style=f"bold {style}")


def _finding_line(finding: Finding) -> tuple[Text, Text]:
    mark, style = ACTION_MARK.get(finding.action, ("·", ""))
    body = Text(finding.rule, style="bold")
    if finding.fixable:
        body.append(" (fixable)", style="bold")
    body.append(": ")
    body.append(finding.message)
    return Text(mark, style=style), body


def _findings(f: FileReport, color: bool) -> list:
    """The file's findings and notes, two spaces in. On a terminal, as a grid so that wrapped
    lines hang under the text instead of restarting at column 0."""
    rows = [_finding_line(x) for x in f.findings]
    rows += [(Text(""), Text(f"note: {n}", style="dim")) for n in f.notes]
    if not rows:
        return []
    if not color:
        return [Text.assemble("  ", mark, " " if mark.plain else "", body) for mark, body in rows]
    grid = Table.grid(padding=(0, 1), pad_edge=False)
    grid.add_column(width=3, justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for mark, body in rows:
        grid.add_row(mark, body)
    return [grid]


def _summary_line(report: Report) -> Text:
    return Text(summary_text(report), style="bold")


def render_check(report: Report, *, color: bool = False) -> str:
    """One row per file, then each file's findings, then a summary line."""
    if not color:
        text = render_check_plain(report)
        if text is not None:
            return text
    return render_check_rich(report, color=color)


def render_check_rich(report: Report, *, color: bool = False) -> str:
    """:func:`render_check` through rich, plain text included (what plain.py reproduces)."""
    if not report.files:
        return "No weight files to check.\n"
    rows: list[dict[str, str | Text]] = []
    for f, row in zip(report.files, check_rows(report), strict=True):
        rows.append({**row, "Status": _status(f)})
    console = _console(color)
    cols, needed = _fitting(list(rows[0]), rows, console.width)
    t = _table(color, *cols)
    for row in rows:
        t.add_row(*(row[c] for c in cols))
    out: list = [t]
    for f in report.files:
        if f.findings or f.notes:
            out.append(Text(f.path, style="bold"))
            out.extend(_findings(f, color))
    out.append(_summary_line(report))
    # Plain text is for logs and grep: a long path widens the table rather than wrapping.
    return _render(out, color, console if color else _console(color, max(needed,
                                                                          console.width)))


def _share(part: int, whole: int) -> str:
    if not whole:
        return "-"
    pct = 100 * part / whole
    return "<0.1%" if 0 < pct < 0.05 else f"{pct:.1f}%"


def _kind(kind: str) -> str:
    # The reader calls objects it does not execute "Opaque"; users know them as objects.
    return "object " + kind[len("Opaque "):] if kind.startswith("Opaque ") else kind


def _globals_table(color: bool, globals_: Iterable[dict]) -> list:
    unique = list({g["name"]: g for g in globals_}.values())
    out: list = []
    order = {"unsafe": 0, "needs-code": 1}
    groups: dict[tuple[str, str], list[str]] = {}
    for g in sorted((g for g in unique if g["safety"] != "safe"),
                    key=lambda g: order.get(g["safety"], 0)):
        reason = g["reason"]
        if g.get("opcode") == "TorchScript":  # not a pickle global: code the archive runs
            reason = f"TorchScript code ({g.get('member', '')}): {reason}"
        groups.setdefault((g["safety"], reason), []).append(g["name"])
    if groups:
        t = _table(color, "Global", "Safety", "Why", title="Globals that need code or are unsafe")
        for (safety, reason), names in groups.items():
            style = "bold red" if safety == "unsafe" else "yellow"
            t.add_row("\n".join(names), Text(safety, style=style), reason)
        out.append(t)
    safe = [g["name"] for g in unique if g["safety"] == "safe"]
    if safe:
        # A DCP .metadata's own classes are safe there, not by the allowlist (analyze.dcp).
        why = ("torch's weights_only allowlist, or what torch's DCP writer stores in .metadata"
               if any("DCP" in g.get("reason", "") for g in unique if g["safety"] == "safe")
               else "torch's weights_only allowlist")
        out.append(Text(f"{_plural(len(safe), 'safe global')} ({why}): " + ", ".join(safe),
                        style="dim"))
    return out


def _inspect_one(f: FileReport, color: bool) -> list:
    out: list = []
    head = Text(f.path, style="bold")
    head.append(f"  {f.format}, {f.framework}, {format_bytes(f.size_bytes)} on disk, "
                f"{_plural(f.tensor_count, 'tensor')}, {format_bytes(f.tensor_bytes_total)} "
                f"tensor data")
    out.append(head)
    d = f.details
    if d.get("top_level"):
        t = _table(color, "Key", "Kind", "Role", "Tensor bytes", "Share", title="Top-level keys")
        for row in d["top_level"]:
            t.add_row(str(row["key"]), _kind(row["kind"]),
                      row["role"] if row["role"] != Role.OTHER else "",
                      format_bytes(row["bytes"]) if row["bytes"] else "-",
                      _share(row["bytes"], f.tensor_bytes_total) if row["bytes"] else "")
        out.append(t)
    if d.get("members"):
        t = _table(color, "Member", "Role", "Format", "Size", title="Checkpoint directory")
        for m in d["members"]:
            t.add_row(m["path"], m["hint"] or "-", m.get("format", "unreadable"),
                      format_bytes(m["size_bytes"]) if "size_bytes" in m else "-")
        out.append(t)
    if f.by_role:
        t = _table(color, "Role", "Bytes", "Share", title="Tensor bytes by role")
        for role, n in sorted(f.by_role.items(), key=lambda kv: -kv[1]):
            t.add_row(role, format_bytes(n), _share(n, f.tensor_bytes_total))
        out.append(t)
    if f.by_dtype:
        t = _table(color, "Dtype", "Bytes", "Share", title="Tensor bytes by dtype")
        for dtype, n in sorted(f.by_dtype.items(), key=lambda kv: -kv[1]):
            t.add_row(dtype, format_bytes(n), _share(n, f.tensor_bytes_total))
        out.append(t)
    if d.get("globals"):
        out.extend(_globals_table(color, d["globals"]))
    metadata = d.get("metadata") or {}
    if metadata:
        out.append(Text("Metadata: " + ", ".join(f"{k}={v}" for k, v in metadata.items()),
                        style="dim"))
    if f.findings or f.notes:
        out.append(Text("Findings under the policy" if f.findings else "Notes", style="bold"))
        out.extend(_findings(f, color))
    spaced: list = []
    for item in out:
        if (isinstance(item, Table) and item.box is not None) or (
                isinstance(item, Text) and item.plain in (
                "Findings under the policy", "Notes")):
            spaced.append(Text(""))
        spaced.append(item)
    spaced.append(Text(""))
    return spaced


def render_inspect(report: Report, *, color: bool = False) -> str:
    out: list = []
    for f in report.files:
        out.extend(_inspect_one(f, color))
    return _render(out, color)
