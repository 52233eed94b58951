"""Our own pickle interpreter: reads protocols 0–5 into a tree, never executes anything.

Every opcode of ``Lib/pickletools.py`` is handled. Nothing named in the pickle is imported,
resolved, looked up or called: ``GLOBAL``/``STACK_GLOBAL``/``INST``/``EXT*`` become
:class:`GlobalRef` values, calls (``REDUCE``/``NEWOBJ``/``NEWOBJ_EX``/``INST``/``OBJ``) become
:class:`TensorRef` (torch's ``_rebuild_*`` functions, see :mod:`rebuild`) or :class:`Opaque`.
Every path that a real unpickler would turn into code execution leaves a :class:`GlobalUse`
trace, including the indirect ones (calling a call's result, mutating a global), which use
the pseudo-modules ``<call>``, ``<computed>``, ``<extension>`` and ``<mutate>`` so that an
allowlist never calls them safe.

The tree may contain cycles (``l = []; l.append(l)`` is a valid pickle): walkers must track
visited ``id()``s. Nesting deeper than ``Limits.max_depth`` is rejected after building, with an
iterative walk (no recursion anywhere).

``_run`` is deliberately one long loop with the hot opcodes inlined first: a call per opcode
would double the cost of reading a checkpoint with thousands of tensors.
"""

from __future__ import annotations

import codecs
import struct
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING  # stdlib data tables, no code
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ckpt_guard.read import rebuild
from ckpt_guard.read.checkpoint import GlobalUse, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.pickle_guards import IDENTITY_HASHED, check_depth, key_cost
from ckpt_guard.read.pickle_opcodes import (  # noqa: I001 - one name per opcode
    ADDITEMS,
    APPEND,
    APPENDS,
    BINBYTES,
    BINBYTES8,
    BINFLOAT,
    BINGET,
    BININT,
    BININT1,
    BININT2,
    BINPERSID,
    BINPUT,
    BINSTRING,
    BINUNICODE,
    BINUNICODE8,
    BUILD,
    BYTEARRAY8,
    DICT,
    DUP,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_SET,
    EMPTY_TUPLE,
    EXT1,
    EXT2,
    EXT4,
    FLOAT,
    FRAME,
    FROZENSET,
    GET,
    GLOBAL,
    INST,
    INT,
    LIST,
    LONG,
    LONG1,
    LONG4,
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
    OPCODE_NAMES,
    PERSID,
    POP,
    POP_MARK,
    PROTO,
    PUT,
    READONLY_BUFFER,
    REDUCE,
    SETITEM,
    SETITEMS,
    SHORT_BINBYTES,
    SHORT_BINSTRING,
    SHORT_BINUNICODE,
    STACK_GLOBAL,
    STOP,
    STRING,
    TUPLE,
    TUPLE1,
    TUPLE2,
    TUPLE3,
    UNICODE,
)
from ckpt_guard.read.tree import GlobalRef, Opaque, TensorRef

MAX_LONG_BYTES = 1 << 16  # LONG1/LONG4 payload; a 512-kbit integer is no checkpoint's need
_HIGHEST_PROTOCOL = 5

_I = struct.Struct("<I").unpack_from
_i = struct.Struct("<i").unpack_from
_H = struct.Struct("<H").unpack_from
_Q = struct.Struct("<Q").unpack_from
_d = struct.Struct(">d").unpack_from


class PickleTruncated(UnreadableError):
    """The pickle ran past the end of the data (a reader may fetch more bytes and retry)."""


@dataclass(frozen=True)
class PickleResult:
    root: Any
    globals: list[GlobalUse]
    end: int  # offset just past STOP
    protocol: int  # from PROTO (0 when absent)


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
        return _run(data, start, persistent_load, limits, member, globals_)
    except UnreadableError as e:
        e.partial_globals = globals_  # type: ignore[attr-defined]
        raise


def _where(member: str) -> str:
    return f"pickle {member}" if member else "pickle"


class _Error(Exception):
    """Internal: a malformed-pickle condition, turned into UnreadableError with position."""


def _run(data: bytes, pos: int, persistent_load: Callable[[Any], Any] | None, limits: Limits,
         member: str, globals_: list[GlobalUse]) -> PickleResult:
    n = len(data)
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    proto = 0
    ops = 0
    key_work = collisions = 0  # see check_key
    key_hashes: dict[int, Any] = {}
    max_ops = limits.max_opcodes
    max_memo = limits.max_memo
    max_depth = limits.max_depth
    max_string = limits.max_string
    max_stack = limits.max_stack
    max_container = limits.max_container
    where = _where(member)
    op = -1
    rebuilders: dict[GlobalRef, Any] = {}  # per GlobalRef object: its rebuild handler or None

    def use(module: str, name: str, opcode: str) -> None:
        globals_.append(GlobalUse(module, name, opcode, member))

    def find_class(module: str, name: str, opcode: str) -> GlobalRef:
        # Mirror the names a real Unpickler would import (fix_imports for protocol < 3),
        # so that the safety layer judges what would actually be loaded.
        if proto < 3:
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
        use(module, name, opcode)
        return GlobalRef(module, name)

    def pop_mark() -> list[Any]:
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    def readline() -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos, pos + max_string + 1)
        if end < 0:
            if n - pos > max_string:
                raise LimitExceeded(f"{where}: text argument longer than {max_string} bytes")
            raise PickleTruncated(f"{where}: truncated (no end of line at byte {pos})")
        line = data[pos:end]
        pos = end + 1
        return line

    def take(length: int) -> bytes:
        nonlocal pos
        if length < 0:
            raise _Error("negative length")
        if length > max_string:
            raise LimitExceeded(f"{where}: value of {length} bytes exceeds the limit of "
                                f"{max_string} bytes")
        end = pos + length
        if end > n:
            raise PickleTruncated(f"{where}: truncated (value of {length} bytes at byte {pos}, "
                                  f"{n - pos} left)")
        b = data[pos:end]
        pos = end
        return b

    def need(k: int) -> None:
        if pos + k > n:
            raise PickleTruncated(f"{where}: truncated at byte {pos}")

    def check_key(key: Any) -> None:
        # Keys whose hash a pickle can choose (big ints, floats, tuples) could all collide
        # and make dict building quadratic: count real collisions, and the work of walking
        # tuple keys. str/bytes hashes are randomised; our objects hash by identity.
        nonlocal key_work, collisions
        t = type(key)
        if t is str or t is bytes or t in IDENTITY_HASHED:
            return
        cost = key_cost(key, max_depth)
        if not cost:
            return
        key_work += cost
        if key_work > max_container:
            raise LimitExceeded(f"{where}: more than {max_container} items in dict keys")
        h = hash(key)
        first = key_hashes.setdefault(h, key)
        if first is not key and first != key:
            collisions += 1
            if collisions > _MAX_COLLISIONS:
                raise LimitExceeded(f"{where}: more than {_MAX_COLLISIONS} colliding dict keys")

    def call(func: Any, args: Any, how: str, opname: str, kwargs: dict | None = None) -> Any:
        if type(args) is not tuple:
            raise _Error(f"{opname} arguments are not a tuple")
        if type(func) is GlobalRef:
            if how in ("reduce", "inst", "obj"):
                t = rebuild.reduce(func, args)
                if t is not None:
                    return t
            return Opaque(func, how, args, kwargs)
        # Calling something that is not a named global: the result of another call, a value
        # from the memo... A real unpickler would execute it; leave a trace.
        name = _describe(func)
        use("<call>", name, opname)
        return Opaque(GlobalRef("<call>", name), how, args, kwargs)

    def add_items(target: Any, items: list[Any], opname: str) -> None:
        """APPENDS/APPEND/ADDITEMS: ``items`` onto ``target``."""
        t = type(target)
        if t is list:
            if len(target) + len(items) > max_container:
                raise LimitExceeded(f"{where}: list longer than {max_container} items")
            target.extend(items)
        elif t is set and opname == "ADDITEMS":
            for it in items:
                check_key(it)
            target.update(items)
            if len(target) > max_container:
                raise LimitExceeded(f"{where}: set larger than {max_container} items")
        elif t is Opaque:
            if target.listitems is None:
                target.listitems = []
            target.listitems.extend(items)
        elif t is GlobalRef:
            use("<mutate>", f"{target.qualname} via {opname}", opname)
        else:
            raise _Error(f"{opname} on {_describe(target)}")

    def set_items(target: Any, items: list[Any], opname: str) -> None:
        """SETITEMS/SETITEM: key/value pairs onto ``target``."""
        if len(items) % 2:
            raise _Error(f"{opname} with an odd number of items")
        t = type(target)
        if t is dict:
            d = target
        elif t is Opaque:
            if target.dictitems is None:
                target.dictitems = {}
            d = target.dictitems
        elif t is GlobalRef:
            use("<mutate>", f"{target.qualname} via {opname}", opname)
            return
        else:
            raise _Error(f"{opname} on {_describe(target)}")
        for i in range(0, len(items), 2):
            k = items[i]
            if type(k) is not str:
                check_key(k)
            d[k] = items[i + 1]
        if len(d) > max_container:
            raise LimitExceeded(f"{where}: dict larger than {max_container} items")

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
                    args = stack.pop()
                    func = stack[-1]
                    if type(func) is GlobalRef and type(args) is tuple:
                        handler = rebuilders.get(func, _MISSING)
                        if handler is _MISSING:
                            handler = rebuilders[func] = rebuild.handler(func)
                        result = handler(func, args) if handler is not None else None
                        stack[-1] = result if result is not None else Opaque(func, "reduce", args)
                    else:
                        stack[-1] = call(func, args, "reduce", "REDUCE")
                elif op == TUPLE:
                    k = marks.pop()
                    t = tuple(stack[k:])
                    del stack[k:]
                    stack.append(t)
                elif op == BINUNICODE:
                    ln = _I(data, pos)[0]
                    pos += 4
                    end = pos + ln
                    if ln > max_string or end > n:
                        take(ln)  # raises LimitExceeded or PickleTruncated
                    stack.append(str(data[pos:end], "utf-8", "surrogatepass"))
                    pos = end
                elif op == EMPTY_TUPLE:
                    stack.append(())
                elif op == TUPLE1:
                    stack[-1] = (stack[-1],)
                elif op == NEWFALSE:
                    stack.append(False)
                elif op == BINPERSID:
                    pid = stack.pop()
                    if persistent_load is None:
                        raise _Error("persistent id without a persistent_load")
                    stack.append(persistent_load(pid))
                elif op == LONG_BINGET:
                    stack.append(memo[_I(data, pos)[0]])
                    pos += 4
                elif op == BINPUT:
                    memo[data[pos]] = stack[-1]
                    pos += 1
                elif op == TUPLE2:
                    b = stack.pop()
                    stack[-1] = (stack[-1], b)
                elif op == BININT2:
                    stack.append(_H(data, pos)[0])
                    pos += 2
                elif op == EMPTY_DICT:
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
                    ln = data[pos]
                    pos += 1
                    stack.append(str(take(ln), "utf-8", "surrogatepass"))
                elif op == BININT:
                    stack.append(_i(data, pos)[0])
                    pos += 4
                elif op == TUPLE3:
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
                    stack.append([])
                elif op == NONE:
                    stack.append(None)
                elif op == GLOBAL:
                    module = readline().decode("utf-8")
                    name = readline().decode("utf-8")
                    stack.append(find_class(module, name, "GLOBAL"))
                elif op == STACK_GLOBAL:
                    name = stack.pop()
                    module = stack.pop()
                    if type(module) is str and type(name) is str:
                        stack.append(find_class(module, name, "STACK_GLOBAL"))
                    else:
                        # Names computed at unpickling time: a real unpickler refuses non-str,
                        # but never call such a reference safe.
                        text = f"{_describe(module)} {_describe(name)}"
                        use("<computed>", text, "STACK_GLOBAL")
                        stack.append(GlobalRef("<computed>", text))
                elif op == BUILD:
                    state = stack.pop()
                    inst = stack[-1]
                    t = type(inst)
                    if t is Opaque or t is TensorRef:
                        inst.state = state
                    elif t is GlobalRef:
                        # BUILD on a bare global sets attributes on a class/module object.
                        use("<mutate>", f"{inst.qualname} via BUILD", "BUILD")
                    else:
                        raise _Error(f"BUILD on {_describe(inst)}")
                elif op == NEWOBJ:
                    args = stack.pop()
                    cls = stack.pop()
                    stack.append(call(cls, args, "newobj", "NEWOBJ"))
                elif op == NEWOBJ_EX:
                    kwargs = stack.pop()
                    args = stack.pop()
                    cls = stack.pop()
                    if type(kwargs) is not dict:
                        raise _Error("NEWOBJ_EX keyword arguments are not a dict")
                    stack.append(call(cls, args, "newobj_ex", "NEWOBJ_EX", kwargs))
                elif op == BINFLOAT:
                    stack.append(_d(data, pos)[0])
                    pos += 8
                elif op == FRAME:
                    _Q(data, pos)
                    pos += 8  # frames only help streaming readers; we hold all the data
                elif op == PROTO:
                    proto = data[pos]
                    pos += 1
                    if proto > _HIGHEST_PROTOCOL:
                        raise _Error(f"unsupported pickle protocol {proto}")
                elif op == STOP:
                    root = stack.pop()
                    ops += in_chunk + 1 - _CHUNK  # exact count of opcodes read
                    if ops > max_ops:
                        raise LimitExceeded(f"{where}: more than {max_ops} opcodes")
                    if len(stack) > max_stack:
                        raise LimitExceeded(f"{where}: stack deeper than {max_stack}")
                    if len(memo) > max_memo:
                        raise LimitExceeded(f"{where}: memo larger than {max_memo} entries")
                    check_depth(root, max_depth, where)
                    return PickleResult(root, globals_, pos, proto)
                # ---- rare opcodes: protocol 0/1 text forms, sets, bytes, buffers, EXT …
                elif op == EMPTY_SET:
                    stack.append(set())
                elif op == ADDITEMS:
                    items = pop_mark()
                    add_items(stack[-1], items, "ADDITEMS")
                elif op == FROZENSET:
                    items = pop_mark()
                    for it in items:
                        check_key(it)
                    stack.append(frozenset(items))
                elif op == LIST:
                    stack.append(pop_mark())
                elif op == DICT:
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
                elif op == SHORT_BINBYTES:
                    need(1)
                    ln = data[pos]
                    pos += 1
                    stack.append(take(ln))
                elif op == BINBYTES:
                    need(4)
                    ln = _I(data, pos)[0]
                    pos += 4
                    stack.append(take(ln))
                elif op == BINBYTES8:
                    need(8)
                    ln = _Q(data, pos)[0]
                    pos += 8
                    stack.append(take(ln))
                elif op == BYTEARRAY8:
                    need(8)
                    ln = _Q(data, pos)[0]
                    pos += 8
                    stack.append(bytearray(take(ln)))
                elif op == BINUNICODE8:
                    need(8)
                    ln = _Q(data, pos)[0]
                    pos += 8
                    stack.append(str(take(ln), "utf-8", "surrogatepass"))
                elif op == SHORT_BINSTRING:
                    need(1)
                    ln = data[pos]
                    pos += 1
                    stack.append(_decode_string(take(ln)))
                elif op == BINSTRING:
                    need(4)
                    ln = _i(data, pos)[0]
                    pos += 4
                    stack.append(_decode_string(take(ln)))
                elif op == STRING:
                    line = readline().rstrip(b"\r")
                    if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
                        raise _Error("the STRING opcode argument must be quoted")
                    stack.append(_decode_string(codecs.escape_decode(line[1:-1])[0]))
                elif op == UNICODE:
                    stack.append(str(readline(), "raw-unicode-escape"))
                elif op == INT:
                    line = readline()
                    if line == b"00":
                        stack.append(False)
                    elif line == b"01":
                        stack.append(True)
                    else:
                        stack.append(_parse_int(line))
                elif op == LONG:
                    line = readline()
                    if line.endswith(b"L"):
                        line = line[:-1]
                    stack.append(_parse_int(line))
                elif op == LONG1:
                    need(1)
                    ln = data[pos]
                    pos += 1
                    stack.append(int.from_bytes(take(ln), "little", signed=True))
                elif op == LONG4:
                    need(4)
                    ln = _i(data, pos)[0]
                    pos += 4
                    if ln < 0:
                        raise _Error("LONG4 with a negative byte count")
                    if ln > MAX_LONG_BYTES:
                        raise LimitExceeded(f"{where}: integer of {ln} bytes exceeds the limit of "
                                            f"{MAX_LONG_BYTES} bytes")
                    stack.append(int.from_bytes(take(ln), "little", signed=True))
                elif op == FLOAT:
                    stack.append(float(readline()))
                elif op == GET:
                    stack.append(memo[_parse_int(readline())])
                elif op == PUT:
                    idx = _parse_int(readline())
                    if idx < 0:
                        raise _Error("negative PUT argument")
                    memo[idx] = stack[-1]
                    if len(memo) > max_memo:
                        raise LimitExceeded(f"{where}: memo larger than {max_memo} entries")
                elif op == PERSID:
                    pid = readline().decode("ascii")
                    if persistent_load is None:
                        raise _Error("persistent id without a persistent_load")
                    stack.append(persistent_load(pid))
                elif op == INST:
                    module = readline().decode("utf-8")
                    name = readline().decode("utf-8")
                    cls = find_class(module, name, "INST")
                    args = tuple(pop_mark())
                    stack.append(call(cls, args, "inst", "INST"))
                elif op == OBJ:
                    items = pop_mark()
                    if not items:
                        raise _Error("OBJ without a class")
                    cls = items[0]
                    if type(cls) is GlobalRef:
                        use(cls.module, cls.name, "OBJ")
                    stack.append(call(cls, tuple(items[1:]), "obj", "OBJ"))
                elif op in (EXT1, EXT2, EXT4):
                    if op == EXT1:
                        need(1)
                        code = data[pos]
                        pos += 1
                    elif op == EXT2:
                        need(2)
                        code = _H(data, pos)[0]
                        pos += 2
                    else:
                        need(4)
                        code = _i(data, pos)[0]
                        pos += 4
                    # The extension registry (copyreg) is never consulted: the code names a
                    # global we cannot see, so it is always reported.
                    opname = OPCODE_NAMES[op]
                    use("<extension>", str(code), opname)
                    stack.append(GlobalRef("<extension>", str(code)))
                elif op == NEXT_BUFFER:
                    raise _Error("out-of-band buffer (NEXT_BUFFER) without buffers")
                elif op == READONLY_BUFFER:
                    if type(stack[-1]) not in (bytes, bytearray):
                        raise _Error(f"READONLY_BUFFER on {_describe(stack[-1])}")
                else:
                    raise _Error("unknown opcode")
    except UnreadableError:
        raise
    except _Error as e:
        raise UnreadableError(f"malformed {where}: {e} ({_opname(op)} near byte {pos})") from e
    except (IndexError, struct.error) as e:
        if pos >= n or isinstance(e, struct.error):
            raise PickleTruncated(f"{where}: truncated at byte {pos} ({_opname(op)})") from e
        raise UnreadableError(f"malformed {where}: stack underflow ({_opname(op)} near byte "
                              f"{pos})") from e
    except KeyError as e:
        raise UnreadableError(f"malformed {where}: memo key missing ({_opname(op)} near byte "
                              f"{pos})") from e
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UnreadableError(f"malformed {where}: {msg} ({_opname(op)} near byte {pos})") from e


def _decode_string(raw: bytes) -> str:
    """Non-unicode STRING/BINSTRING values, decoded as torch.load does (``encoding="utf-8"``)."""
    return raw.decode("utf-8")


def _parse_int(line: bytes) -> int:
    text = line.strip()
    try:
        return int(text, 0)
    except ValueError:
        return int(text)  # "007": base 0 refuses leading zeros, C's strtol does not


def _opname(op: int) -> str:
    return OPCODE_NAMES.get(op, f"opcode 0x{op:02x}") if op >= 0 else "start"


def _describe(value: Any) -> str:
    """A short, safe description of a value for messages and pseudo-global names."""
    t = type(value)
    if t is GlobalRef:
        return value.qualname
    if t is Opaque:
        return f"{value.qualname}(...)"
    if t is str:
        return repr(value[:60])
    if t in (bytes, bytearray):
        return f"{t.__name__}[{len(value)}]"
    if t in (int, float, bool) or value is None:
        return repr(value)[:60]
    return t.__name__


_MISSING = object()
_CHUNK = 1024
_CHUNK_RANGE = range(_CHUNK)
_MAX_COLLISIONS = 1_000
