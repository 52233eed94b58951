"""Per-use judgement of one global (Python 3 spelling, well formed): its name against the
allowlist tables and deny lists, and what unpickling does with it (called, constructed,
only referenced). :mod:`ckpt_guard.analyze.safety` explains the model and assembles the
verdict (reader markers, malformed names, Python 2 spellings)."""

from __future__ import annotations

from collections.abc import Iterable

from ckpt_guard.analyze.allowlists import (
    CLASS_NAME,
    LOOKUPS,
    NUMPY_DTYPE_CLASS,
    NUMPY_VALUES,
    SAFE_GLOBALS,
    STDLIB_VALUES,
    TORCH_CLASS_PACKAGES,
    TORCH_FUNCS,
    TORCH_VALUE_MODULES,
    TORCHSCRIPT_HELPERS,
)
from ckpt_guard.analyze.deny_lists import FRAMEWORKS
from ckpt_guard.analyze.known_classes import LOWERCASE_CLASSES, known_class
from ckpt_guard.analyze.names import (
    DENY_NAMES_LOWER,
    NOT_MODULES_LOWER,
    deny_module,
    is_stdlib,
    stored_value,
)
from ckpt_guard.read.checkpoint import CALLED, CONSTRUCTED, LOOKUP, PASSED, STATE

SAFE, NEEDS_CODE, UNSAFE = "safe", "needs-code", "unsafe"

# How a global is used, worst first: called (or handed to a call), constructed, referenced;
# ``lookup``: only in the two lookups torch.save writes (``LOOKUPS``).
CALL, NEW, REF, LOOK = "call", "new", "ref", "lookup"


def use_level(uses: Iterable[str] | None) -> str:
    """The worst of ``uses`` (:data:`~ckpt_guard.read.checkpoint.USES`): ``call`` when called
    or passed to a call, ``new`` when constructed or built, ``ref`` when only referenced.
    ``None`` (nothing known) is the worst case, ``call``."""
    if uses is None:
        return CALL
    uses = set(uses)
    if uses == {LOOKUP}:
        return LOOK
    if CALLED in uses or PASSED in uses:
        return CALL
    if CONSTRUCTED in uses or STATE in uses:
        return NEW
    return REF


def judge(module: str, name: str, level: str) -> tuple[str, str]:
    """``(safety, reason)`` of the well-formed global ``module.name`` used at ``level``
    (:func:`use_level`): allowlists first, then deny lists, then what its use runs."""
    qual = f"{module}.{name}"
    if qual in SAFE_GLOBALS:
        return SAFE, "allowed by torch's weights_only loader"
    if level == LOOK:
        if qual in LOOKUPS:
            return NEEDS_CODE, (f"{LOOKUPS[qual]}; the result is only stored (calling it "
                                "would be unsafe), but weights_only=True rejects it")
        level = CALL  # nothing else is looked up this way: judge it as called
    if "." in name:
        return UNSAFE, (f"attribute chain {name!r}: resolving it walks attributes "
                        "(getattr-style access), which checkpoints never need")
    if name.startswith("__") and name.endswith("__"):
        return UNSAFE, f"dunder attribute {name!r} reaches interpreter internals"
    if qual in STDLIB_VALUES:
        return NEEDS_CODE, (f"{STDLIB_VALUES[qual]}: runs no third-party code, but "
                            "weights_only=True rejects it (torch.serialization.add_safe_globals)")
    if qual in NUMPY_VALUES or NUMPY_DTYPE_CLASS.match(qual):
        return NEEDS_CODE, (f"{NUMPY_VALUES.get(qual, 'numpy dtype class')}: needs numpy and "
                            "weights_only=False or torch.serialization.add_safe_globals")
    if qual in TORCHSCRIPT_HELPERS:
        return NEEDS_CODE, ("TorchScript container helper (handled natively by torch.jit.load; "
                            "the archive needs torch.jit.load, not torch.load)")
    lname = name.lower()
    if lname in DENY_NAMES_LOWER:
        return UNSAFE, f"{name}: {DENY_NAMES_LOWER[lname]}"
    if lname in NOT_MODULES_LOWER:
        return UNSAFE, f"{name!r} re-exports a dangerous module object"
    known = known_class(qual)
    if known is not None:
        return NEEDS_CODE, (f"known framework class: {known}; loading runs its code "
                            "(weights_only=True rejects it)")
    if level == REF and module in TORCH_VALUE_MODULES and stored_value(name):
        return NEEDS_CODE, ("torch function stored as a value (e.g. a module's activation): "
                            "only referenced, loading runs nothing, but weights_only=True "
                            "rejects it")
    denied = deny_module(module)
    if denied:
        return UNSAFE, denied
    if module == "__torch__.torch.classes" or module.startswith("__torch__.torch.classes."):
        # A custom C++ class: torch.jit.load's unpickler runs its native __setstate__.
        from ckpt_guard.analyze.torchscript import custom_class_reason

        unknown = custom_class_reason(f"{module[len('__torch__.torch.classes.'):]}.{name}"
                                      if module != "__torch__.torch.classes" else name)
        if unknown:
            return UNSAFE, unknown
    if module == "__torch__" or module.startswith("__torch__."):
        return NEEDS_CODE, ("TorchScript class compiled from the archive's code/ (runs as "
                            "TorchScript when the module is used)")
    top = module.split(".")[0]
    if is_stdlib(top):
        return UNSAFE, (f"standard-library global {qual} is not one a checkpoint needs "
                        "(allowlist only)")
    if top == "torch":
        if qual in TORCH_FUNCS and level == REF:
            return NEEDS_CODE, "torch function stored by a full-module pickle"
        if CLASS_NAME.match(name) and any(module == p or module.startswith(p + ".")
                                          for p in TORCH_CLASS_PACKAGES):
            return NEEDS_CODE, ("torch class of a full-module pickle: ships with torch, but "
                                "the file needs weights_only=False")
        what = "called" if level == CALL else "constructed"
        return UNSAFE, f"torch internal {qual} {what} at load time: not needed by checkpoints"
    if top == "numpy":
        if level == REF and stored_value(name):
            return NEEDS_CODE, (f"numpy object {qual} stored as a value: only referenced, "
                                "loading runs nothing, but weights_only=True rejects it")
        return UNSAFE, f"numpy internal {qual} is not needed by checkpoints"
    is_class = bool(CLASS_NAME.match(name)) or qual in LOWERCASE_CLASSES
    if is_class:
        return NEEDS_CODE, (f"custom class from package {top!r}: loading runs that package's "
                            "code (weights_only=True rejects it)")
    if level == CALL:
        framework = (f" of framework {top!r} (checkpoints store its classes, not its "
                     "functions)" if top in FRAMEWORKS else "")
        return UNSAFE, (f"function {qual}{framework} is called at load time: unpickling runs "
                        "it (only allowlisted functions are; a function of any package can "
                        "evaluate code, e.g. typing_extensions.evaluate_forward_ref)")
    if level == NEW:
        return NEEDS_CODE, (f"class {qual} from package {top!r} (constructed with NEWOBJ, "
                            "which only takes a class): loading runs that package's code")
    return NEEDS_CODE, (f"function {qual} stored as a value: only referenced, loading runs "
                        f"nothing, but needs package {top!r} importable (weights_only=True "
                        "rejects it)")
