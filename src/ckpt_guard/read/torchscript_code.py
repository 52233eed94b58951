"""The code records of a TorchScript archive: what ``torch.jit.load`` compiles and runs.

``torch.load`` hands a zip whose records include ``constants.pkl`` to ``torch.jit.load``
(torch/serialization.py, ``_is_torchscript_zip``). Its importer (torch/csrc/jit/serialization/
import.cpp, import_source.cpp) compiles ``code/<qualifier as a path>.py`` for every
``__torch__`` class or function the pickles name, found by miniz, which compares names
case-insensitively; ``<file>.py.debug_pkl`` beside it holds source ranges, unpickled by the
C++ unpickler only to word error messages (a pickle: the zip reader scans it as one). An
archive with ``model.json`` is the legacy format, whose code may sit in any record; one with
``bytecode.pkl`` also runs, under the lite interpreter, the operators that pickle names.

Every ``.py`` record of the archive is read (any folder, any letter case, each duplicate
entry: more than torch could pick), decoded as UTF-8 and handed to
:mod:`ckpt_guard.analyze.torchscript`, bounded in bytes here (what Python's parser builds grows
with them) and in syntax nodes there. What
cannot be read becomes a record with a ``problem``, which analysis turns into an unsafe
finding: code that is not judged is never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ckpt_guard.read import pickle_vm, rebuild
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import Storage


@dataclass(frozen=True)
class CodeRecord:
    """One code record: its text, or why it has none. ``node_budget`` bounds the syntax
    nodes analysis walks over all records of the archive."""

    member: str
    text: str | None
    problem: str = ""
    node_budget: int = 0


def read_code(entries: list[tuple[str, Any, int]], member: Callable[[Any, int], bytes],
              limits: Limits, *, legacy: str | None = None,
              bytecode: tuple[str, Any] | None = None) -> list[CodeRecord]:
    """The code records among ``entries`` (``(name, entry, uncompressed size)`` in archive
    order); ``member(entry, max_bytes)`` reads one record's bytes (the zip reader's record
    access). ``legacy`` names the archive's ``model.json`` record, if torch would find one;
    ``bytecode`` is ``(name, entry)`` of its ``bytecode.pkl`` (the lite interpreter's)."""
    out: list[CodeRecord] = []
    budget = limits.max_code_nodes
    if bytecode is not None:
        out.append(_bytecode_operators(*bytecode, member, limits))
    if legacy is not None:
        out.append(CodeRecord(legacy, None, "legacy TorchScript archive "
                              "(model.json): torch.jit.load runs code from whatever records "
                              "it names; not judged", budget))
    left = limits.max_code_bytes
    for name, entry, size in entries:
        if not name.lower().endswith(".py"):
            continue
        if size > limits.max_code_bytes // 4:
            out.append(CodeRecord(name, None, f"code record of {size} bytes (limit "
                                  f"{limits.max_code_bytes // 4}): too large to judge", budget))
            continue
        if size > left:
            out.append(CodeRecord(name, None, f"TorchScript code over {limits.max_code_bytes} "
                                  "bytes in all: too large to judge", budget))
            continue
        left -= size
        try:
            raw = member(entry, size)
        except UnreadableError as e:
            out.append(CodeRecord(name, None, f"unreadable record: {e}", budget))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            out.append(CodeRecord(name, None, f"not UTF-8 text ({e.reason} at byte "
                                  f"{e.start})", budget))
            continue
        out.append(CodeRecord(name, text, "", budget))
    return out


_OPERATOR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*::[A-Za-z_][A-Za-z0-9_]*\Z")


def _bytecode_operators(name: str, entry: Any, member: Callable[[Any, int], bytes],
                        limits: Limits) -> CodeRecord:
    """``bytecode.pkl`` (``_save_for_lite_interpreter``): the lite interpreter runs the
    operators its ``operators`` tables name (``("aten::add", "Tensor", 3)``), ``__setstate__``
    included, without compiling ``code/``. Every ``ns::op`` string of the pickle is written
    as the call ``ops.ns.op`` a code record would make, so the same allowlist judges it."""
    own: dict[str, Storage] = {}  # its tensors (a frozen module's constants) are only read

    def persistent_load(pid: Any) -> Any:
        return rebuild.storage_from_pid(pid, own, limits)

    try:
        data = member(entry, limits.max_pickle_bytes)
        res = pickle_vm.run(data, 0, persistent_load=persistent_load, limits=limits,
                            member=name)
    except UnreadableError as e:
        return CodeRecord(name, None, f"unreadable lite-interpreter bytecode: {e}",
                          limits.max_code_nodes)
    ops: dict[str, None] = {}
    todo, seen = [res.root], 0
    while todo:  # iterative: the tree is as deep as the pickle made it
        node = todo.pop()
        seen += 1
        if seen > limits.max_code_nodes:
            return CodeRecord(name, None, "lite-interpreter bytecode too large to judge",
                              limits.max_code_nodes)
        if isinstance(node, str):
            if _OPERATOR.match(node):
                ns, op = node.split("::")
                ops[f"ops.{ns}.{op}"] = None
        elif isinstance(node, (tuple, list)):
            todo.extend(node)
        elif isinstance(node, dict):
            todo.extend(node.keys())
            todo.extend(node.values())
    return CodeRecord(f"{name} (operators)", "".join(f"{o}\n" for o in ops), "",
                      limits.max_code_nodes)
