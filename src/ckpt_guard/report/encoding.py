"""Output that never crashes on a console that cannot encode it.

Reports use a few non-ASCII marks (``✗``, ``→``, ``…``, box rules, the Markdown icons) and
print file paths as they are. A Windows console (cp1252), ``PYTHONIOENCODING=ascii`` or a
``LANG=C`` terminal cannot encode them, and a ``UnicodeEncodeError`` there would be a
traceback and a wrong exit code. :func:`install` gives the standard streams an error handler
that writes an ASCII stand-in for each mark and a backslash escape for anything else, so
every command degrades to ASCII instead of failing. JSON and SARIF are ASCII already
(``json.dumps`` escapes), so their data never changes.
"""

from __future__ import annotations

import codecs
import sys

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import TextIO

HANDLER = "ckpt-guard-ascii"

ASCII = {
    "✗": "x", "✓": "v", "→": "->", "←": "<-", "⇒": "=>", "…": "...", "—": "-", "–": "-",
    "·": "*", "•": "*", "Δ": "delta", "≥": ">=", "≤": "<=", "×": "x", "±": "+/-",
    "❌": "[x]", "✅": "[ok]", "⚠": "[!]", "🔧": "[fixed]", "💥": "[error]", "\ufe0f": "",
    "’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " ",
}


def _stand_in(ch: str) -> str:
    rep = ASCII.get(ch)
    if rep is not None:
        return rep
    code = ord(ch)
    if 0x2500 <= code <= 0x257F:  # box drawing: rules and borders of rich tables
        return "|" if ch in "│┃║╎╏┆┇┊┋" else ("+" if ch in "┼╋┬┴├┤┌┐└┘╭╮╯╰" else "-")
    if 0x2580 <= code <= 0x259F:  # block elements (progress bars)
        return "#"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _handler(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return "".join(_stand_in(c) for c in err.object[err.start:err.end]), err.end


codecs.register_error(HANDLER, _handler)


def to_ascii(text: str) -> str:
    """``text`` as the fallback writes it on an ASCII console."""
    return text.encode("ascii", HANDLER).decode("ascii")


def install(*streams: TextIO) -> None:
    """Let ``streams`` (default: stdout and stderr) fall back to ASCII stand-ins instead of
    raising on characters their encoding lacks. A no-op for streams that cannot be
    reconfigured (already replaced by a caller, e.g. a test's capture)."""
    for stream in streams or (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        try:
            reconfigure(errors=HANDLER)
        except (ValueError, OSError):  # closed or detached: nothing will be written anyway
            continue
