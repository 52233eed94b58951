"""What reading one path yields: a :class:`Checkpoint`, or an :class:`UnreadableError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ckpt_guard.read.tree import Storage
from ckpt_guard.vocab import Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.read.torchscript_code import CodeRecord

# Format names of the JSON report contract.
FORMATS: tuple[str, ...] = Format.values()


class UnreadableError(Exception):
    """The path cannot be read as a weight file. The message is one line for users.

    ``partial_globals``: every global the file's pickles referenced before the failure (a
    real unpickler would already have imported and maybe called them). A failure never
    loses them: the policy judges them as it judges a readable file's globals.
    """

    partial_globals: list[GlobalUse] = []  # noqa: RUF012 - instances get their own list


class LimitExceeded(UnreadableError):
    """A resource limit (opcodes, memo, depth, sizes) was hit while reading."""


# How unpickling uses a global (:attr:`GlobalUse.uses`). Nothing recorded: only referenced,
# kept as a value (an activation function stored on a module) — loading runs none of it.
CALLED = "called"  # REDUCE, INST, OBJ: the unpickler calls it
CONSTRUCTED = "constructed"  # NEWOBJ/NEWOBJ_EX: ``cls.__new__(cls, ...)`` (CPython: a type)
STATE = "state"  # BUILD/SETITEM(S)/APPEND(S)/ADDITEMS on an instance: its class's methods run
PASSED = "passed"  # a direct argument of a call: the callee receives it and may call it
# Only in lookups torch.save itself writes: ``getattr(torch._C._VariableFunctionsClass,
# 'relu')`` (how ``torch.relu`` pickles) and ``type(None)`` (``NoneType`` in
# ``Optional[int]``); the result is a value, and calling it is traced as ``<call>``.
LOOKUP = "lookup"
USES = (CALLED, CONSTRUCTED, STATE, PASSED, LOOKUP)


# Every global any pickle read for the current path referenced, in order (see
# :func:`collect_globals`): the pickle interpreter appends to it, whichever reader runs it.
_SEEN: ContextVar[list[GlobalUse] | None] = ContextVar("ckpt_guard_globals_seen", default=None)


def note_globals(uses: list[GlobalUse]) -> None:
    """Called by the pickle interpreter with one pickle's globals (complete or partial)."""
    seen = _SEEN.get()
    if seen is not None:
        seen.extend(uses)


@contextmanager
def collect_globals() -> Iterator[list[GlobalUse]]:
    """Collect the globals of every pickle read inside the block (nested blocks collect
    their own). Any exception leaving the block carries them as ``partial_globals``, so a
    limit or parse error after an ``os.system`` still reports the ``os.system``."""
    seen: list[GlobalUse] = []
    token = _SEEN.set(seen)
    try:
        yield seen
    except Exception as e:
        e.partial_globals = list(seen)  # type: ignore[attr-defined]
        raise
    finally:
        _SEEN.reset(token)


@dataclass(frozen=True)
class GlobalUse:
    """A global a pickle references, and through which opcode (``GLOBAL``, ``STACK_GLOBAL``,
    ``INST``, ``OBJ``-target, ``EXT``). ``member`` names the pickle inside the file
    (e.g. ``archive/data.pkl``).

    ``uses`` says what the unpickler does with this reference afterwards (see :data:`USES`);
    empty when the pickle only stores it as a value. The reader fills it while reading (it is
    not part of the entry's identity)."""

    module: str
    name: str
    opcode: str
    member: str = ""
    uses: set[str] = field(default_factory=set, compare=False, hash=False)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}" if self.module else self.name


@dataclass(frozen=True)
class JudgedPickle:
    """One pickle the verdict covered: the bytes interpreted from its first opcode through
    STOP. ``member`` names the pickle as :attr:`GlobalUse.member` does (a zip member such as
    ``archive/data.pkl``; in a legacy stream its role, e.g. ``data``); ``offset`` and ``length``
    locate the bytes within that member (zip: its uncompressed bytes) or within the stream
    (legacy, bare pickles: the file). ``sha256`` is of exactly those bytes, so a caller can
    match what a real unpickler consumed against what was judged."""

    member: str
    offset: int
    length: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"member": self.member, "offset": self.offset, "length": self.length,
                "sha256": self.sha256}


@dataclass
class Checkpoint:
    """One weight file (or checkpoint directory), read from metadata only.

    ``root`` is the object tree (see :mod:`ckpt_guard.read.tree`); for safetensors a dict of
    name → TensorRef. ``storages`` maps storage key → :class:`Storage` (each counted once).
    ``globals`` lists every global referenced by any pickle in the file, in order of
    appearance. ``children`` holds the member files of a checkpoint directory, each a
    ``(relative path, Checkpoint | UnreadableError, hint)`` where ``hint`` is the role the
    file's name gives it (``optimizer``, ``scheduler``, ``scaler``, ``rng``, ``training``,
    ``weights`` or ``""``). ``pickles`` lists every pickle read to its STOP, in reading order
    (a directory: its members' pickles, ``member`` prefixed with the file's relative path and
    ``:``); a pickle that failed to parse is not listed — it was not judged.
    ``code`` holds a TorchScript archive's code records (judged by
    :mod:`ckpt_guard.analyze.torchscript`).
    """

    path: str
    format: str
    size_bytes: int
    root: Any = None
    storages: dict[str, Storage] = field(default_factory=dict)
    globals: list[GlobalUse] = field(default_factory=list)
    pickles: list[JudgedPickle] = field(default_factory=list)
    children: list[tuple[str, Checkpoint | UnreadableError, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Zip-based files: the archive's top folder (e.g. "archive") and the pickle's protocol.
    archive_prefix: str = ""
    pickle_protocol: int | None = None
    byteorder: str = "little"
    # TorchScript archives: the code records torch.jit.load compiles and runs.
    code: list[CodeRecord] = field(default_factory=list)
