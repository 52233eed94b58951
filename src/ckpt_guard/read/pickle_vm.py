"""Our own pickle interpreter: reads protocols 0–5 into a tree, never executes anything.

Every opcode of ``Lib/pickletools.py`` is handled. This module is the dispatch loop: the
stack, the marks, the memo and the resource limits. The opcodes that name globals or build
objects are in :mod:`pickle_objects` (nothing named is imported, resolved or called; every
path a real unpickler would turn into code execution leaves a :class:`GlobalUse` trace); the
readers of opcode arguments are in :mod:`pickle_scalars`; torch's ``_rebuild_*`` calls and
storage persistent ids in :mod:`rebuild`; key and depth guards in :mod:`pickle_guards`.

The tree may contain cycles (``l = []; l.append(l)`` is a valid pickle): walkers must track
visited ``id()``s. Nesting deeper than ``Limits.max_depth`` is rejected after building, with an
iterative walk (no recursion anywhere).

``_run`` is deliberately one loop with the hot opcodes inlined first (and the REDUCE of
torch's rebuild functions): a call per opcode would double the cost of reading a checkpoint
with thousands of tensors. Rare opcodes call out.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ckpt_guard.read import rebuild
from ckpt_guard.read.checkpoint import (
    CALLED,
    GlobalUse,
    JudgedPickle,
    LimitExceeded,
    UnreadableError,
    note_globals,
)
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.pickle_guards import check_depth
from ckpt_guard.read.pickle_objects import LookupReducer, ObjectBuilder, describe
from ckpt_guard.read.pickle_opcodes import (  # noqa: I001 - one name per opcode
    ADDITEMS,
    APPEND,
    APPENDS,
    BINFLOAT,
    BINGET,
    BININT,
    BININT1,
    BININT2,
    BINPERSID,
    BINPUT,
    BINUNICODE,
    BUILD,
    DICT,
    DUP,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_SET,
    EMPTY_TUPLE,
    EXT1,
    EXT2,
    EXT4,
    FRAME,
    FROZENSET,
    GET,
    GLOBAL,
    INST,
    LIST,
    LONG_BINGET,
    LONG_BINPUT,
    MARK,
    MEMOIZE,
    NEWFALSE,
    NEWOBJ,
    NEWOBJ_EX,
    NEWTRUE,
    NEXT_BUFFER,
    NONE,
    OBJ,
    OPCODE_NAMES,  # noqa: F401 - re-exported
    PERSID,
    POP,
    POP_MARK,
    PROTO,
    PUT,
    READONLY_BUFFER,
    REDUCE,
    SETITEM,
    SETITEMS,
    SHORT_BINUNICODE,
    STACK_GLOBAL,
    STOP,
    TUPLE,
    TUPLE1,
    TUPLE2,
    TUPLE3,
)
from ckpt_guard.read.pickle_scalars import (
    COUNTED_OPCODES,
    TEXT_OPCODES,
    Malformed,
    PickleTruncated,
    opname,
    parse_int,
    read_bytes,
    read_counted,
    read_line,
    read_text,
)
from ckpt_guard.read.tree import GlobalRef

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PickleResult", "PickleTruncated", "load", "run"]

_HIGHEST_PROTOCOL = 5

_I = struct.Struct("<I").unpack_from
_i = struct.Struct("<i").unpack_from
_H = struct.Struct("<H").unpack_from
_Q = struct.Struct("<Q").unpack_from
_d = struct.Struct(">d").unpack_from


@dataclass(frozen=True)
class PickleResult:
    root: Any
    globals: list[GlobalUse]
    end: int  # offset just past STOP
    protocol: int  # from PROTO (0 when absent)
    judged: JudgedPickle | None = None  # the bytes interpreted, start through STOP
    # Where the furthest FRAME ends (0: no FRAME). CPython's unpickler may consume a whole
    # frame from the file with one read(), so when this lies past ``end`` the next reader of
    # the stream starts at an offset that depends on buffering (see torch_legacy).
    frames_end: int = 0


def load(data: bytes, *, persistent_load: Callable[[Any], Any] | None, limits: Limits,
         member: str = "") -> tuple[Any, list[GlobalUse]]:
    """Read one pickle from ``data`` into a tree; return ``(root, globals referenced)``.

    Raises :class:`UnreadableError` (or :class:`LimitExceeded`) with a one-line message; the
    exception carries ``partial_globals``: the globals seen before the failure (a real
    unpickler would already have executed them).
    """
    res = run(data, 0, persistent_load=persistent_load, limits=limits, member=member)
    return res.root, res.globals


def run(data: bytes | bytearray | memoryview, start: int = 0, *,
        persistent_load: Callable[[Any], Any] | None, limits: Limits,
        member: str = "") -> PickleResult:
    """Read the pickle starting at ``start``; also report where it ended and its protocol."""
    if not isinstance(data, bytes):
        data = bytes(data)
    globals_: list[GlobalUse] = []
    try:
        res = _run(data, start, persistent_load, limits, member, globals_)
    except Exception as e:
        e.partial_globals = globals_  # type: ignore[attr-defined]
        raise
    finally:
        note_globals(globals_)  # the read as a whole keeps them, whatever happens next
    # What was judged, byte for byte: a differential test matches it against what torch's
    # unpickler consumed (tests/differential).
    digest = _sha256(memoryview(data)[start:res.end]).hexdigest()
    return dataclasses.replace(res, judged=JudgedPickle(member, start, res.end - start, digest))


def _sha256(data: memoryview) -> Any:
    """hashlib's sha256 without importing hashlib: its OpenSSL binding costs ~10 ms of a
    cold ``check``; CPython's built-in module gives the same digest."""
    try:
        from _sha256 import sha256  # CPython <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def _run(data: bytes, pos: int, persistent_load: Callable[[Any], Any] | None, limits: Limits,
         member: str, globals_: list[GlobalUse]) -> PickleResult:
    n = len(data)
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    ops = 0
    max_ops = limits.max_opcodes
    max_memo = limits.max_memo
    max_depth = limits.max_depth
    max_string = limits.max_string
    max_stack = limits.max_stack
    max_objects = limits.max_objects
    objs = 0  # objects built (sets and frozensets count 4: they take ~4x the memory)
    where = f"pickle {member}" if member else "pickle"
    op = -1
    frames_end = 0
    rebuilders: dict[GlobalRef, Any] = {}  # per GlobalRef object: its rebuild handler or None
    objects = ObjectBuilder(globals_, member, where, limits)
    call = objects.call
    set_items = objects.set_items
    add_items = objects.add_items
    used_args = objects.used_args

    def pop_mark() -> list[Any]:
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    try:
        while True:
            # Limits are checked once per chunk of opcodes: each opcode grows the stack and
            # the memo by at most one, so a chunk overshoots a limit by at most _CHUNK.
            if ops > max_ops:
                raise LimitExceeded(f"{where}: more than {max_ops} opcodes")
            if len(stack) > max_stack:
                raise LimitExceeded(f"{where}: stack deeper than {max_stack}")
            if len(memo) > max_memo:
                raise LimitExceeded(f"{where}: memo larger than {max_memo} entries")
            if objs > max_objects:
                raise LimitExceeded(f"{where}: more than {max_objects} objects built")
            ops += _CHUNK
            for in_chunk in _CHUNK_RANGE:
                op = data[pos]  # IndexError past the end: reported as truncated below
                pos += 1
                # Hot opcodes first, in the order of their frequency in torch.save's pickles;
                # fixed-size arguments past the end raise struct.error/IndexError ⇒ truncated.
                if op == LONG_BINPUT:
                    memo[_I(data, pos)[0]] = stack[-1]
                    pos += 4
                elif op == BINGET:
                    stack.append(memo[data[pos]])
                    pos += 1
                elif op == BININT1:
                    stack.append(data[pos])
                    pos += 1
                elif op == MARK:
                    marks.append(len(stack))
                    if len(marks) > max_depth:
                        raise LimitExceeded(f"{where}: MARK nesting deeper than {max_depth}")
                elif op == REDUCE:
                    objs += 1
                    args = stack.pop()
                    func = stack[-1]
                    if type(func) is GlobalRef and type(args) is tuple:
                        handler = rebuilders.get(func, _MISSING)
                        if handler is _MISSING:
                            handler = rebuilders[func] = (rebuild.handler(func)
                                                          or objects.reducer(func))
                            if type(handler) is not LookupReducer:
                                objects.used(func, CALLED)  # once per reference object
                        if type(handler) is not LookupReducer:
                            used_args(args)
                        result = handler(func, args)
                        stack[-1] = result if result is not None else call(func, args, "reduce",
                                                                           "REDUCE")
                    else:
                        stack[-1] = call(func, args, "reduce", "REDUCE")
                elif op == TUPLE:
                    objs += 1
                    k = marks.pop()
                    t = tuple(stack[k:])
                    del stack[k:]
                    stack.append(t)
                elif op == BINUNICODE:
                    objs += 1
                    ln = _I(data, pos)[0]
                    pos += 4
                    end = pos + ln
                    if ln > max_string or end > n:
                        read_bytes(data, pos, ln, max_string, where)  # raises: too long or truncated
                    stack.append(str(data[pos:end], "utf-8", "surrogatepass"))
                    pos = end
                elif op == EMPTY_TUPLE:
                    stack.append(())
                elif op == TUPLE1:
                    objs += 1
                    stack[-1] = (stack[-1],)
                elif op == NEWFALSE:
                    stack.append(False)
                elif op == BINPERSID:
                    pid = stack.pop()
                    if persistent_load is None:
                        raise Malformed("persistent id without a persistent_load")
                    stack.append(persistent_load(pid))
                elif op == LONG_BINGET:
                    stack.append(memo[_I(data, pos)[0]])
                    pos += 4
                elif op == BINPUT:
                    memo[data[pos]] = stack[-1]
                    pos += 1
                elif op == TUPLE2:
                    objs += 1
                    b = stack.pop()
                    stack[-1] = (stack[-1], b)
                elif op == BININT2:
                    stack.append(_H(data, pos)[0])
                    pos += 2
                elif op == EMPTY_DICT:
                    objs += 1
                    stack.append({})
                elif op == SETITEMS:
                    items = pop_mark()
                    set_items(stack[-1], items, "SETITEMS")
                elif op == SETITEM:
                    v = stack.pop()
                    k = stack.pop()
                    set_items(stack[-1], [k, v], "SETITEM")
                elif op == NEWTRUE:
                    stack.append(True)
                elif op == SHORT_BINUNICODE:
                    objs += 1
                    ln = data[pos]
                    pos += 1
                    end = pos + ln
                    if ln > max_string or end > n:
                        read_bytes(data, pos, ln, max_string, where)  # raises: too long or truncated
                    stack.append(str(data[pos:end], "utf-8", "surrogatepass"))
                    pos = end
                elif op == BININT:
                    stack.append(_i(data, pos)[0])
                    pos += 4
                elif op == TUPLE3:
                    objs += 1
                    c = stack.pop()
                    b = stack.pop()
                    stack[-1] = (stack[-1], b, c)
                elif op == MEMOIZE:
                    memo[len(memo)] = stack[-1]
                elif op == APPENDS:
                    items = pop_mark()
                    add_items(stack[-1], items, "APPENDS")
                elif op == APPEND:
                    v = stack.pop()
                    add_items(stack[-1], [v], "APPEND")
                elif op == EMPTY_LIST:
                    objs += 1
                    stack.append([])
                elif op == NONE:
                    stack.append(None)
                elif op == GLOBAL:
                    module, pos = read_line(data, pos, max_string, where)
                    name, pos = read_line(data, pos, max_string, where)
                    stack.append(objects.find_class(module.decode("utf-8"), name.decode("utf-8"),
                                                    "GLOBAL"))
                elif op == STACK_GLOBAL:
                    name = stack.pop()
                    stack[-1] = objects.stack_global(stack[-1], name)
                elif op == BUILD:
                    state = stack.pop()
                    objects.build(stack[-1], state)
                elif op == NEWOBJ:
                    objs += 1
                    args = stack.pop()
                    stack[-1] = call(stack[-1], args, "newobj", "NEWOBJ")
                elif op == NEWOBJ_EX:
                    objs += 1
                    kwargs = stack.pop()
                    args = stack.pop()
                    stack[-1] = objects.newobj_ex(stack[-1], args, kwargs)
                elif op == BINFLOAT:
                    objs += 1
                    stack.append(_d(data, pos)[0])
                    pos += 8
                elif op == FRAME:
                    frames_end = max(frames_end, pos + 8 + _Q(data, pos)[0])
                    pos += 8  # the opcodes inside are read as any others
                elif op == PROTO:
                    proto = objects.proto = data[pos]
                    pos += 1
                    if proto > _HIGHEST_PROTOCOL:
                        raise Malformed(f"unsupported pickle protocol {proto}")
                elif op == STOP:
                    root = stack.pop()
                    ops += in_chunk + 1 - _CHUNK  # exact count of opcodes read
                    if ops > max_ops:
                        raise LimitExceeded(f"{where}: more than {max_ops} opcodes")
                    if len(stack) > max_stack:
                        raise LimitExceeded(f"{where}: stack deeper than {max_stack}")
                    if len(memo) > max_memo:
                        raise LimitExceeded(f"{where}: memo larger than {max_memo} entries")
                    if objs > max_objects:
                        raise LimitExceeded(f"{where}: more than {max_objects} objects built")
                    check_depth(root, max_depth, where)
                    return PickleResult(root, globals_, pos, objects.proto, frames_end=frames_end)
                # ---- rare opcodes: protocol 0/1 text forms, sets, bytes, buffers, EXT …
                elif op in COUNTED_OPCODES:
                    objs += 1
                    value, pos = read_counted(op, data, pos, max_string, where)
                    stack.append(value)
                elif op in TEXT_OPCODES:
                    objs += 1
                    value, pos = read_text(op, data, pos, max_string, where)
                    stack.append(value)
                elif op == EMPTY_SET:
                    objs += 4
                    stack.append(set())
                elif op == ADDITEMS:
                    items = pop_mark()
                    add_items(stack[-1], items, "ADDITEMS")
                elif op == FROZENSET:
                    objs += 4
                    stack.append(objects.make_frozenset(pop_mark()))
                elif op == LIST:
                    objs += 1
                    stack.append(pop_mark())
                elif op == DICT:
                    objs += 1
                    items = pop_mark()
                    d: dict = {}
                    stack.append(d)
                    set_items(d, items, "DICT")
                elif op == POP:
                    if stack and (not marks or len(stack) > marks[-1]):
                        stack.pop()
                    else:
                        pop_mark()  # as pickle.py: POP on an empty frame discards the MARK
                elif op == POP_MARK:
                    pop_mark()
                elif op == DUP:
                    stack.append(stack[-1])
                elif op == GET:
                    line, pos = read_line(data, pos, max_string, where)
                    stack.append(memo[parse_int(line)])
                elif op == PUT:
                    line, pos = read_line(data, pos, max_string, where)
                    idx = parse_int(line)
                    if idx < 0:
                        raise Malformed("negative PUT argument")
                    memo[idx] = stack[-1]
                    if len(memo) > max_memo:
                        raise LimitExceeded(f"{where}: memo larger than {max_memo} entries")
                elif op == PERSID:
                    line, pos = read_line(data, pos, max_string, where)
                    if persistent_load is None:
                        raise Malformed("persistent id without a persistent_load")
                    stack.append(persistent_load(line.decode("ascii")))
                elif op == INST:
                    objs += 1
                    module, pos = read_line(data, pos, max_string, where)
                    name, pos = read_line(data, pos, max_string, where)
                    cls = objects.find_class(module.decode("utf-8"), name.decode("utf-8"), "INST")
                    stack.append(call(cls, tuple(pop_mark()), "inst", "INST"))
                elif op == OBJ:
                    objs += 1
                    stack.append(objects.obj(pop_mark()))
                elif op == EXT1:
                    stack.append(objects.extension(data[pos], "EXT1"))
                    pos += 1
                elif op == EXT2:
                    stack.append(objects.extension(_H(data, pos)[0], "EXT2"))
                    pos += 2
                elif op == EXT4:
                    stack.append(objects.extension(_i(data, pos)[0], "EXT4"))
                    pos += 4
                elif op == NEXT_BUFFER:
                    raise Malformed("out-of-band buffer (NEXT_BUFFER) without buffers")
                elif op == READONLY_BUFFER:
                    if type(stack[-1]) not in (bytes, bytearray):
                        raise Malformed(f"READONLY_BUFFER on {describe(stack[-1])}")
                else:
                    raise Malformed("unknown opcode")
    except UnreadableError:
        raise
    except Malformed as e:
        raise UnreadableError(f"malformed {where}: {e} ({opname(op)} near byte {pos})") from e
    except (IndexError, struct.error) as e:
        if pos >= n or isinstance(e, struct.error):
            raise PickleTruncated(f"{where}: truncated at byte {pos} ({opname(op)})") from e
        raise UnreadableError(f"malformed {where}: stack underflow ({opname(op)} near byte "
                              f"{pos})") from e
    except KeyError as e:
        raise UnreadableError(f"malformed {where}: memo key missing ({opname(op)} near byte "
                              f"{pos})") from e
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UnreadableError(f"malformed {where}: {msg} ({opname(op)} near byte {pos})") from e


_MISSING = object()
_CHUNK = 1024
_CHUNK_RANGE = range(_CHUNK)
