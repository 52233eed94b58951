"""Glob matching, two kinds:

* **file globs** (``include``, ``exclude``, ``overrides[].paths``): gitignore semantics via
  :mod:`pathspec` — ``*.pt`` matches at any depth, ``models/*.pt`` is anchored to the policy
  file's directory, ``**`` crosses folders, ``dir/`` matches everything below ``dir``, and a
  leading ``!`` re-includes. Paths are POSIX, relative to the policy file's directory (the
  repository root for the built-in policy).
* **tensor globs** (``fp32-payload.keep-fp32``): :func:`fnmatch.fnmatchcase` on the tensor's
  dotted path (``model.0.bn.weight``), **case-insensitive**, and ``*`` also matches dots — so
  ``*norm*`` catches ``encoder.layer.0.LayerNorm.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import PurePath, PurePosixPath

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    import pathspec


def compile_globs(patterns: Iterable[str]) -> pathspec.GitIgnoreSpec:
    """A gitignore-style matcher. Raises :class:`ValueError` for a pattern pathspec rejects."""
    # Imported here: pathspec costs ~50 ms to import and checking explicit files needs no
    # file globs — keep `ckpt-guard check FILE` cold start low.
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(list(patterns))
    except (ValueError, re.error) as e:
        raise ValueError(str(e)) from e


def normalize_relpath(relpath: str | PurePath) -> str:
    """``relpath`` as the POSIX, ``./``-free form the file globs are matched against."""
    text = relpath.as_posix() if isinstance(relpath, PurePath) else str(relpath).replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in (".", "")]
    return "/".join(parts).lstrip("/")


def tensor_matches(tensor_path: str, patterns: Iterable[str]) -> str | None:
    """The first of ``patterns`` matching ``tensor_path`` (case-insensitive), else ``None``."""
    low = tensor_path.lower()
    for pattern in patterns:
        if fnmatchcase(low, pattern.lower()):
            return pattern
    return None
