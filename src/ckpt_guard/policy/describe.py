"""Short, specific descriptions of what a role subtree holds, for finding messages —
e.g. ``Adam-style state (exp_avg, exp_avg_sq) for 161 params``. Reads the reader's tree only.

A torch optimizer ``state_dict`` does not record the optimizer's class, so the description
names the *kind* of state its per-parameter buffers are (Adam-style moments, SGD momentum),
never a class it cannot know (Adam, AdamW, RAdam, LAMB… all write ``exp_avg``/``exp_avg_sq``).
"""

from __future__ import annotations

from ckpt_guard.analyze.roles import flat_state_slots, is_flat_optimizer_state_dict
from ckpt_guard.read.tree import Opaque, TensorRef, as_mapping, attributes

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

# Per-parameter state keys → the family of torch.optim (2.x) optimizers that write them.
# "-style": third-party optimizers reuse these key names, and the class is not recorded.
_BY_STATE_KEYS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"exp_avg", "exp_avg_sq", "mu_product"}), "NAdam-style"),
    (frozenset({"exp_avg", "exp_inf"}), "Adamax-style"),
    (frozenset({"exp_avg", "exp_avg_sq"}), "Adam-style"),
    (frozenset({"square_avg", "acc_delta"}), "Adadelta-style"),
    (frozenset({"square_avg"}), "RMSprop-style"),
    (frozenset({"momentum_buffer"}), "SGD momentum"),
    (frozenset({"sum"}), "Adagrad-style"),
    (frozenset({"eta", "mu", "ax"}), "ASGD-style"),
    (frozenset({"prev", "step_size"}), "Rprop-style"),
)
_MAX_DEPTH = 64


def find(root: Any, dotted: str) -> Any:
    """The value at ``dotted`` (as analysis writes subtree paths) under ``root``, or ``None``.
    Keys may themselves contain dots, so the longest matching key wins at each level."""
    if dotted == "":
        return root
    parts = dotted.split(".")
    node = root
    i = 0
    depth = 0
    while i < len(parts):
        depth += 1
        if depth > _MAX_DEPTH:
            return None
        mapping = _children(node)
        if mapping is None:
            return None
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            hit = _lookup(mapping, key)
            if hit is not _MISSING:
                node, i = hit, j
                break
        else:
            return None
    return node


_MISSING = object()


def _children(node: Any) -> dict | list | tuple | None:
    if isinstance(node, (list, tuple)):
        return node
    if isinstance(node, Opaque):
        items = as_mapping(node)
        if items:
            return items
        if node.listitems:
            return node.listitems
        return attributes(node)
    return as_mapping(node)


def _lookup(container: Any, key: str) -> Any:
    if isinstance(container, (list, tuple)):
        if key.isdigit() and int(key) < len(container):
            return container[int(key)]
        return _MISSING
    if key in container:
        return container[key]
    if key.lstrip("-").isdigit() and int(key) in container:  # optimizer state: {0: {...}}
        return container[int(key)]
    return _MISSING


def optimizer_summary(value: Any) -> str | None:
    """``"Adam-style state (exp_avg, exp_avg_sq) for 161 params"`` for a torch optimizer
    state_dict (or a list of them, as Lightning's ``optimizer_states``); ``None`` when not
    recognisable."""
    sds = value if isinstance(value, (list, tuple)) else [value]
    kinds: list[str] = []
    keys: list[str] = []
    params = 0
    for sd in sds:
        m = as_mapping(sd)
        if m is None:
            continue
        state = as_mapping(m.get("state"))
        if state is None and is_flat_optimizer_state_dict(m):
            # flatten_optimizer_state_dict=True (DCP): 'state.<fqn>.<slot>' keys
            fqns, slots = flat_state_slots(m)
            found = {s for s in slots if s != "step"}
            params += len(fqns)
            kinds.append(_kind(found))
            keys.extend(k for k in sorted(found) if k not in keys)
            continue
        if state is None:
            continue
        seen: set[str] = set()
        for per_param in state.values():
            pm = as_mapping(per_param)
            if pm is None:
                continue
            params += 1
            seen.update(str(k) for k in pm if isinstance(pm[k], TensorRef) and k != "step")
        kinds.append(_kind(seen))
        keys.extend(k for k in sorted(seen) if k not in keys)
    if not kinds:
        return None
    if not keys:
        return "no per-parameter buffers"
    kind = " + ".join(dict.fromkeys(k for k in kinds if k)) or "optimizer"
    return f"{kind} state ({', '.join(keys)}) for {params} param{'s' if params != 1 else ''}"


def _kind(keys: set[str]) -> str:
    for needed, kind in _BY_STATE_KEYS:
        if needed <= keys:
            return kind
    return ""
