"""A recording ``pickle_module`` for ``torch.load(..., pickle_module=shim)``: it tells which
bytes torch hands to an unpickler, and never runs a payload.

Runs only inside the oracle subprocess (tests/differential/torch_child.py); imports no
ckpt_guard code. torch's loaders subclass :class:`Unpickler` (``UnpicklerWrapper``) and call
:func:`load`; every unpickle becomes one record in :data:`RECORDS`:

* ``consumed`` — the exact bytes CPython's C unpickler read from the stream. The file is
  wrapped in a proxy without ``peek``, so the unpickler reads exactly what it needs (with
  ``peek`` it prefetches and then seeks back to the same place: same bytes consumed). The
  proxy's count is checked against the stream's ``tell()`` before and after.
* ``stop_end`` — where STOP is within ``consumed``, found with :mod:`pickletools` (it walks
  opcodes and executes nothing). It is shorter than ``consumed`` only when a FRAME reached
  past STOP: CPython reads a whole frame at once (issue class 9).
* ``globals`` — every ``find_class``: ``[module, name, safe]``. Only globals in torch's own
  ``weights_only`` allowlist (``_weights_only_unpickler._get_allowed_globals``) are resolved
  to the real object; any other global becomes a fresh harmless stand-in class that accepts
  every call, BUILD, SETITEM and APPEND and does nothing, and is recorded as not safe.

Limits (say them when reading the results): after a stand-in replaced a real object, torch may
stop earlier than it would with the real one (a stand-in is not a type torch expects), so
bytes past that point are not observed — the verdict rule (a non-safe global ⇒ no pass)
covers those files. TorchScript archives go to ``torch.jit.load``, whose unpickler is C++
(torch::jit::Unpickler): the shim never sees them; torch_child reports the records jit would
read instead.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import Any

RECORDS: list[dict[str, Any]] = []
UnpicklingError = pickle.UnpicklingError
PickleError = pickle.PickleError
HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL
DEFAULT_PROTOCOL = pickle.DEFAULT_PROTOCOL
Pickler = pickle.Pickler  # torch.save never goes through the shim; kept for completeness
dump = pickle.dump
dumps = pickle.dumps

_allowed: dict[str, Any] | None = None


def allowed_globals() -> dict[str, Any]:
    """torch's default weights_only allowlist: full name -> object."""
    global _allowed
    if _allowed is None:
        from torch._weights_only_unpickler import _get_allowed_globals

        _allowed = dict(_get_allowed_globals())
    return _allowed


class StandIn:
    """Whatever a non-allowlisted global would have been: accepts everything, does nothing."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> StandIn:
        return StandIn()

    # *args: BUILD/APPEND on the stand-in class itself (a global used as an object) calls
    # these unbound.
    def __setstate__(*args: Any) -> None:
        pass

    def __setitem__(*args: Any) -> None:
        pass

    def append(*args: Any) -> None:
        pass

    def extend(*args: Any) -> None:
        pass

    def add(*args: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


class _Tap:
    """The stream as the unpickler sees it: read/readline/readinto, each byte recorded."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.seen = bytearray()

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.seen += b
        return b

    def readline(self, n: int = -1) -> bytes:
        b = self.f.readline(n)
        self.seen += b
        return b

    def readinto(self, buf: Any) -> int:
        b = self.f.read(len(buf))
        buf[:len(b)] = b
        self.seen += b
        return len(b)


def stop_end(data: bytes) -> int | None:
    """Offset just past the first STOP in ``data`` per pickletools; None if it finds none."""
    try:
        for op, _arg, pos in pickletools.genops(io.BytesIO(data)):
            if op.name == "STOP":
                return pos + 1
    except Exception:  # noqa: BLE001 - pickletools rejects what C accepts at times: say so
        return None
    return None


def _tell(f: Any) -> int | None:
    try:
        return int(f.tell())
    except Exception:  # noqa: BLE001 - a stream without tell: the proxy's count stands alone
        return None


class Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, **kwargs: Any) -> None:
        self._tap = _Tap(file)
        self._globals: list[list[Any]] = []
        super().__init__(self._tap, **kwargs)

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        # What CPython's find_class would look up (fix_imports maps Python 2 names when the
        # protocol is < 3; applied whatever the protocol, only to decide the allowlist).
        if (module, name) in NAME_MAPPING:
            full = ".".join(NAME_MAPPING[(module, name)])
        elif module in IMPORT_MAPPING:
            full = f"{IMPORT_MAPPING[module]}.{name}"
        obj = allowed_globals().get(full)
        self._globals.append([module, name, obj is not None])
        if obj is not None:
            return obj
        return type(f"StandIn[{full}]", (StandIn,), {"qualname": full})

    def load(self) -> Any:
        before = _tell(self._tap.f)
        record: dict[str, Any] = {"globals": self._globals}
        RECORDS.append(record)
        try:
            result = super().load()
            record["complete"] = True
            return result
        except BaseException as e:
            record["complete"] = False
            record["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            raise
        finally:
            seen = bytes(self._tap.seen)
            after = _tell(self._tap.f)
            end = stop_end(seen) if record["complete"] else None
            record.update(
                consumed=len(seen),
                consumed_sha256=hashlib.sha256(seen).hexdigest(),
                tell_agrees=None if before is None or after is None
                else after - before == len(seen),
                stop_end=end,
                sha256=hashlib.sha256(seen[:end]).hexdigest() if end is not None else None,
                head=seen[:64].hex())
            self._tap.seen = bytearray()


def load(file: Any, **kwargs: Any) -> Any:
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return Unpickler(io.BytesIO(data), **kwargs).load()
