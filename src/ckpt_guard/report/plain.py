"""The check table as plain text without importing rich (~25 ms of a cold ``check``).

Pipes, CI logs and pre-commit get plain text, and ``check`` is run there most; what is
rendered here is byte for byte what :mod:`ckpt_guard.report.text` renders through rich
(tests compare both). Anything rich would treat specially — markup brackets in a cell,
control or wide characters — returns ``None``: the caller renders it through rich then.
"""

from __future__ import annotations

import os

from ckpt_guard.report.model import FileReport, Report
from ckpt_guard.report.units import format_bytes
from ckpt_guard.vocab import Action, Status

STATUS_STYLE = {Status.PASS: ("PASS", "green"), Status.WARN: ("WARN", "yellow"),
                Status.FAIL: ("FAIL", "red"), Status.ERROR: ("ERROR", "red"),
                Status.FIXED: ("FIXED", "cyan")}
DRY_RUN_FIXED = "WOULD FIX"  # status label of a `fixed` file in a dry run: nothing was written
ACTION_MARK = {Action.FAIL: ("✗", "red"), Action.FIX: ("✗", "red"), Action.WARN: ("!", "yellow")}
NUMERIC = ("Size", "Bytes", "Tensor bytes", "Share", "Removable", "After", "Saved", "Tensors")
# Dropped, in this order, when the check table would not fit the terminal: the path, sizes
# and status matter most (`inspect` shows the format and framework).
OPTIONAL = ("Format", "Framework")
PLAIN_WIDTH = 110  # the width plain text is laid out in, unless COLUMNS says otherwise
# Non-ASCII characters rich measures as one cell, as they are: the marks above and
# punctuation messages use. Anything else goes through rich.
_ONE_CELL = frozenset("✗·→←…×≥≤—–‘’“”°±")


def plain_width() -> int:
    return int(os.environ.get("COLUMNS", "0") or 0) or PLAIN_WIDTH


def dry_run(f: FileReport) -> bool:
    return bool((f.details.get("fix") or {}).get("dry_run"))


def status_label(f: FileReport) -> tuple[str, str]:
    label, style = STATUS_STYLE.get(f.status, (f.status.upper(), ""))
    if f.status == Status.FIXED and dry_run(f):
        label = DRY_RUN_FIXED
    return label, style


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def summary_text(report: Report) -> str:
    s = report.summary()
    text = ", ".join([f"{plural(s['files'], 'file')} checked", f"{s['failed']} failed",
                      f"{s['warned']} warned", f"{format_bytes(s['bytes_total'])} in all"]) + "."
    if "bytes_saved" in s:
        if any(dry_run(f) for f in report.files):
            return text + (f" Dry run: {s.get('fixed', 0)} would be fixed, saving "
                           f"{format_bytes(s['bytes_saved'])}; nothing was written.")
        return text + f" {s.get('fixed', 0)} fixed, {format_bytes(s['bytes_saved'])} saved."
    removable = s["bytes_removable"]
    if not removable:
        return text
    # What `fix` removes under this policy: the findings of rules set to `fix` (the rest of
    # bytes_removable needs the policy changed first — saying "fix could remove" would lie).
    fixable = min(removable, sum(x.bytes for f in report.files for x in f.findings
                                 if x.fixable))
    if fixable >= removable:
        return text + f" `ckpt-guard fix` would remove {format_bytes(removable)}."
    if fixable:
        return text + (f" `ckpt-guard fix` would remove {format_bytes(fixable)} of the "
                       f"{format_bytes(removable)} removable (the rest needs its rules set to "
                       f"`fix`).")
    return text + (f" {format_bytes(removable)} is removable: set its rules to `fix` in the "
                   f"policy, then run `ckpt-guard fix`.")


def check_rows(report: Report) -> list[dict[str, str]]:
    """One row per file: column → cell text (the status as its label)."""
    fixing = any(f.size_after is not None for f in report.files)
    rows: list[dict[str, str]] = []
    for f in report.files:
        row = {"File": f.path, "Format": f.format, "Framework": f.framework,
               "Size": format_bytes(f.size_bytes)}
        if fixing:
            saved = f.size_bytes - f.size_after if f.size_after is not None else 0
            row["After"] = format_bytes(f.size_after) if f.size_after is not None else "-"
            row["Saved"] = format_bytes(saved) if saved else "-"
        else:
            row["Removable"] = format_bytes(f.bytes_removable) if f.bytes_removable else "-"
        row["Status"] = status_label(f)[0]
        rows.append(row)
    return rows


def fitting(cols: list[str], rows: list[dict], width: int) -> tuple[list[str], int]:
    """``cols`` without the optional columns there is no room for in ``width``, and the
    width the table needs without wrapping (three characters per column plus one)."""
    def needed(cs: list[str]) -> int:
        cells = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in cs]
        return sum(cells) + 3 * len(cs) + 1
    for optional in OPTIONAL:
        if needed(cols) <= width:
            break
        cols = [c for c in cols if c != optional]
    return cols, needed(cols)


def finding_lines(f: FileReport) -> list[str]:
    """The file's findings and notes as plain lines, two spaces in."""
    out = []
    for x in f.findings:
        mark = ACTION_MARK.get(x.action, ("·", ""))[0]
        out.append(f"  {mark} {x.rule}{' (fixable)' if x.fixable else ''}: {x.message}")
    out += [f"  note: {n}" for n in f.notes]
    return out


def _one_cell_each(s: str) -> bool:
    return s.isprintable() and (s.isascii() or all(c.isascii() or c in _ONE_CELL for c in s))


def render_check_plain(report: Report) -> str | None:
    """What ``render_check(report, color=False)`` renders, or ``None`` when only rich can
    say (see the module docstring)."""
    if not report.files:
        return "No weight files to check.\n"
    rows = check_rows(report)
    cells = [c for row in rows for c in row.values()]
    if not all(_one_cell_each(c) and "[" not in c for c in cells):
        return None  # rich parses markup in table cells
    lines: list[str] = []
    for f in report.files:
        if f.findings or f.notes:
            lines.append(f.path)
            lines.extend(finding_lines(f))
    lines.append(summary_text(report))
    if not all(_one_cell_each(s) for s in lines):
        return None
    cols, _ = fitting(list(rows[0]), rows, plain_width())
    widths = [max([len(c)] + [len(r[c]) for r in rows]) for c in cols]

    def line(cells: list[str]) -> str:
        return "   ".join(c.rjust(w) if col in NUMERIC else c.ljust(w)
                           for c, w, col in zip(cells, widths, cols, strict=True))

    table = [line(cols), "─" * (sum(widths) + 3 * (len(cols) - 1))]
    table += [line([r[c] for c in cols]) for r in rows]
    return "".join(s.rstrip() + "\n" for s in table + lines)
