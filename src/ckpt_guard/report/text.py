"""Human text reports: rich tables on a terminal, plain aligned text everywhere else
(pre-commit, CI logs, pipes)."""

from __future__ import annotations

import io
import os

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ckpt_guard.report.model import FileReport, Report
from ckpt_guard.report.units import format_bytes

STATUS_STYLE = {"pass": ("PASS", "green"), "warn": ("WARN", "yellow"), "fail": ("FAIL", "red"),
                "error": ("ERROR", "red"), "fixed": ("FIXED", "cyan")}
ACTION_MARK = {"fail": ("✗", "red"), "fix": ("✗", "red"), "warn": ("!", "yellow")}


def _console(color: bool) -> Console:
    width = int(os.environ.get("COLUMNS", "0") or 0) or (None if color else 110)
    return Console(file=io.StringIO(), force_terminal=color, no_color=not color,
                   color_system="auto" if color else None, width=width, highlight=False,
                   emoji=False, soft_wrap=not color)


def _table(color: bool, *columns: str, title: str | None = None) -> Table:
    t = Table(box=box.ROUNDED if color else box.SIMPLE_HEAD, title=title,
              title_justify="left", show_edge=color, pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in ("Size", "Bytes", "Share", "Removable",
                                                  "After", "Saved", "Tensors") else "left")
    return t


def _render(renderables: list, color: bool) -> str:
    console = _console(color)
    console.print(Group(*renderables))
    return console.file.getvalue()


def _status(f: FileReport) -> Text:
    label, style = STATUS_STYLE.get(f.status, (f.status.upper(), ""))
    return Text(label, style=f"bold {style}")


def _findings(f: FileReport) -> list[Text]:
    lines = []
    for finding in f.findings:
        mark, style = ACTION_MARK.get(finding.action, ("·", ""))
        line = Text("  ")
        line.append(mark, style=style)
        line.append(f" {finding.rule}: ", style="bold")
        line.append(finding.message)
        lines.append(line)
    return lines


def _summary_line(report: Report) -> Text:
    s = report.summary()
    parts = [f"{s['files']} file{'s' if s['files'] != 1 else ''} checked",
             f"{s['failed']} failed", f"{s['warned']} warned",
             f"{format_bytes(s['bytes_total'])} in all"]
    text = Text(", ".join(parts) + ".", style="bold")
    if "bytes_saved" in s:
        text.append(f" {s.get('fixed', 0)} fixed, {format_bytes(s['bytes_saved'])} saved.")
    elif s["bytes_removable"]:
        text.append(f" `ckpt-guard fix` could remove {format_bytes(s['bytes_removable'])}.")
    return text


def render_check(report: Report, *, color: bool = False) -> str:
    """One row per file, then each file's findings, then a summary line."""
    if not report.files:
        return "No weight files to check.\n"
    fixing = any(f.size_after is not None for f in report.files)
    cols = ["File", "Format", "Framework", "Size"]
    cols += ["After", "Saved"] if fixing else ["Removable"]
    t = _table(color, *cols, "Status")
    for f in report.files:
        row = [f.path, f.format, f.framework, format_bytes(f.size_bytes)]
        if fixing:
            after = f.size_after if f.size_after is not None else f.size_bytes
            row += [format_bytes(after), format_bytes(f.size_bytes - after)]
        else:
            row.append(format_bytes(f.bytes_removable) if f.bytes_removable else "-")
        t.add_row(*row, _status(f))
    out: list = [t]
    for f in report.files:
        if f.findings or f.notes:
            out.append(Text(f.path, style="bold"))
            out.extend(_findings(f))
            out.extend(Text(f"  note: {n}", style="dim") for n in f.notes)
    out.append(_summary_line(report))
    return _render(out, color)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _inspect_one(f: FileReport, color: bool) -> list:
    out: list = []
    head = Text(f.path, style="bold")
    head.append(f"  {f.format}, {f.framework}, {format_bytes(f.size_bytes)} on disk, "
                f"{f.tensor_count} tensors, {format_bytes(f.tensor_bytes_total)} tensor data")
    out.append(head)
    d = f.details
    if d.get("top_level"):
        t = _table(color, "Key", "Kind", "Role", "Bytes", "Share", title="Top-level keys")
        for row in d["top_level"]:
            t.add_row(str(row["key"]), row["kind"], row["role"] if row["role"] != "other" else "",
                      format_bytes(row["bytes"]) if row["bytes"] else "-",
                      _share(row["bytes"], f.tensor_bytes_total) if row["bytes"] else "")
        out.append(t)
    if d.get("members"):
        t = _table(color, "Member", "Role", "Format", "Bytes", title="Checkpoint directory")
        for m in d["members"]:
            t.add_row(m["path"], m["hint"] or "-", m.get("format", "unreadable"),
                      format_bytes(m.get("size_bytes", 0)))
        out.append(t)
    if f.by_role:
        t = _table(color, "Role", "Bytes", "Share", title="Tensor bytes by role")
        for role, n in sorted(f.by_role.items(), key=lambda kv: -kv[1]):
            t.add_row(role, format_bytes(n), _share(n, f.tensor_bytes_total))
        out.append(t)
    if f.by_dtype:
        t = _table(color, "Dtype", "Bytes", "Share", title="Tensor bytes by dtype")
        for dtype, n in f.by_dtype.items():
            t.add_row(dtype, format_bytes(n), _share(n, f.tensor_bytes_total))
        out.append(t)
    if d.get("globals"):
        unique = list({g["name"]: g for g in d["globals"]}.values())
        order = {"unsafe": 0, "needs-code": 1, "safe": 2}
        flagged = sorted((g for g in unique if g["safety"] != "safe"),
                         key=lambda g: order.get(g["safety"], 0))
        if flagged:
            t = _table(color, "Global", "Safety", "Why",
                       title="Globals that need code or are unsafe")
            for g in flagged:
                style = "bold red" if g["safety"] == "unsafe" else "yellow"
                t.add_row(g["name"], Text(g["safety"], style=style), g["reason"])
            out.append(t)
        safe = [g["name"] for g in unique if g["safety"] == "safe"]
        if safe:
            out.append(Text(f"{len(safe)} safe global{'s' if len(safe) != 1 else ''} "
                            f"(torch's weights_only allowlist): " + ", ".join(safe),
                            style="dim"))
    for key, value in (d.get("metadata") or {}).items():
        out.append(Text(f"  {key}: {value}", style="dim"))
    out.extend(Text(f"  note: {n}", style="dim") for n in f.notes)
    if f.findings:
        out.append(Text("Findings under the policy", style="bold"))
        out.extend(_findings(f))
    spaced: list = []
    for item in out:
        if isinstance(item, Table) or (isinstance(item, Text) and item.plain.startswith(
                "Findings under")):
            spaced.append(Text(""))
        spaced.append(item)
    spaced.append(Text(""))
    return spaced


def render_inspect(report: Report, *, color: bool = False) -> str:
    out: list = []
    for f in report.files:
        out.extend(_inspect_one(f, color))
    return _render(out, color)
