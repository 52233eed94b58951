"""Turn a :class:`Checkpoint` into an :class:`Analysis`: every tensor with its path and role,
the subtrees that play a role, framework, byte accounting and the top-level table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ckpt_guard.analyze import accounting
from ckpt_guard.analyze.frameworks import detect_framework
from ckpt_guard.analyze.model import (
    Analysis,
    GlobalVerdict,
    RoleSubtree,
    TensorEntry,
    TopKey,
)
from ckpt_guard.analyze.roles import (
    OTHER_KEYS,
    RANK,
    is_ema_candidate,
    is_ema_key,
    is_rng_tensor,
    keyed_role,
    shape_overlap,
    structural_role,
)
from ckpt_guard.analyze.walk import (
    SKIP,
    Path,
    children,
    key_text,
    keys_of,
    module_attributes,
    path_text,
    walk,
)
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse, LimitExceeded
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import GlobalRef, Opaque, Storage, TensorRef, as_mapping
from ckpt_guard.vocab import Format, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

_EMA_PENDING = "ema?"  # an EMA-looking subtree: ema if other weights exist, else weights


class _Entry:
    """A tensor met by the collector. (The collector's records are plain classes: nothing
    compares or prints them, and a dataclass costs a cold start ~0.3 ms to create.)"""

    __slots__ = ("path", "ref", "role", "sub")

    def __init__(self, path: tuple, ref: TensorRef, role: str | None, sub: int | None) -> None:
        self.path, self.ref, self.role, self.sub = path, ref, role, sub


class _Sub:
    """A subtree that plays a role."""

    __slots__ = ("path", "role", "what")

    def __init__(self, path: tuple, role: str, what: str) -> None:
        self.path, self.role, self.what = path, role, what


class _Collector:
    """One pass over the tree: tensors, bare storages, and subtrees that play a role."""

    def __init__(self, root: Any) -> None:
        # Loose 0-d tensors next to structure (``best_acc1``, ``steps``) are bookkeeping;
        # in a flat state dict they are buffers (``num_batches_tracked``).
        m = as_mapping(root)
        self.flat_root = bool(m) and 2 * sum(isinstance(v, TensorRef) for v in m.values()) >= len(m)
        self.entries: list[_Entry] = []
        self.storages: list[tuple[tuple, Storage, str | None]] = []
        self.subs: list[_Sub] = []
        self.budget = Limits().max_path_components

    def _keys(self, where: Path | None) -> tuple:
        """The keys down to ``where``, counted: deep nesting times many tensors must not
        make the analysis quadratic (a LimitExceeded instead)."""
        depth = where[2] if where is not None else 0
        self.budget -= depth + 1
        if self.budget < 0:
            raise LimitExceeded("analysis: tensor paths too many or too deep (more than "
                                f"{Limits().max_path_components} path components)")
        return keys_of(where)

    def _open(self, path: tuple, role: str, what: str) -> tuple[str, int]:
        self.subs.append(_Sub(path, role, what))
        return role, len(self.subs) - 1

    def visit(self, where: Path | None, node: Any, inherited: Any) -> Any:
        role, sub = inherited if inherited else (None, None)
        if isinstance(node, TensorRef):
            path = self._keys(where)
            if (role in (None, Role.OTHER) and is_rng_tensor(node) and not self._in_weights(path)
                    and not (self.flat_root and len(path) == 1)):
                role, sub = self._open(path, Role.RNG, "torch RNG state (ByteTensor)")
            elif role is None and len(path) == 1 and not self.flat_root and node.numel <= 1:
                role = Role.OTHER
            self.entries.append(_Entry(path, node, role, sub))
            return SKIP
        if isinstance(node, Storage):
            self.storages.append((self._keys(where), node, role))
            return SKIP
        if node is None or isinstance(node, (str, bytes, int, float, complex, GlobalRef)):
            return SKIP
        if role in (None, Role.OTHER):
            key = where[1] if where is not None else None
            found = structural_role(node) or (keyed_role(key, node) if where else None)
            if found:
                return self._open(self._keys(where), *found)
            if role is None and where is not None and is_ema_candidate(key, node):
                return self._open(self._keys(where), _EMA_PENDING, "")
            if role is None and where is not None and where[2] == 1 and key in OTHER_KEYS:
                return Role.OTHER, None
        return role, sub

    @staticmethod
    def _in_weights(path: tuple) -> bool:
        # A uint8 buffer of 5056 elements inside a model is a buffer, not an RNG state.
        return any(isinstance(k, str) and k in ("state_dict", "model", "module") for k in path)


def _flat_ema_groups(col: _Collector) -> None:
    """Flat state dicts holding ``ema.*``/``model_ema.*`` keys next to plain ones."""
    by_parent: dict[tuple, list[_Entry]] = {}
    for e in col.entries:
        if e.role is None and e.path and isinstance(e.path[-1], str):
            by_parent.setdefault(e.path[:-1], []).append(e)
    for parent, group in by_parent.items():
        ema = [e for e in group if is_ema_key(e.path[-1])]
        if not ema or len(ema) == len(group):
            continue
        prefixes: dict[str, int] = {}
        for e in ema:
            prefix = e.path[-1].split(".", 1)[0]
            if prefix not in prefixes:
                col.subs.append(_Sub((*parent, prefix + ".*"), _EMA_PENDING, ""))
                prefixes[prefix] = len(col.subs) - 1
            e.role, e.sub = _EMA_PENDING, prefixes[prefix]


def _by_sub(entries: list[_Entry]) -> dict[int, list[_Entry]]:
    out: dict[int, list[_Entry]] = {}
    for e in entries:
        if e.sub is not None:
            out.setdefault(e.sub, []).append(e)
    return out


def _resolve_ema(col: _Collector) -> None:
    weights_shapes = [e.ref.shape for e in col.entries if e.role is None]
    have_weights = bool(weights_shapes)
    by_sub = _by_sub(col.entries)
    for i, sub in enumerate(col.subs):
        if sub.role != _EMA_PENDING:
            continue
        members = by_sub.get(i, [])
        if not members:
            sub.role, sub.what = Role.OTHER, "empty EMA slot"
            continue
        if not have_weights:
            sub.role, sub.what = Role.WEIGHTS, "EMA model, the only copy of the weights"
            have_weights = True
            weights_shapes = [e.ref.shape for e in members]
        else:
            overlap = shape_overlap([e.ref.shape for e in members], weights_shapes)
            sub.role = Role.EMA
            sub.what = ("EMA copy of the weights (same shapes)" if overlap >= 0.5
                        else "EMA weights")
        for e in members:
            e.role = sub.role


def _weights_subtrees(col: _Collector, root: Any) -> None:
    """Name where the plain weights live: the root, or each top-level key holding them."""
    loose = [e for e in col.entries if e.role == Role.WEIGHTS and e.sub is None]
    if not loose:
        return
    whole = module_attributes(root) is not None or _is_tensor_mapping(root)
    groups: dict[tuple, list[_Entry]] = {}
    for e in loose:
        groups.setdefault(() if whole or not e.path else e.path[:1], []).append(e)
    for path, group in groups.items():
        col.subs.append(_Sub(path, Role.WEIGHTS, "model weights"))
        for e in group:
            e.sub = len(col.subs) - 1


def _is_tensor_mapping(node: Any) -> bool:
    m = as_mapping(node)
    return bool(m) and all(isinstance(v, TensorRef) for v in m.values())


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, TensorRef):
        return "tensor"
    if isinstance(value, Storage):
        return "storage"
    if isinstance(value, GlobalRef):
        return f"global {value.qualname}"
    if _is_tensor_mapping(value):
        return "tensors"
    if isinstance(value, dict) or (isinstance(value, Opaque) and as_mapping(value) is not None
                                   and module_attributes(value) is None):
        return "dict"
    if isinstance(value, Opaque):
        return f"Opaque {value.qualname}"
    return type(value).__name__


def _top_level(root: Any, entries: list[_Entry], subs: list[_Sub],
               uses: dict) -> list[TopKey]:
    flat = _is_tensor_mapping(root)
    rows: dict[str, tuple[Any, str]] = {}  # label → (representative value, kind)
    if flat:
        for k, v in (as_mapping(root) or {}).items():
            label = str(k).split(".", 1)[0] + ".*" if "." in str(k) else str(k)
            rows.setdefault(label, (v, "tensors" if label.endswith(".*") else _kind(v)))
    else:
        for k, v in children(root):
            rows.setdefault(path_text((k,)), (v, _kind(v)))

    def label_of(path: tuple) -> str:
        if not path:
            return ""
        first = path[0] if isinstance(path[0], str) else key_text(path[0])
        if flat and "." in first:
            return first.split(".", 1)[0] + ".*"
        return first

    storages_by_label: dict[str, list[Storage]] = {}
    for e in entries:
        for storage, _dtype in accounting.views(e.ref):
            storages_by_label.setdefault(label_of(e.path), []).append(storage)
    sub_roles: dict[str, str] = {}
    for s in subs:
        lbl = label_of(s.path)
        if lbl and (lbl not in sub_roles or RANK[s.role] < RANK[sub_roles[lbl]]):
            sub_roles[lbl] = s.role
    module_root = module_attributes(root) is not None
    out = []
    for label, (_value, kind) in rows.items():
        storages = storages_by_label.get(label, [])
        per_role: dict[str, int] = {}
        seen: set = set()
        for st in storages:
            k = accounting.storage_key(st)
            if k in seen:
                continue
            seen.add(k)
            role = uses[k].role if k in uses else Role.OTHER
            per_role[role] = per_role.get(role, 0) + st.nbytes
        if per_role and max(per_role.values()) > 0:
            role = max(per_role.items(), key=lambda kv: (kv[1], -RANK[kv[0]]))[0]
        else:
            role = sub_roles.get(label, Role.OTHER)
        if module_root and not per_role and (label.startswith("_") or label == "training"):
            continue  # nn.Module bookkeeping (hooks, flags) of a pickled whole model
        out.append(TopKey(key=label, kind=kind, bytes=sum(per_role.values()), role=role))
    return out


def _verdicts(ckpt: Checkpoint) -> list[GlobalVerdict]:
    out = verdicts(ckpt.globals)
    if ckpt.code:  # a TorchScript archive's code runs at load: judged like the pickles
        from ckpt_guard.analyze.torchscript import code_verdicts

        out.extend(code_verdicts(ckpt.code))
    return out


def verdicts(uses: Iterable[GlobalUse]) -> list[GlobalVerdict]:
    """The safety class of each distinct global in ``uses`` (also those an
    :class:`~ckpt_guard.read.UnreadableError` carries: a failure never loses a verdict)."""
    from ckpt_guard.analyze.safety import classify

    # One verdict per global, judged by everything any pickle of the file does with it (a
    # name stored as a value in one place and called in another is called).
    first: dict[str, GlobalUse] = {}
    how: dict[str, set[str]] = {}
    for use in uses:
        first.setdefault(use.qualname, use)
        how.setdefault(use.qualname, set()).update(use.uses)
    out = []
    for qual, use in first.items():
        safety, reason = classify(use.module, use.name, how[qual])
        if how[qual] != use.uses:
            use = replace(use, uses=how[qual])
        out.append(GlobalVerdict(use=use, safety=safety, reason=reason))
    return out


def analyze_file(ckpt: Checkpoint, force_role: str | None = None) -> Analysis:
    """Analyze one file. ``force_role`` (from a directory member's name, e.g. ``optimizer.pt``)
    makes every byte of the file count for that role."""
    col = _Collector(ckpt.root)
    walk(ckpt.root, col.visit)
    _flat_ema_groups(col)
    _resolve_ema(col)
    for e in col.entries:
        if e.role is None:
            e.role = Role.WEIGHTS
    _weights_subtrees(col, ckpt.root)
    if force_role is not None:
        for e in col.entries:
            e.role = force_role
        col.subs = [_Sub((), force_role, f"{force_role} file")]
        for e in col.entries:
            e.sub = 0
    viewings = [(st, e.role, dtype) for e in col.entries for st, dtype in accounting.views(e.ref)]
    # A bare storage under an EMA-looking subtree (e.g. beside a tensor whose rebuild
    # function is unknown) has no tensor to settle its role: count it as EMA.
    viewings += [(st, force_role or (Role.EMA if role == _EMA_PENDING else role) or Role.OTHER,
                  st.dtype) for _p, st, role in col.storages]
    uses = accounting.assign(viewings)
    subtrees = []
    by_sub = _by_sub(col.entries)
    for i, s in enumerate(col.subs):
        stor = [st for e in by_sub.get(i, []) for st, _d in accounting.views(e.ref)]
        subtrees.append(RoleSubtree(path=path_text(s.path), role=s.role,
                                    bytes=accounting.unique_bytes(stor), what=s.what))
    return Analysis(
        checkpoint=ckpt,
        framework=detect_framework(ckpt),
        tensors=[TensorEntry(path=path_text(e.path), role=e.role or Role.WEIGHTS, ref=e.ref)
                 for e in col.entries],
        subtrees=subtrees,
        bytes_by_role=accounting.by_role(uses),
        bytes_by_dtype=accounting.by_dtype(uses),
        tensor_bytes_total=sum(u.nbytes for u in uses.values()),
        top_level=_top_level(ckpt.root, col.entries, col.subs, uses),
        globals=_verdicts(ckpt),
    )


def analyze(ckpt: Checkpoint) -> Analysis:
    """Roles, framework, byte accounting, top-level table and global safety of ``ckpt``."""
    if ckpt.format == Format.DCP_DIR:
        from ckpt_guard.analyze.dcp import analyze_dcp

        return analyze_dcp(ckpt)
    if ckpt.format in (Format.SHARDED_SAFETENSORS, Format.SHARDED_TORCH):
        from ckpt_guard.analyze.sharded import analyze_sharded

        return analyze_sharded(ckpt)
    if ckpt.format in (Format.HF_CHECKPOINT_DIR, Format.DEEPSPEED_DIR) or (ckpt.children
                                                                 and ckpt.root is None):
        from ckpt_guard.analyze.directory import analyze_directory

        return analyze_directory(ckpt)
    return analyze_file(ckpt)
