"""Classify the globals a pickle references: ``safe``, ``needs-code`` or ``unsafe``.

An ALLOWLIST decides what is safe; nothing unknown is ever silently safe. A global is judged
by its name AND by how unpickling uses it (:data:`ckpt_guard.read.checkpoint.USES`, recorded
by the reader): unpickling runs what it calls (REDUCE/INST/OBJ), constructs (NEWOBJ) or builds
(BUILD → ``__setstate__``, SETITEM → ``__setitem__``), and what it hands to such a call; a
function only stored as a value (``self.act = F.silu`` on a module pickled whole) runs nothing.
So, outside the known-dangerous lists below:

* a CapWords name (or a listed lowercase class) is plausibly a class: ``needs-code``, whatever
  is done with it (its own code runs: the residual risk of ``needs-code``);
* a lowercase name that is called or handed to a call is a function running at load time:
  ``unsafe`` unless allowlisted (``typing_extensions.evaluate_forward_ref`` and
  ``get_type_hints`` evaluate Python source; nobody can list every such function, so none is
  trusted);
* a lowercase name only referenced (or constructed with NEWOBJ, which CPython allows for types
  only) runs nothing at load: ``needs-code``.

* ``safe`` — exactly what torch's default ``weights_only=True`` unpickler accepts (torch 2.13's
  ``_weights_only_unpickler._get_allowed_globals``: tensor rebuild functions, storage and tensor
  types, dtypes, ``torch.Size``/``torch.device``/``Parameter``, ``OrderedDict``/``Counter``,
  ``_codecs.encode``, ``builtins.set/bytearray/complex``) under the names Python's unpickler
  resolves (Python 2 names such as ``__builtin__.set`` are mapped as ``fix_imports`` does).
  Loading such a global cannot run code.
* ``needs-code`` — the file will not load with ``weights_only=True``, but the global is not a
  known way to run attacker code: custom classes (``ultralytics.nn.tasks.DetectionModel``,
  ``models.yolo.Model``, ``__main__.Net``), ``torch.nn`` module classes of full-module pickles
  (they ship with torch; constructing them runs no attacker code, but the file needs
  ``weights_only=False``), and a short list of stdlib/numpy value types (``argparse.Namespace``
  of RF-DETR, ``datetime``, ``pathlib`` paths, numpy arrays and scalars) that
  ``torch.serialization.add_safe_globals`` can allow. The reason says which.
* ``unsafe`` — everything that executes code, touches files/network/processes, imports,
  resolves attributes (``getattr``/``operator``/``functools``/dotted names), or unpickles a
  nested payload; every stdlib module not on the short value list (the peers' bypass history
  is a list of stdlib functions nobody thought to deny); non-allowlisted parts of ``torch`` and
  ``numpy`` (``torch.load``, ``torch.jit``, ``torch._C``, ``numpy.load``, …); names that are not
  plain ASCII identifiers (whitespace, newlines, confusables); the reader's markers
  ``<computed>``/``<extension>``/``<call>``. Names on these lists are unsafe however they
  are used: a checkpoint never needs them, and a class whose code does run (``needs-code``)
  could call a stored one.

Where it lives: the tables in :mod:`ckpt_guard.analyze.allowlists` (and ``deny_lists``,
``known_classes``), name checks in :mod:`ckpt_guard.analyze.names`, the judgement of one name
by its use in :mod:`ckpt_guard.analyze.judgement`; this module assembles the verdict.
"""

from __future__ import annotations

import functools
import sys
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Iterable

from ckpt_guard.analyze.allowlists import (
    NUMPY_VALUES,
    SAFE_GLOBALS,
    STDLIB_VALUES,
    TORCHSCRIPT_HELPERS,
)
from ckpt_guard.analyze.judgement import (
    CALL,
    LOOK,
    NEEDS_CODE,
    NEW,
    REF,
    SAFE,
    UNSAFE,
    judge,
    use_level,
)
from ckpt_guard.analyze.names import untrusted_pattern, well_formed


def classify(module: str, name: str, uses: Iterable[str] | None = None) -> tuple[str, str]:
    """Return ``(safety, reason)`` with ``safety`` in ``("safe", "needs-code", "unsafe")``.

    ``module``/``name`` are exactly as the pickle spelled them (no stripping: a stray space
    or newline is itself a sign of tampering). Python 2 spellings are judged both as written
    and as ``fix_imports`` maps them (the worse verdict wins when both spellings import).
    ``uses`` is what unpickling does with the global (:attr:`GlobalUse.uses
    <ckpt_guard.read.checkpoint.GlobalUse.uses>`; empty: only referenced); ``None`` judges
    the worst case, a call.
    """
    if not isinstance(module, str) or not isinstance(name, str):
        return UNSAFE, "global name is not a string (computed at load time)"
    return _classify(module, name, use_level(uses))


@functools.lru_cache(maxsize=8192)
def _classify(module: str, name: str, level: str) -> tuple[str, str]:
    if module.startswith("<"):
        what = {"<computed>": "STACK_GLOBAL with names computed at load time",
                "<extension>": "extension-registry reference (EXT1/EXT2/EXT4)",
                "<call>": "call of a non-global object (REDUCE on a computed callable)",
                "<mutate>": "BUILD/SETITEM/APPEND on a global object itself (monkeypatching "
                            "a class, function or module)",
                "<ambiguous-archive>": "ambiguous zip archive: torch may unpickle other "
                                       "bytes than those checked",
                "<container>": "torch.load could unpickle bytes ckpt-guard cannot pin down "
                               "(fails closed)"}
        return UNSAFE, what.get(module, f"unresolvable global {module}")
    bad = well_formed(module, name)
    if bad:
        return UNSAFE, bad
    mapped = NAME_MAPPING.get((module, name))
    if mapped is None and module in IMPORT_MAPPING:
        mapped = (IMPORT_MAPPING[module], name)
    if mapped is None:
        return judge(module, name, level)
    verdict = judge(*mapped, level)
    if module.split(".")[0] not in sys.stdlib_module_names:
        return verdict  # a Python 2 name (``__builtin__``): only its mapped form resolves
    # A name that is both a Python 3 module and a Python 2 alias: the worse reading wins.
    order = {SAFE: 0, NEEDS_CODE: 1, UNSAFE: 2}
    return max((judge(module, name, level), verdict), key=lambda v: order[v[0]])


__all__ = ["CALL", "LOOK", "NEEDS_CODE", "NEW", "NUMPY_VALUES", "REF",
           "SAFE", "SAFE_GLOBALS", "STDLIB_VALUES", "TORCHSCRIPT_HELPERS", "UNSAFE", "classify",
           "untrusted_pattern", "use_level"]
