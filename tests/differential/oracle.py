"""The differential oracle: what torch unpickles (asked in one persistent subprocess) against
what ckpt-guard judged (``Checkpoint.pickles``, in this process).

Rules, for one file (:func:`disagreements`):

* ``unjudged`` — a pickle torch unpickled to its STOP whose bytes (sha256) ckpt-guard did not
  judge, while ckpt-guard neither failed to read the file nor called it ``unsafe-pickle``:
  a parse differential (the bytes we judge are not the bytes torch runs).
* ``passed`` — torch resolved a global outside its ``weights_only`` allowlist (the shim saw
  it: real torch would have imported and maybe called it) and ckpt-guard's status is
  ``pass``.
* ``missed-global`` — the same, and ckpt-guard neither failed the file nor reported that
  global (by name) as anything but ``safe``.
* ``jit-format`` — torch handed the file to ``torch.jit.load`` (TorchScript: code runs at
  load) while ckpt-guard did not read it as ``torchscript``; ``jit-pass`` — and ckpt-guard's
  status is ``pass`` (a TorchScript archive is code, issue class 6).

A failure to read (``error``) or an ``unsafe-pickle`` finding is failing closed: no rule
applies then. A torch failure is no excuse: the pickles torch unpickled before failing ran.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("torch_child.py")
_FAILING_RULES = {"unsafe-pickle"}


class OracleTimeout(Exception):
    pass


class TorchOracle:
    """One torch subprocess fed many files (torch imports once: ~2 s)."""

    def __init__(self, cwd: str | None = None) -> None:
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # torch and the shim only: nothing of ckpt_guard
        # cwd: a scratch directory (torch's legacy loader may write a .patch file to cwd).
        return subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, cwd=self.cwd, env=env)

    def ask(self, path: str | os.PathLike[str], timeout: float = 60.0) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"path": os.fspath(path)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()  # hung or died (a pickle bomb under torch): a fresh child next time
            raise OracleTimeout(f"torch did not answer for {path} within {timeout} s")
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class View:
    """ckpt-guard's verdict on one path (built-in policy)."""

    status: str
    format: str
    rules: set[str] = field(default_factory=set)
    shas: set[str] = field(default_factory=set)
    globals: dict[str, set[str]] = field(default_factory=dict)  # qualname -> safety classes
    error: str = ""

    @property
    def fails_closed(self) -> bool:
        return self.status == "error" or bool(self.rules & _FAILING_RULES)


def ckpt_view(path: str | os.PathLike[str]) -> View:
    from ckpt_guard.app.check import Target, examine
    from ckpt_guard.policy.load import builtin_policy

    p = os.fspath(path)
    fr, analysis = examine(Target(p, os.path.abspath(p), os.path.basename(p)),
                           builtin_policy(), details=True)
    view = View(status=fr.status, format=fr.format, rules={f.rule for f in fr.findings})
    if analysis is None:
        view.error = "; ".join(f.message for f in fr.findings)
        return view
    view.shas = {p["sha256"] for p in fr.details.get("pickles", [])}
    for g in fr.details.get("globals", []):
        view.globals.setdefault(g["name"], set()).add(g["safety"])
    _add_child_globals(analysis, view)
    return view


def _add_child_globals(analysis: Any, view: View) -> None:
    for _rel, child, _hint in getattr(analysis, "children", []):
        if isinstance(child, Exception):
            continue
        for g in child.globals:
            view.globals.setdefault(g.use.qualname, set()).add(g.safety)
        _add_child_globals(child, view)


@dataclass(frozen=True)
class Disagreement:
    kind: str  # unjudged | passed | missed-global | jit-format | jit-pass | harness
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def nonsafe_globals(answer: dict[str, Any]) -> list[str]:
    return [f"{m}.{n}" for p in answer["pickles"] for m, n, safe in p["globals"] if not safe]


def disagreements(answer: dict[str, Any], view: View) -> list[Disagreement]:
    out: list[Disagreement] = []
    for i, p in enumerate(answer["pickles"]):
        if p.get("tell_agrees") is False:  # the tap and the stream's position disagree
            out.append(Disagreement("harness", f"pickle #{i}: bytes read != tell() delta"))
    if answer["outcome"] == "jit" and view.format != "torchscript" and not view.fails_closed:
        out.append(Disagreement("jit-format", f"torch runs it as TorchScript; ckpt-guard read "
                                f"it as {view.format} ({view.status})"))
    if answer["outcome"] == "jit" and view.status == "pass":
        out.append(Disagreement("jit-pass", "torch runs its TorchScript at load (class 6); "
                                "ckpt-guard: pass"))
    if view.fails_closed:
        return out
    for i, p in enumerate(answer["pickles"]):
        if p["complete"] and p["sha256"] is not None and p["sha256"] not in view.shas:
            out.append(Disagreement(
                "unjudged", f"pickle #{i} ({p['source']}, {p['stop_end']} bytes of "
                f"{p['consumed']} consumed, starts {p['head'][:32]}) was not judged"))
    bad = nonsafe_globals(answer)
    if bad and view.status == "pass":
        out.append(Disagreement("passed", f"torch resolved {', '.join(sorted(set(bad)))}; "
                                "ckpt-guard: pass"))
    for g in sorted(set(bad)):
        # torch's UnpicklerWrapper renames module torch.tensor to torch._tensor before the
        # shim sees it; ckpt-guard reports the name as written.
        spelled = {g, g.replace("torch._tensor.", "torch.tensor.", 1)}
        if not any(view.globals.get(s, set()) - {"safe"} for s in spelled):
            out.append(Disagreement("missed-global", f"{g} is not reported as needs-code/unsafe "
                                    f"(ckpt-guard: {view.status})"))
    return out


def compare(oracle: TorchOracle, path: str | os.PathLike[str],
            timeout: float = 60.0) -> tuple[dict[str, Any], View, list[Disagreement]]:
    answer = oracle.ask(path, timeout)
    view = ckpt_view(path)
    return answer, view, disagreements(answer, view)
