"""Workflow commands, outputs and the step summary — the runner's file and stdout protocols.

Escaping follows actions/toolkit (``command.ts``): data escapes ``%``, ``\\r``, ``\\n``;
properties also ``:`` and ``,``. Outputs use the ``name<<DELIMITER`` form so any value is safe.
Plain log lines carry file names from pull requests: the runner would run a line that starts
with ``::`` (after leading blanks) or holds ``##[`` as a command, so :meth:`Workflow.info`
defuses both. Registered secrets are replaced by ``***`` in everything written.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

SUMMARY_LIMIT = 1024 * 1024  # GITHUB_STEP_SUMMARY is capped at 1 MiB per step
ANNOTATION_LIMIT = 10  # the UI shows at most 10 error and 10 warning annotations per step


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


_ZWSP = "\u200b"  # not whitespace to the runner's TrimStart, invisible in the log


def defuse(line: str) -> str:
    """A log line the runner will not take for a workflow command (v2 ``::cmd::`` at the
    start, v1 ``##[cmd]`` anywhere)."""
    line = line.replace("##[", f"##{_ZWSP}[")
    return _ZWSP + line if line.lstrip().startswith("::") else line


class Workflow:
    """Talks to the runner: annotations and groups on stdout, outputs and summary in files."""

    def __init__(self, env: Mapping[str, str] | None = None, out: TextIO | None = None) -> None:
        env = os.environ if env is None else env
        self.out = out if out is not None else sys.stdout
        self.output_file = env.get("GITHUB_OUTPUT") or None
        self.summary_file = env.get("GITHUB_STEP_SUMMARY") or None
        self.outputs: dict[str, str] = {}
        self._secrets: list[str] = []

    def mask(self, secret: str) -> None:
        """Never write ``secret`` (a token) anywhere: it becomes ``***``."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- stdout commands -------------------------------------------------------------
    def command(self, name: str, message: str, **props: object) -> None:
        p = ",".join(f"{k}={escape_property(self._redact(str(v)))}" for k, v in props.items()
                     if v is not None)
        self.out.write(f"::{name}{' ' + p if p else ''}::{escape_data(self._redact(message))}\n")
        self.out.flush()

    def error(self, message: str, *, file: str | None = None, line: int | None = None,
              title: str | None = None) -> None:
        self.command("error", message, file=file, line=line, title=title)

    def warning(self, message: str, *, file: str | None = None, line: int | None = None,
                title: str | None = None) -> None:
        self.command("warning", message, file=file, line=line, title=title)

    def notice(self, message: str, *, file: str | None = None, title: str | None = None) -> None:
        self.command("notice", message, file=file, title=title)

    def info(self, message: str) -> None:
        lines = self._redact(message).splitlines() or [""]
        self.out.write("".join(defuse(line) + "\n" for line in lines))
        self.out.flush()

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        self.out.write(f"::group::{escape_data(self._redact(title))}\n")
        try:
            yield
        finally:
            self.out.write("::endgroup::\n")
            self.out.flush()

    # -- files -----------------------------------------------------------------------
    def set_output(self, name: str, value: object) -> None:
        text = self._redact(str(value))
        self.outputs[name] = text
        if not self.output_file:
            return
        delim = f"ckpt_guard_{uuid.uuid4().hex}"
        while delim in text:  # pragma: no cover - a uuid in a value is astronomically unlikely
            delim = f"ckpt_guard_{uuid.uuid4().hex}"
        with open(self.output_file, "a", encoding="utf-8") as fh:
            fh.write(f"{name}<<{delim}\n{text}\n{delim}\n")

    def add_summary(self, markdown: str) -> bool:
        """Append to the step summary, truncated to what is left of the 1 MiB cap.
        Returns False when there is no summary file."""
        if not self.summary_file:
            return False
        path = Path(self.summary_file)
        used = path.stat().st_size if path.exists() else 0
        room = SUMMARY_LIMIT - used - 1
        data = self._redact(markdown).encode("utf-8")
        if len(data) > room:
            note = (b"\n\n> **Truncated**: the step summary is limited to 1 MiB; "
                    b"the full report is in the JSON report.\n")
            data = data[: max(0, room - len(note))].decode("utf-8", "ignore").encode() + note
            data = data[:max(0, room)]
        with open(path, "ab") as fh:
            fh.write(data + b"\n")
        return True
