"""torch.distributed.checkpoint directories: analyzed as the state dict torch's consolidation
(``dcp_to_torch_save``) builds — model, optimizer (nested or flattened), schedulers and
other training state found by the same structural rules as any checkpoint — with every
global of ``.metadata`` and of the items' pickles judged, and items that could not be read
kept as the directory's failures.

Globals are judged by what torch does with the pickle they are in
(torch/distributed/checkpoint/filesystem.py, default_planner.py, torch 2.13):

* ``.metadata`` — ``FileSystemReader.read_metadata`` runs plain ``pickle.load`` on every
  ``dcp.load``: there is no weights_only step a user could choose, so "needs code" means
  nothing there. What torch's writer stores (:data:`~ckpt_guard.analyze.known_classes.
  DCP_METADATA`: its dataclasses, the checkpoint's ``pathlib`` path) plus what torch's own
  weights_only loader accepts (dtypes, ``torch.Size``) are values; anything else would run its
  code unasked and is ``unsafe`` (fails closed).
* items of ``BytesStorageMetadata`` — ``DefaultLoadPlanner.load_bytes``:
  ``torch.load(weights_only=False)``; judged as any pickle torch executes (a custom class is
  ``needs-code``: its code runs on load).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ckpt_guard.analyze.analyzer import analyze_file, verdicts
from ckpt_guard.analyze.known_classes import DCP_METADATA
from ckpt_guard.analyze.model import Analysis, GlobalVerdict
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse, UnreadableError

METADATA = ".metadata"
_ORDER = {"safe": 0, "needs-code": 1, "unsafe": 2}


def analyze_dcp(ckpt: Checkpoint) -> Analysis:
    result = analyze_file(ckpt)
    result.globals = dcp_verdicts(ckpt.globals)
    result.children = [(rel, child, hint) for rel, child, hint in ckpt.children
                       if isinstance(child, UnreadableError)]
    return result


def in_metadata(use: GlobalUse) -> bool:
    return use.member == METADATA or use.member.startswith(METADATA + ":")


def dcp_verdicts(uses: Iterable[GlobalUse]) -> list[GlobalVerdict]:
    """One verdict per global: ``.metadata``'s judged in its context, the items' as usual;
    a global in both keeps the worse verdict."""
    uses = list(uses)
    out: dict[str, GlobalVerdict] = {}
    for v in [*map(metadata_verdict, verdicts(u for u in uses if in_metadata(u))),
              *verdicts(u for u in uses if not in_metadata(u))]:
        prev = out.get(v.use.qualname)
        if prev is None or _ORDER[v.safety] > _ORDER[prev.safety]:
            out[v.use.qualname] = v
    return list(out.values())


def metadata_verdict(v: GlobalVerdict) -> GlobalVerdict:
    """A global of ``.metadata`` (judged as usual in ``v``) as torch's ``pickle.load`` of it
    runs it: what DCP writes is a value, the weights_only allowlist stays safe, and anything
    else fails closed."""
    qual = v.use.qualname
    if qual in DCP_METADATA:
        return replace(v, safety="safe", reason=f"{DCP_METADATA[qual]}; dcp.load unpickles "
                                                ".metadata with plain pickle.load")
    if v.safety == "needs-code":
        return replace(v, safety="unsafe", reason=(
            f"not what torch.distributed.checkpoint writes in .metadata, which dcp.load "
            f"unpickles with plain pickle.load (no weights_only): {qual} would be imported "
            f"and run unasked"))
    return v


# torch/distributed/checkpoint/hf_storage.py + _hf_utils.py (torch 2.13): HuggingFaceStorage-
# Writer writes plain safetensors shards whose ``__metadata__`` carries DCP_SHARDING_INFO (each
# FQN's saved offsets) and DCP_VERSION, plus ``model.safetensors.index.json``; the reader takes
# every ``*.safetensors`` of the folder by key. Nothing is pickled. Keys are DCP's flattened
# FQNs: ``get_state_dict``'s ``optim.state.<param>.<slot>`` (torchtitan: ``optimizer.``) is
# optimizer state, with no param_groups (non-tensors cannot be stored in safetensors).
HF_DCP_KEYS = ("DCP_SHARDING_INFO", "DCP_VERSION")
HF_OPTIMIZER_PREFIXES = ("optim.state.", "optimizer.state.")


def is_hf_dcp(ckpt: Checkpoint) -> bool:
    """A sharded set every readable shard of which HuggingFaceStorageWriter wrote."""
    shards = [c for _r, c, _h in ckpt.children if isinstance(c, Checkpoint)]
    return bool(shards) and all(
        c.format == "safetensors"
        and all(k in ((c.metadata or {}).get("__metadata__") or {}) for k in HF_DCP_KEYS)
        for c in shards)


def hf_dcp_roles(result: Analysis) -> None:
    """Optimizer state of an HF-storage DCP set, recognised by its FQNs in every shard's
    analysis (roles, byte totals and one subtree per shard) and in the set's totals."""
    from ckpt_guard.analyze.model import RoleSubtree

    for _rel, sub, _hint in result.children:
        if not isinstance(sub, Analysis):
            continue
        moved = 0
        keys = []
        tensors = []
        for t in sub.tensors:
            if t.path.startswith(HF_OPTIMIZER_PREFIXES) and t.role != "optimizer":
                nbytes = t.ref.storage.nbytes if t.ref.storage is not None else 0
                for a in (sub, result):
                    a.bytes_by_role[t.role] = a.bytes_by_role.get(t.role, 0) - nbytes
                    a.bytes_by_role["optimizer"] = a.bytes_by_role.get("optimizer", 0) + nbytes
                t = replace(t, role="optimizer")
                moved += nbytes
                keys.append(t.path)
            tensors.append(t)
        sub.tensors = tensors
        if keys:
            prefix = next(p for p in HF_OPTIMIZER_PREFIXES if keys[0].startswith(p))
            sub.subtrees.append(RoleSubtree(
                path=prefix.rstrip("."), role="optimizer", bytes=moved,
                what=f"optimizer state in DCP FQNs ({len(keys)} tensors, "
                     f"{prefix}<param>.<slot>)"))
    from ckpt_guard.analyze.roles import RANK

    roles = {}
    for rel, sub, _hint in result.children:
        nonzero = {r: b for r, b in sub.bytes_by_role.items() if b} \
            if isinstance(sub, Analysis) else {}
        if nonzero:
            roles[rel] = max(nonzero.items(), key=lambda kv: (kv[1], -RANK[kv[0]]))[0]
    result.top_level = [replace(k, role=roles.get(k.key, k.role)) for k in result.top_level]
    # the set's own list names tensors by key (analyze.sharded strips the shard prefix)
    result.tensors = [replace(t, role="optimizer") if t.path.startswith(HF_OPTIMIZER_PREFIXES)
                      else t for t in result.tensors]
