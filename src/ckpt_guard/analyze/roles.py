"""Recognise training state by the SHAPE of values, at any depth.

Key names are only used where a value's shape cannot tell (EMA copies look exactly like
weights), and then only when the value is really there: ``None`` and ``[]`` are not state.
"""

from __future__ import annotations

import re
from collections import Counter

from ckpt_guard.read.tree import Opaque, TensorRef, as_mapping, attributes
from ckpt_guard.vocab import Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

# Role precedence: a storage viewed from several roles counts for the first of these.
PRECEDENCE: tuple[str, ...] = Role.values()  # defined once: ckpt_guard.vocab.Role
RANK = {role: i for i, role in enumerate(PRECEDENCE)}

_MAX_NAME = 256  # longer keys are no framework's names: never regex-searched (cost)
TORCH_CPU_RNG_STATE_BYTES = 5056  # torch.get_rng_state(): the MT19937 generator state

_EMA_KEY = re.compile(r"(^|[_.\-])ema($|[_.\-])|^(swa|averaged)_model$|^shadow(_params)?$",
                      re.IGNORECASE)
_EMA_CLASS = re.compile(r"ModelEma|ModelEMA|ExponentialMovingAverage|AveragedModel|EMAModel")
_RNG_KEY = re.compile(r"(torch_|cuda_|numpy_|np_|python_|py_)?rng_states?|random_state",
                      re.IGNORECASE)
# Top-level keys of known frameworks whose tensors are bookkeeping, not model weights.
OTHER_KEYS = frozenset({
    "callbacks", "loops", "message_hub", "meta", "hyper_parameters", "hparams",
    "datamodule_hyper_parameters", "train_metrics", "train_results", "training_results",
    "metric", "metrics", "args", "opt", "train_args", "best_fitness", "git", "ds_config",
    "traced_inputs",
    # torchtitan DCP checkpoints: loop state beside top-level model FQNs, never weights
    "train_state", "dataloader",
})


def _lookup(node: Any) -> dict | None:
    """Mapping view of a node: a dict, an OrderedDict-like opaque, or an object's attributes."""
    m = as_mapping(node)
    if m:
        return m
    if isinstance(node, Opaque) and node.has_state:
        return attributes(node)
    return None


def _is_optimizer_state_dict(m: dict) -> bool:
    """``{'state': {id: {...}}, 'param_groups': [{'params': [...], ...}, ...]}``."""
    groups = m.get("param_groups")
    if not isinstance(groups, (list, tuple)) or not groups:
        return False
    if as_mapping(m.get("state")) is None:
        return False
    for g in groups:
        gm = as_mapping(g)
        if gm is None or not isinstance(gm.get("params"), (list, tuple)):
            return False
    return True


def is_flat_optimizer_state_dict(m: dict) -> bool:
    """torch.distributed.checkpoint.state_dict's ``flatten_optimizer_state_dict=True`` form:
    ``{'state.<fqn>.<key>': …, 'param_groups.<fqn>.<key>': …}`` — every key one of the two
    and at least one param group (state is empty before the first step)."""
    groups = False
    for k in m:
        if not isinstance(k, str) or len(k) > 4 * _MAX_NAME:
            return False
        if k.startswith("param_groups."):
            groups = True
        elif not k.startswith("state."):
            return False
    return groups


def flat_state_slots(m: dict) -> tuple[set[str], set[str]]:
    """``(parameter FQNs, slot names)`` of a flattened optimizer state dict's tensors."""
    params: set[str] = set()
    slots: set[str] = set()
    for k, v in m.items():
        if isinstance(k, str) and k.startswith("state.") and isinstance(v, TensorRef):
            fqn, _, slot = k[len("state."):].rpartition(".")
            if fqn:
                params.add(fqn)
                slots.add(slot)
    return params, slots


def _optimizer_what(m: dict) -> str:
    state = as_mapping(m.get("state")) or {}
    keys: set[str] = set()
    for per_param in list(state.values())[:64]:
        sub = as_mapping(per_param)
        if sub:
            keys.update(str(k) for k in sub)
    return "torch optimizer state_dict" + (f" ({', '.join(sorted(keys))})" if keys else "")


def structural_role(node: Any) -> tuple[str, str] | None:
    """``(role, what)`` when ``node`` as a whole is optimizer/scheduler/scaler/RNG state."""
    if isinstance(node, Opaque):
        qn = node.qualname
        if qn.startswith("torch.optim.lr_scheduler.") or ".lr_scheduler." in qn:
            return Role.SCHEDULER, f"pickled {node.name} object"
        if qn.startswith("torch.optim.") and not qn.startswith("torch.optim.swa_utils"):
            return Role.OPTIMIZER, f"pickled {node.name} object"
        if node.name == "GradScaler":
            return Role.SCALER, "pickled GradScaler object"
    if isinstance(node, tuple) and node:
        if node[0] == "MT19937":
            return Role.RNG, "numpy RNG state"
        if (len(node) == 3 and node[0] == 3 and isinstance(node[1], tuple)
                and len(node[1]) == 625):
            return Role.RNG, "python random state"
    m = _lookup(node)
    if not m:
        return None
    if _is_optimizer_state_dict(m):
        return Role.OPTIMIZER, _optimizer_what(m)
    if is_flat_optimizer_state_dict(m):
        slots = flat_state_slots(m)[1]
        return Role.OPTIMIZER, ("flattened torch optimizer state_dict"
                             + (f" ({', '.join(sorted(slots))})" if slots else ""))
    if "base_optimizer_state" in m or "single_partition_of_fp32_groups" in m \
            or "fp32_flat_groups" in m:
        return Role.OPTIMIZER, "DeepSpeed ZeRO optimizer state"
    if "last_epoch" in m and any(k in m for k in ("base_lrs", "_step_count", "_last_lr",
                                                  "min_lrs")):
        return Role.SCHEDULER, "LR scheduler state_dict"
    if "last_step" in m and ("base_values" in m or "by_epoch" in m):
        return Role.SCHEDULER, "mmengine parameter scheduler state"
    if {"scale", "growth_factor", "backoff_factor"} <= m.keys():
        return Role.SCALER, "GradScaler state"
    if {"loss_scale", "unskipped"} <= m.keys() or {"cur_scale", "cur_iter"} <= m.keys():
        return Role.SCALER, "loss scaler state"
    if "cpu" in m and any(k in m for k in ("python", "numpy", "cuda", "xla", "mps", "npu")):
        return Role.RNG, "RNG states (python/numpy/torch)"
    return None


def keyed_role(key: Any, value: Any) -> tuple[str, str] | None:
    """Roles only a key can reveal, for values that are really present."""
    if value is None or (isinstance(value, (list, tuple, dict)) and not value):
        return None
    if isinstance(key, str) and len(key) <= _MAX_NAME and _RNG_KEY.fullmatch(key):
        return Role.RNG, f"RNG state ({key})"
    return None


def is_ema_candidate(key: Any, value: Any) -> bool:
    """Whether ``value`` (under ``key``) is an EMA/averaged copy of a model, if it holds
    tensors while other weights exist (decided later)."""
    if value is None or isinstance(value, TensorRef):
        return False
    if isinstance(key, str) and len(key) <= _MAX_NAME and _EMA_KEY.search(key):
        return True
    if isinstance(value, Opaque) and _EMA_CLASS.search(value.qualname):
        return True
    m = as_mapping(value)
    if m:
        if "shadow_params" in m and "decay" in m:  # diffusers EMAModel.state_dict()
            return True
        if isinstance(m.get("n_averaged"), TensorRef) and any(
                isinstance(k, str) and k.startswith("module.") for k in m):
            return True  # torch.optim.swa_utils.AveragedModel.state_dict()
    return False


def is_ema_key(key: Any) -> bool:
    return (isinstance(key, str) and len(key) <= _MAX_NAME
            and bool(_EMA_KEY.search(key.split(".", 1)[0])))


def is_rng_tensor(ref: TensorRef) -> bool:
    return ref.dtype == "uint8" and ref.shape == (TORCH_CPU_RNG_STATE_BYTES,)


def shape_overlap(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> float:
    """Share of ``a``'s shapes (as a multiset) also found in ``b``."""
    if not a:
        return 0.0
    common = Counter(a) & Counter(b)
    return sum(common.values()) / len(a)
