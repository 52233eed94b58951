"""Remember policy texts that validated, so the next run skips YAML and JSON Schema.

Validating a policy file imports jsonschema and pyyaml (~70 ms of every run, more than a
cold ``check`` of a small file takes otherwise). A policy file rarely changes: once a text
has parsed and validated (and a policy was built from it), its parsed document is stored in
the user's cache, keyed by the exact text and by this ckpt-guard's schema. A later run with
the same text builds its policy from that document; any other text (one byte differs, or
another schema) is parsed and validated as before, and an invalid text is never stored — so
error messages, with their lines and columns, are unchanged.

Nothing here can fail a run: an unreadable, unwritable or corrupt cache is a miss.
``CKPT_GUARD_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported by a check at run time (tests/cli/test_cold_imports)
    from typing import Any

_VERSION = 1  # of this cache's entries


def _base() -> Path:
    """The user's cache directory, following the platform's convention."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _schema_id() -> list[Any]:
    """What the validity of a text depends on besides the text: the shipped schema (its
    size and time, so an edited checkout does not reuse another schema's verdict) and
    the package version."""
    from ckpt_guard import __version__

    st = os.stat(Path(__file__).with_name("schema.json"))
    return [_VERSION, __version__, st.st_size, st.st_mtime_ns]


def _entry(text: str) -> Path:
    data = text.encode("utf-8", "surrogatepass")
    return _base() / "ckpt-guard" / "policies" / f"{zlib.crc32(data):08x}-{len(data)}.json"


def _enabled() -> bool:
    return os.environ.get("CKPT_GUARD_NO_CACHE", "") in ("", "0")


def lookup(text: str) -> Any | None:
    """The parsed document of ``text`` when it validated before under this schema."""
    if not _enabled():
        return None
    try:
        raw = _entry(text).read_text("utf-8")
        entry = json.loads(raw)
        if entry.get("schema") == _schema_id() and entry.get("text") == text:
            return entry["data"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    return None


def store(text: str, data: Any) -> None:
    """Remember that ``text`` parsed to ``data`` and validated (a valid policy was built)."""
    if not _enabled():
        return
    try:
        # Only documents JSON keeps exactly (a YAML timestamp, say, would come back a
        # string): anything else is simply parsed again next time.
        if json.loads(json.dumps(data)) != data:
            return
        entry = _entry(text)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"schema": _schema_id(), "text": text, "data": data}),
                       "utf-8")
        os.replace(tmp, entry)
    except (OSError, ValueError, TypeError):
        pass
