"""The opcodes that name globals or build objects, as the interpreter runs them.

Nothing named is imported, resolved or called. ``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ``/
``EXT*`` become :class:`GlobalRef` values and leave a :class:`GlobalUse` trace; calls
(``REDUCE``/``NEWOBJ``/``NEWOBJ_EX``/``INST``/``OBJ``) become :class:`TensorRef` (torch's
``_rebuild_*`` functions, see :mod:`rebuild`) or :class:`Opaque`; ``BUILD``, ``APPEND*``,
``SETITEM*`` and ``ADDITEMS`` fill the object on the stack. Every path a real unpickler would
turn into code execution is traced, the indirect ones with pseudo-modules so that no
allowlist calls them safe: ``<call>`` (calling a call's result), ``<computed>`` (a
``STACK_GLOBAL`` name that is not a string), ``<extension>`` (the copyreg registry) and
``<mutate>`` (``BUILD``/``SETITEMS``/… on a global itself).
"""

from __future__ import annotations

from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING  # stdlib data tables, no code

from ckpt_guard.read import rebuild
from ckpt_guard.read.checkpoint import (
    CALLED,
    CONSTRUCTED,
    LOOKUP,
    PASSED,
    STATE,
    GlobalUse,
    LimitExceeded,
)
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.pickle_guards import IDENTITY_HASHED, key_cost
from ckpt_guard.read.pickle_scalars import Malformed
from ckpt_guard.read.pickle_values import UNMODELLED, CallValues, call_value, is_modelled
from ckpt_guard.read.tree import GlobalRef, Opaque, TensorRef

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

MAX_COLLISIONS = 1_000


class ObjectBuilder:
    """One pickle's globals trace and object-building state (protocol, dict-key guard).

    The interpreter keeps ``REDUCE`` of a named global inline (the hot path: one per tensor)
    and calls these methods for everything else.
    """

    __slots__ = ("globals", "member", "where", "proto", "max_container", "max_depth",
                 "key_work", "collisions", "key_hashes", "entries", "values")

    def __init__(self, globals_: list[GlobalUse], member: str, where: str,
                 limits: Limits) -> None:
        self.globals = globals_
        self.member = member
        self.where = where
        self.proto = 0  # set by PROTO: decides the protocol 2 name mapping
        self.max_container = limits.max_container
        self.max_depth = limits.max_depth
        self.key_work = 0
        self.collisions = 0
        self.key_hashes: dict[int, Any] = {}
        # id(GlobalRef) -> (the ref, its trace entry): where ``used`` records what the
        # unpickler does with a reference. The ref is kept so that its id stays unique.
        self.entries: dict[int, tuple[GlobalRef, GlobalUse]] = {}
        self.values = CallValues(where, limits.max_container)

    def use(self, module: str, name: str, opcode: str, ref: GlobalRef | None = None) -> None:
        entry = GlobalUse(module, name, opcode, self.member)
        self.globals.append(entry)
        if ref is not None:
            self.entries[id(ref)] = (ref, entry)

    def used(self, ref: Any, how: str) -> None:
        """Record that unpickling does ``how`` (:data:`~ckpt_guard.read.checkpoint.USES`)
        with ``ref`` when it is a global reference. The safety verdict judges a global by
        these: a function only stored as a value runs nothing, a called one runs."""
        if type(ref) is GlobalRef:
            entry = self.entries.get(id(ref))
            if entry is not None and entry[0] is ref:
                entry[1].uses.add(how)

    def used_args(self, args: Any) -> None:
        """References handed directly to a call (``defaultdict(f)``, ``_rebuild_from_type_v2
        (f, cls, args, state)``, ``getitem(obj, key)``): the callee may call them, iterate or
        subscript them. Tuples one level down count too (the inner ``args`` of
        ``_rebuild_from_type_v2``, the key tuple of ``getitem``)."""
        if type(args) is not tuple:
            return
        for a in args:
            t = type(a)
            if t is GlobalRef:
                self.used(a, PASSED)
            elif t is tuple:
                for b in a:
                    if type(b) is GlobalRef:
                        self.used(b, PASSED)
                    elif type(b) is Opaque and b.func.name == "getattr":
                        self.used(b.func, PASSED)
            elif t is Opaque and a.func.name == "getattr":
                # A looked-up torch op handed to a callee (``_rebuild_from_type_v2(op, ...)``
                # calls it): the lookup is then a call in disguise.
                self.used(a.func, PASSED)

    # ------------------------------------------------------------------------------ globals

    def find_class(self, module: str, name: str, opcode: str) -> GlobalRef:
        """``GLOBAL``/``STACK_GLOBAL``/``INST``: the reference a real unpickler would import.

        Protocols < 3 go through ``fix_imports`` (Python 2 names), so the safety layer judges
        what would actually be loaded.
        """
        if self.proto < 3:
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
        ref = GlobalRef(module, name)
        self.use(module, name, opcode, ref)
        return ref

    def stack_global(self, module: Any, name: Any) -> GlobalRef:
        if type(module) is str and type(name) is str:
            return self.find_class(module, name, "STACK_GLOBAL")
        # Names computed at unpickling time: a real unpickler refuses non-str, but never
        # call such a reference safe.
        text = f"{describe(module)} {describe(name)}"
        ref = GlobalRef("<computed>", text)
        self.use("<computed>", text, "STACK_GLOBAL", ref)
        return ref

    def extension(self, code: int, opname: str) -> GlobalRef:
        # The extension registry (copyreg) is never consulted: the code names a global we
        # cannot see, so it is always reported.
        ref = GlobalRef("<extension>", str(code))
        self.use("<extension>", str(code), opname, ref)
        return ref

    # -------------------------------------------------------------------------------- calls

    def call(self, func: Any, args: Any, how: str, opname: str,
             kwargs: dict | None = None) -> Any:
        """What ``func(*args, **kwargs)`` stands for (``how``: reduce, newobj, newobj_ex,
        inst, obj), built from the arguments as they are now (see :mod:`pickle_values`)."""
        if type(args) is not tuple:
            raise Malformed(f"{opname} arguments are not a tuple")
        self.used_args(args)
        if type(func) is GlobalRef:
            # NEWOBJ/NEWOBJ_EX only run ``cls.__new__`` (CPython refuses a non-type there);
            # REDUCE/INST/OBJ call whatever it is.
            self.used(func, CONSTRUCTED if how.startswith("newobj") else CALLED)
            if how in ("reduce", "inst", "obj"):
                t = rebuild.reduce(func, args)
                if t is not None:
                    return t
            value = call_value(func, how, args, kwargs, self)
            if value is not UNMODELLED:
                return value
            return self.opaque(func, how, args, kwargs)
        # Calling something that is not a named global: the result of another call, a value
        # from the memo... A real unpickler would execute it; leave a trace.
        name = describe(func)
        self.use("<call>", name, opname)
        return self.opaque(GlobalRef("<call>", name), how, args, kwargs)

    def opaque(self, func: GlobalRef, how: str, args: tuple, kwargs: dict | None) -> Opaque:
        """A call we do not evaluate; its container arguments are kept as they are now."""
        o = Opaque(func, how, args, kwargs)
        if args or kwargs:
            self.values.watch_call(o)
        return o

    def reducer(self, func: GlobalRef) -> Any:
        """The interpreter's cached ``REDUCE`` handler for a global that is not one of torch's
        rebuild functions: ``handler(func, args)`` → the result, or ``None`` to go through
        :meth:`call`."""
        if func.module == "builtins" and func.name in ("getattr", "type"):
            return LookupReducer(self)
        if not is_modelled(func):
            return self._opaque_reduce

        def modelled(f: GlobalRef, args: tuple) -> Any:
            if not args and f.name == "OrderedDict":
                return Opaque(f, "reduce", args)  # hot: a tensor's backward hooks
            v = call_value(f, "reduce", args, None, self)
            return None if v is UNMODELLED else v
        return modelled

    def _opaque_reduce(self, func: GlobalRef, args: tuple) -> Opaque:
        return self.opaque(func, "reduce", args, None)

    def newobj_ex(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(kwargs) is not dict:
            raise Malformed("NEWOBJ_EX keyword arguments are not a dict")
        return self.call(cls, args, "newobj_ex", "NEWOBJ_EX", kwargs)

    def obj(self, items: list[Any]) -> Any:
        """``OBJ``: MARK cls arg… OBJ calls ``cls(*args)``."""
        if not items:
            raise Malformed("OBJ without a class")
        cls = items[0]
        if type(cls) is GlobalRef:
            self.use(cls.module, cls.name, "OBJ", cls)
        return self.call(cls, tuple(items[1:]), "obj", "OBJ")

    # ----------------------------------------------------------------------- filling objects

    def build(self, inst: Any, state: Any) -> None:
        """``BUILD``: ``inst.__setstate__(state)``, recorded as the object's state."""
        t = type(inst)
        values = self.values
        if values.watched and id(inst) in values.watched:
            values.before_change(inst)
        if t is Opaque:
            if inst.has_state and not inst.unmodelled:
                # A second __setstate__ merges into (or replaces) the first: which one the
                # class does is unknown, and one recorded state cannot say it.
                inst.unmodelled = f"the pickle BUILDs {inst.qualname} twice"
            inst.state = state
            # ``__setstate__`` of the instance's class runs, with ``state`` as argument.
            self.used(inst.func, STATE)
            self.used_args((state,))
            values.watch_state(inst, state)
        elif t is TensorRef:
            # torch runs Tensor.__setstate__ (set_(*state) for a 4-tuple: a new storage,
            # size and stride) which the TensorRef does not model; torch.save never emits it.
            inst.state = state
            self.used(inst.func, STATE)
            self.used_args((state,))
            if not inst.unmodelled:
                inst.unmodelled = "the pickle BUILDs a tensor (torch runs Tensor.__setstate__)"
        elif t is GlobalRef:
            # BUILD on a bare global sets attributes on a class/module object.
            self.use("<mutate>", f"{inst.qualname} via BUILD", "BUILD")
        else:
            raise Malformed(f"BUILD on {describe(inst)}")

    def add_items(self, target: Any, items: list[Any], opname: str) -> None:
        """APPENDS/APPEND/ADDITEMS: ``items`` onto ``target``."""
        if items and self.values.watched and id(target) in self.values.watched:
            self.values.before_change(target)
        t = type(target)
        if t is list:
            if len(target) + len(items) > self.max_container:
                raise LimitExceeded(f"{self.where}: list longer than {self.max_container} items")
            target.extend(items)
        elif t is bytearray and opname in ("APPENDS", "APPEND"):
            # CPython calls bytearray.extend/append: ints 0..255 only (else it raises there,
            # and unpickling stops as it stops here)
            if not all(type(it) is int and 0 <= it <= 255 for it in items):
                raise Malformed(f"{opname} of a non-byte onto a bytearray")
            if len(target) + len(items) > self.max_container:
                raise LimitExceeded(f"{self.where}: bytearray longer than {self.max_container}")
            target.extend(items)
        elif t is set and opname == "ADDITEMS":
            for it in items:
                self.check_key(it)
            target.update(items)
            if len(target) > self.max_container:
                raise LimitExceeded(f"{self.where}: set larger than {self.max_container} items")
        elif t is Opaque:
            if target.listitems is None:
                target.listitems = []
            target.listitems.extend(items)
            self.used(target.func, STATE)  # its append/extend/add methods run
        elif t is GlobalRef:
            self.use("<mutate>", f"{target.qualname} via {opname}", opname)
        else:
            raise Malformed(f"{opname} on {describe(target)}")

    def set_items(self, target: Any, items: list[Any], opname: str) -> None:
        """SETITEMS/SETITEM/DICT: key/value pairs onto ``target``."""
        if len(items) % 2:
            raise Malformed(f"{opname} with an odd number of items")
        if items and self.values.watched and id(target) in self.values.watched:
            self.values.before_change(target)
        t = type(target)
        if t is dict:
            d = target
        elif t is Opaque:
            if target.dictitems is None:
                target.dictitems = {}
            d = target.dictitems
            self.used(target.func, STATE)  # its __setitem__ runs
        elif t is GlobalRef:
            self.use("<mutate>", f"{target.qualname} via {opname}", opname)
            return
        elif t is list and opname != "DICT":
            self._set_list_items(target, items, opname)
            return
        else:
            raise Malformed(f"{opname} on {describe(target)}")
        check_key = self.check_key
        for i in range(0, len(items), 2):
            k = items[i]
            if type(k) is not str:
                check_key(k)
            d[k] = items[i + 1]
        if len(d) > self.max_container:
            raise LimitExceeded(f"{self.where}: dict larger than {self.max_container} items")

    @staticmethod
    def _set_list_items(target: list, items: list[Any], opname: str) -> None:
        """SETITEM(S) on a list: CPython's unpickler does ``target[key] = value``
        (``PyObject_SetItem``), which a list accepts for an index in range. Anything else
        makes CPython fail there too (IndexError/TypeError), so loading stops at that opcode.
        """
        for i in range(0, len(items), 2):
            k = items[i]
            if type(k) not in (int, bool) or not -len(target) <= k < len(target):
                raise Malformed(f"{opname} on a list with index {describe(k)} (CPython raises "
                                "there)")
            target[k] = items[i + 1]

    def make_frozenset(self, items: list[Any]) -> frozenset:
        for it in items:
            self.check_key(it)
        return frozenset(items)

    def check_key(self, key: Any) -> None:
        """Keys whose hash a pickle can choose (big ints, floats, tuples) could all collide
        and make dict building quadratic: count real collisions, and the work of walking
        tuple keys. str/bytes hashes are randomised; our objects hash by identity."""
        t = type(key)
        if t is str or t is bytes or t in IDENTITY_HASHED:
            return
        cost = key_cost(key, self.max_depth)
        if not cost:
            return
        self.key_work += cost
        if self.key_work > self.max_container:
            raise LimitExceeded(f"{self.where}: more than {self.max_container} items in dict "
                                "keys")
        first = self.key_hashes.setdefault(hash(key), key)
        if first is not key and first != key:
            self.collisions += 1
            if self.collisions > MAX_COLLISIONS:
                raise LimitExceeded(f"{self.where}: more than {MAX_COLLISIONS} colliding dict "
                                    "keys")


class LookupReducer:
    """``REDUCE`` handler of ``builtins.getattr``/``builtins.type``: the two lookups torch.save
    writes for plain values (see :data:`~ckpt_guard.read.checkpoint.LOOKUP`) are judged as
    lookups, not as calls of getattr/type; any other call of them goes through
    :meth:`ObjectBuilder.call` (called, arguments passed)."""

    __slots__ = ("builder",)

    def __init__(self, builder: ObjectBuilder) -> None:
        self.builder = builder

    def __call__(self, func: GlobalRef, args: tuple) -> Opaque | None:
        if not _is_lookup(func.name, args):
            return None
        self.builder.used(func, LOOKUP)
        if func.name == "getattr":
            self.builder.used(args[0], LOOKUP)
        return self.builder.opaque(func, "reduce", args, None)


def _is_lookup(name: str, args: tuple) -> bool:
    if name == "type":
        return len(args) == 1 and args[0] is None
    if name != "getattr" or len(args) != 2:
        return False
    owner, attr = args
    return (type(owner) is GlobalRef and owner.module == "torch._C"
            and owner.name == "_VariableFunctionsClass" and type(attr) is str
            and attr.isascii() and attr.isidentifier() and not attr.startswith("_"))


def describe(value: Any) -> str:
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
    if t is int and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"  # repr() refuses over 4,300 digits
    if t in (int, float, bool) or value is None:
        return repr(value)[:60]
    return t.__name__
