"""Which files are weight files: the one list every surface uses.

The built-in policy's ``include`` (``policy/defaults.yml``, ``defaults.json``,
``init_template.yml``), the pre-commit hooks' ``files:`` regex (``.pre-commit-hooks.yaml``),
the Action's default selection (the policy's ``include``), checkpoint directories' member
files and the README all say the same thing; ``tests/test_patterns.py`` checks that they
agree with :data:`WEIGHT_SUFFIXES`.

Matching is case-insensitive: ``torch.load("model.pt")`` opens ``model.PT`` on macOS and
Windows, so a walk that skipped it would leave a loadable file unchecked.

``.model`` is not listed: in model repositories it is nearly always a sentencepiece
tokenizer (protobuf), which would fail as "not a weight file"; name such files explicitly
or add ``"*.model"`` to a policy's ``include`` to check them.
"""

from __future__ import annotations

import re

WEIGHT_SUFFIXES: tuple[str, ...] = (
    ".pt", ".pth", ".pth.tar", ".pt.tar", ".ckpt", ".bin", ".safetensors", ".pkl",
    ".pickle", ".torchscript", ".ptl",
)

INCLUDE_GLOBS: tuple[str, ...] = tuple(f"*{s}" for s in WEIGHT_SUFFIXES)


# Files of a torch.distributed.checkpoint directory: no weight suffix, yet a staged one must
# reach the hook, which checks its directory as one unit (app/discover.py). Not in
# ``INCLUDE_GLOBS``: walks find DCP directories by their ``.metadata`` already.
DCP_MEMBER_REGEX = r"\.distcp|(^|/)\.metadata"


def _suffix_regex() -> str:
    alternatives = "|".join(re.escape(s[1:]) for s in WEIGHT_SUFFIXES)
    return rf"\.({alternatives})"


def hook_files_regex() -> str:
    """The ``files:`` regex of the pre-commit hooks (Python ``re`` syntax, as pre-commit
    uses): any path ending in a weight suffix, any case, or a DCP directory's member
    (``*.distcp``, ``.metadata``)."""
    return rf"(?i)({_suffix_regex()}|{DCP_MEMBER_REGEX})$"


_SUFFIX_RE = re.compile(rf"(?i){_suffix_regex()}$")


def is_weight_name(name: str) -> bool:
    """Does ``name`` (a file name or path) end in a weight suffix, in any case?"""
    return _SUFFIX_RE.search(name) is not None
