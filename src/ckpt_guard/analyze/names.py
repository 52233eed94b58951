"""Name checks of the global classifier: is a global's name well formed, is its module the
standard library or a denied one, could it be a value a model stores, may a team trust it."""

from __future__ import annotations

import sys
from _compat_pickle import IMPORT_MAPPING

from ckpt_guard.analyze.allowlists import CLASS_NAME, IDENT, SUBMODULES
from ckpt_guard.analyze.deny_lists import DENY_MODULES, DENY_NAMES, NOT_MODULES

_DENY_LOWER = {k.lower(): v for k, v in DENY_MODULES.items()}
DENY_NAMES_LOWER = {k.lower(): v for k, v in DENY_NAMES.items()}
NOT_MODULES_LOWER = frozenset(NOT_MODULES) | frozenset(_DENY_LOWER)


def is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in IMPORT_MAPPING or top == "__builtin__"


def deny_module(module: str) -> str | None:
    """Reason if ``module`` or one of its parents (whole dotted components, compared
    case-insensitively so ``OS``/``Subprocess`` spellings are caught) is denied."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i]).lower()
        if prefix in _DENY_LOWER:
            return f"{_DENY_LOWER[prefix]} ({'.'.join(parts[:i])})"
    return None


def stored_value(name: str) -> bool:
    """Could ``name``, only referenced in torch/numpy, be a value a model stores (a function,
    a scalar type)? Not a private name, a submodule or a stdlib module re-export."""
    return not (name.startswith("_") or name in SUBMODULES or name in sys.stdlib_module_names
                or CLASS_NAME.match(name))


def untrusted_pattern(pattern: str) -> str | None:
    """Why a ``trusted-globals`` glob is refused, or ``None``. Trust is for a team's own
    classes: the pattern must start with a literal package name that is neither the standard
    library nor a module ckpt-guard knows runs code (trusting ``os.*`` or ``builtins.eval``
    would mean nothing anyway: trust never makes an ``unsafe`` global pass)."""
    top = pattern.split(".", 1)[0]
    if not IDENT.match(top):
        return ("must start with a package name (e.g. 'mycompany.models.*'), not a "
                "wildcard")
    denied = deny_module(pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
                         .rstrip(".")) or deny_module(top)
    if is_stdlib(top) or denied:
        what = denied or "the standard library"
        return (f"names {what}, which is never trusted (unsafe globals always fail; trust "
                "is for your own classes)")
    return None


def well_formed(module: str, name: str) -> str | None:
    """Why ``module``/``name`` is not a plain ASCII dotted identifier, or ``None``."""
    if not module or not name:
        return "empty module or name"
    if not (module.isascii() and name.isascii()):
        return "non-ASCII characters in a global's name (confusable spelling)"
    if not all(IDENT.match(p) for p in module.split(".")):
        return f"malformed module name {module!r} (whitespace or punctuation)"
    if not all(IDENT.match(p) for p in name.split(".")):
        return f"malformed global name {name!r} (whitespace or punctuation)"
    return None

