"""Judge an archive's TorchScript code: ``torch.jit.load`` compiles and runs it.

``torch.load`` hands a zip holding ``constants.pkl`` to ``torch.jit.load``, which compiles the
archive's ``code/**/*.py`` with TorchScript's own frontend and runs it: a class's
``__setstate__`` runs while the archive loads, ``forward`` whenever the model is used. So a
TorchScript archive is code. ``torch.from_file(path, True, n)`` in a ``__setstate__`` creates
and writes any file (a ``.pth`` in site-packages is Python code on the next start);
``torch.save`` writes one. The source is Python syntax: it is parsed with :mod:`ast` (never
compiled or run) and every name it reaches is judged against an ALLOWLIST of what real
TorchScript code names (torch/csrc/jit/serialization/import_source.cpp and the compiler's
builtins, ir_emitter.cpp), wherever it occurs (the whole file, not only ``__setstate__``):

* ``torch.<op>`` / ``torch.autograd.<op>`` (the importer maps both to ``aten::<op>``) and
  ``ops.<ns>.<op>``: operators of torch's registry (``torchscript_ops.txt``) in namespaces
  that compute on tensors (aten, prim, quantized, …), minus the ones that touch files, the
  network or Python (``aten::from_file``, ``aten::save``, ``prim::rpc_*``, ``prim::PythonOp``);
* ``__torch__.<…>``: the archive's own classes and functions (judged here too), and custom C++
  classes (``__torch__.torch.classes.<ns>.<cls>``) only from a short list;
* what the importer and compiler define (``fork``, ``annotate``, ``unchecked_cast``,
  ``CONSTANTS.c0``, ``len``, ``range``, type names, …) and the names the code binds itself.

Anything else is unsafe: an unknown name, an operator torch 2.13 does not know, a custom op
namespace, a namespace used as a value (``t = torch`` makes ``t.from_file`` unreadable by
name). ``x.from_file``/``x.save`` are unsafe on any value (the compiler resolves a method
name to an operator of that name); ``getattr(obj, "name")`` is read as ``obj.name``.

Python's tokenizer and TorchScript's lexer could disagree on where a string ends; so the raw
text, strings and comments included, is also searched for the dangerous names.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from ckpt_guard.analyze.model import GlobalVerdict
from ckpt_guard.read.checkpoint import GlobalUse
from ckpt_guard.read.torchscript_code import CodeRecord

UNSAFE = "unsafe"

# Namespaces whose operators compute on tensors and values; their operator names come from
# torch's registry (scripts/gen_torchscript_ops.py). Distributed/RPC/profiler/test namespaces
# (c10d, _c10d_functional, symm_mem, profiler, _test, …) and third-party ones are not here.
OP_NAMESPACES = ("aten", "prim", "quantized", "_quantized", "sparse", "mkldnn",
                 "mkldnn_prepacked", "onednn", "quantization")
# Operators of builds or packages this torch lacks, that real archives call (XNNPACK's
# optimize_for_mobile, torchvision's detection ops): compute only.
_EXTRA_OPS = frozenset({
    *(f"prepacked::{n}" for n in (
        "linear_clamp_prepack", "linear_clamp_run", "conv2d_clamp_prepack",
        "conv2d_clamp_run", "conv2d_transpose_clamp_prepack", "conv2d_transpose_clamp_run",
        "unpack_prepacked_sizes_conv2d", "unpack_prepacked_sizes_linear")),
    *(f"torchvision::{n}" for n in (
        "nms", "roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "deform_conv2d",
        "_interpolate_bilinear2d_aa", "_interpolate_bicubic2d_aa", "_cuda_version")),
})
# Operators that touch files, the network or the Python interpreter: unsafe by name in any
# position (a method call ``x.save(p)`` resolves to the operator of that name).
DANGEROUS = {
    "from_file": "creates or maps a file; with shared=True it writes one",
    "save": "writes a file (aten::save)",
    "rpc_async": "network call (RPC)", "rpc_sync": "network call (RPC)",
    "rpc_remote": "network call (RPC)",
    "PythonOp": "calls a Python function", "IgnoredPythonOp": "calls a Python function",
}
# The raw-text search: distinctive names anywhere; ``save`` (an English word in messages)
# only where it reads as code: ``.save``, ``save(``, ``"save"``.
_DANGEROUS_TEXT = re.compile(
    r"(?<![A-Za-z0-9_])(" + "|".join(n for n in DANGEROUS if n != "save") + r")(?![A-Za-z0-9_])"
    r"|\.[\s\\]*(save)(?![A-Za-z0-9_])|(?<=[\"'])(save)(?=[\"'])"
    r"|(?<![A-Za-z0-9_])(save)(?=[\s\\]*\()")
# Custom C++ classes real archives carry (quantized/sparse packed weights, RNN cell params,
# mobile op contexts). Others (c10d process groups and stores, RPC, NNAPI, profiling) are out.
CUSTOM_CLASSES = frozenset({
    *(f"quantized.{c}" for c in ("LinearPackedParamsBase", "Conv2dPackedParamsBase",
                                 "Conv3dPackedParamsBase", "EmbeddingPackedParamsBase")),
    "sparse.LinearPackedParamsBase", "rnn.CellParamsBase", "mkldnn.ConvOpContext",
    *(f"xnnpack.{c}" for c in ("LinearOpContext", "Conv2dOpContext",
                               "TransposeConv2dOpContext")),
    "LinearPackedParamsBase",  # the importer's own spelling for old quantized Linear
})
# Names the importer (import_source.cpp) and the compiler's globals (ir_emitter.cpp) define,
# and the type names annotations use. RPC builtins are deliberately absent.
_BUILTINS = frozenset({
    "fork", "annotate", "unchecked_cast", "uninitialized", "inf", "nan", "CONSTANTS",
    "print", "tuple", "float", "complex", "int", "bool", "str", "getattr", "hasattr",
    "isinstance", "_to_tensor", "len", "hex", "oct", "round", "hash", "id", "min", "max",
    "abs", "all", "any", "divmod", "sum", "list", "dict", "ord", "chr", "bin", "pow", "range",
    "zip", "enumerate", "rangelist", "sorted", "AssertionError", "wait", "awaitable",
    "awaitable_wait", "awaitable_nowait", "__annotations__", "__parameters__", "__buffers__",
    "Tensor", "Optional", "List", "Dict", "Tuple", "Union", "Final", "NoneType", "Any",
    "Future", "Await", "RRef", "Device", "Stream", "Generator", "Storage", "number",
    "Module", "NamedTuple", "Interface", "ModuleInterface", "Enum", "Layout", "ScalarType",
    "MemoryFormat", "QScheme", "AnyEnumType", "Capsule", "Scalar", "SymInt", "SymFloat",
    "SymBool", "BroadcastingList1", "BroadcastingList2", "BroadcastingList3",
})
_CONSTANT = re.compile(r"c[0-9]+\Z")
_TODO = (ast.Call, ast.Import, ast.ImportFrom)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class CodeFinding:
    """One unsafe reference in a code record: what is named (as written), why, where."""

    what: str
    reason: str
    member: str
    line: int = 0


@functools.cache
def known_ops() -> frozenset[str]:
    """``namespace::name`` of every operator real TorchScript code may name."""
    text = resources.files("ckpt_guard.analyze").joinpath("torchscript_ops.txt").read_text(
        "ascii")
    ops = {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}
    return frozenset(ops) | _EXTRA_OPS


def custom_class_reason(name: str) -> str | None:
    """Why the custom C++ class ``<ns>.<cls>`` (of ``__torch__.torch.classes.<ns>.<cls>``)
    is unsafe, or ``None`` when it is one real archives carry."""
    if name in CUSTOM_CLASSES:
        return None
    return (f"custom C++ class torch.classes.{name} is not one real archives carry (its "
            "constructor/__setstate__ runs native code: stores, process groups, RPC)")


def judge(member: str, text: str, max_nodes: int) -> tuple[list[CodeFinding], int]:
    """Unsafe references of one code record, and how many syntax nodes it had. ``text``
    is the record decoded; more than ``max_nodes`` nodes is itself a finding.
    ``getattr(ml, "0")`` (a ModuleList child) names an index, not an identifier."""
    raw = [CodeFinding(m.group(m.lastindex or 0), DANGEROUS[m.group(m.lastindex or 0)],
                       member, text.count("\n", 0, m.start()) + 1)
           for m in _DANGEROUS_TEXT.finditer(text)]
    try:
        tree = ast.parse(text, filename=member)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        # TorchScript's parser is not Python's; what Python cannot read is not judged.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [*raw, CodeFinding("<unparsed code>", f"cannot be judged: {reason}",
                                  member)], 0
    bound: set[str] = set()
    inner: set[int] = set()  # nodes that are the object of an attribute: judged from its end
    todo: list[ast.AST] = []
    nodes = 0
    for node in ast.walk(tree):  # one pass: bindings, chains, the nodes to judge
        nodes += 1
        if nodes > max_nodes:
            return [*raw, CodeFinding("<code>", f"more than {max_nodes} syntax nodes: too "
                                      "large to judge", member)], nodes
        kind = type(node)
        if kind is ast.Attribute:
            inner.add(id(node.value))  # type: ignore[attr-defined]
            todo.append(node)
        elif kind is ast.Name:
            if type(node.ctx) is ast.Load:  # type: ignore[attr-defined]
                todo.append(node)
            else:
                bound.add(node.id)  # type: ignore[attr-defined]
        elif kind in _TODO:
            todo.append(node)
        elif kind is ast.arg:
            bound.add(node.arg)  # type: ignore[attr-defined]
        elif kind in _DEFS or (kind is ast.ExceptHandler and node.name):  # type: ignore
            bound.add(node.name)  # type: ignore[attr-defined]
    judge_ = _Judge(member, bound, inner)
    for node in todo:
        judge_.visit(node)
    # The raw-text search repeats what the syntax tree shows; keep only what it adds (a
    # name inside a string or comment, where the two lexers might disagree).
    shown = {(f.line, f.what.rsplit(".", 1)[-1]) for f in judge_.found}
    return [*judge_.found, *(f for f in raw if (f.line, f.what) not in shown)], nodes


def judge_records(records: Iterable[CodeRecord]) -> list[CodeFinding]:
    """Every unsafe reference in an archive's code records, the node budget shared."""
    out: list[CodeFinding] = []
    used = 0
    for rec in records:
        if rec.text is None:
            out.append(CodeFinding("<code>", rec.problem, rec.member))
            continue
        if used >= rec.node_budget:  # spent: no parse at all
            out.append(CodeFinding("<code>", f"more than {rec.node_budget} syntax nodes in "
                                   "all: too large to judge", rec.member))
            continue
        found, nodes = judge(rec.member, rec.text, rec.node_budget - used)
        used += nodes
        out.extend(found)
    return out


def code_verdicts(records: Iterable[CodeRecord]) -> list[GlobalVerdict]:
    """The unsafe findings of :func:`judge_records` as verdicts beside the pickles' globals
    (opcode ``TorchScript``; ``member`` names the record and line), one per name and
    record."""
    out: dict[tuple[str, str], GlobalVerdict] = {}
    for f in judge_records(records):
        module, _dot, name = f.what.rpartition(".")
        where = f"{f.member} line {f.line}" if f.line else f.member
        use = GlobalUse(module, name, "TorchScript", where)
        out.setdefault((use.qualname, f.member), GlobalVerdict(use, UNSAFE, f.reason))
    return list(out.values())


class _Judge:
    def __init__(self, member: str, bound: set[str], inner: set[int]) -> None:
        self.member = member
        self.bound = bound
        self.inner = inner
        self.found: list[CodeFinding] = []

    def flag(self, node: ast.AST, what: str, reason: str) -> None:
        self.found.append(CodeFinding(what, reason, self.member, getattr(node, "lineno", 0)))

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) or any(
                    n != "__torch__" and not n.startswith("__torch__.") for n in names):
                self.flag(node, f"import {', '.join(names)}", "imports outside __torch__")
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "hasattr"):
            self._getattr(node)
            return
        if not isinstance(node, (ast.Name, ast.Attribute)):
            return
        if id(node) in self.inner:
            return  # inside a longer chain: judged from its end
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            return
        chain: list[str] = []
        base: ast.AST = node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        if isinstance(base, ast.Name):
            self._chain(node, [base.id, *chain])
        else:  # attributes of a computed value: (x).method, (t)[0].attr
            self._attrs(node, chain)

    def _getattr(self, node: ast.Call) -> None:
        args = node.args
        if len(args) < 2 or node.keywords or not (
                isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)
                and args[1].value.isascii()
                and (args[1].value.isidentifier() or args[1].value.isdigit())):
            self.flag(node, f"{node.func.id}(…)",  # type: ignore[attr-defined]
                      "attribute name computed, or not an identifier or index")
            return
        target = ast.Attribute(value=args[0], attr=args[1].value, ctx=ast.Load())
        ast.copy_location(target, node)
        self.visit(target)

    def _attrs(self, node: ast.AST, names: Iterable[str]) -> None:
        for name in names:
            if name in DANGEROUS:
                self.flag(node, f"(…).{name}", DANGEROUS[name])
            elif not name.isascii():
                self.flag(node, f"(…).{name}", "non-ASCII name (Python folds it, "
                          "TorchScript does not)")

    def _chain(self, node: ast.AST, chain: list[str]) -> None:
        head, rest = chain[0], chain[1:]
        what = ".".join(chain)
        if not all(p.isascii() for p in chain):
            self.flag(node, what, "non-ASCII name (Python folds it, TorchScript does not)")
            return
        if head == "torch":
            while rest and rest[0] == "autograd":  # torch.autograd is aten too
                rest = rest[1:]
            if len(rest) != 1:
                self.flag(node, what, "namespace used as a value or nested beyond an "
                          "operator (hides what is called)")
                return
            self._op(node, what, "aten", rest[0])
        elif head == "ops":
            if len(rest) != 2:
                self.flag(node, what, "operator namespace used as a value (hides what is "
                          "called)")
                return
            self._op(node, what, rest[0], rest[1])
        elif head == "__torch__":
            self._torch_namespace(node, what, rest)
        elif head == "CONSTANTS":
            if len(rest) != 1 or not _CONSTANT.match(rest[0]):
                self.flag(node, what, "CONSTANTS used other than as CONSTANTS.c<N>")
        elif head in _BUILTINS and head not in self.bound:
            if rest:  # len.x, fork.y: no real code does this
                self.flag(node, what, f"attribute of builtin {head!r}")
        elif head in DANGEROUS:
            self.flag(node, what, DANGEROUS[head])
        elif head in self.bound:
            self._attrs(node, rest)
        else:
            self.flag(node, what, f"unknown name {head!r} (not a TorchScript builtin, the "
                      "archive's code or a local)")

    def _op(self, node: ast.AST, what: str, namespace: str, name: str) -> None:
        if name in DANGEROUS:
            self.flag(node, what, DANGEROUS[name])
        elif f"{namespace}::{name}" not in known_ops():
            where = (f"namespace {namespace!r} is not one whose operators ckpt-guard knows "
                     "(custom ops run native code of whatever library registered them)"
                     if namespace not in OP_NAMESPACES and not any(
                         o.startswith(f"{namespace}::") for o in _EXTRA_OPS)
                     else f"{namespace}::{name} is not an operator torch 2.13 knows")
            self.flag(node, what, where)

    def _torch_namespace(self, node: ast.AST, what: str, rest: list[str]) -> None:
        # __torch__.torch.classes.<ns>.<cls> is a custom C++ class; everything else under
        # __torch__ is the archive's own code, judged record by record.
        if rest[:2] == ["torch", "classes"] or not rest or rest == ["torch"]:
            name = ".".join(rest[2:4]) if len(rest) > 2 else ""
            if rest[:2] != ["torch", "classes"] or len(rest) < 3:
                self.flag(node, what, "TorchScript namespace used as a value")
            elif rest[2] == "LinearPackedParamsBase":
                return
            elif len(rest) < 4 or custom_class_reason(name):
                self.flag(node, what, custom_class_reason(name) or "custom class namespace "
                          "used as a value")
