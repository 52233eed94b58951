"""``fp32-payload``: float32 weights that could ship as float16/bfloat16 at half the size.

Which tensors stay FP32 is one decision shared with ``fix``
(:func:`ckpt_guard.policy.keep_fp32.fp32_payload`), so a fixed file never fails this rule.
"""

from __future__ import annotations

from collections.abc import Mapping

from ckpt_guard.analyze.tree_ops import path_text, tensor_storages, walk
from ckpt_guard.policy.keep_fp32 import VALUES, FP32Payload, KeepFP32, fp32_payload, recorded_kept
from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule
from ckpt_guard.read.tree import Storage, TensorRef
from ckpt_guard.units import format_bytes, format_limit
from ckpt_guard.vocab import Action, Format, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig
    from ckpt_guard.policy.plan_types import PlanContext, RulePlan

SIZE_SCHEMA = {"$ref": "#/$defs/size"}


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    return finding_for(fp32_payload(a, ctx.rules), cfg)


def unlimited(cfg: RuleConfig) -> RuleConfig:
    """``cfg`` without ``max-bytes``: a sharded set's decision is made once over the set,
    then every shard casts what is castable in it."""
    from ckpt_guard.policy.model import RuleConfig

    return RuleConfig(cfg.action, {**cfg.options, "max-bytes": None})


def set_payload(a: Analysis, rules: Mapping[str, Any]) -> FP32Payload | None:
    """The payload of a sharded set: castable bytes summed over its shards and compared with
    ``max-bytes`` once (ten 4 MB shards are a 40 MB payload)."""
    cfg = rules.get(RULE.id)
    if cfg is None or not cfg.enabled:
        return None
    free = {**rules, RULE.id: unlimited(cfg)}
    out = FP32Payload(limit=cfg.max_bytes or 0)
    for _member, child, _hint in a.children:
        if isinstance(child, BaseException) or child.checkpoint.format == Format.LFS_POINTER:
            continue
        p = fp32_payload(child, free)
        if p is not None:
            out.castable += p.castable
            out.n_cast += p.n_cast
            out.kept.extend(p.kept)
            out.kept_bytes += p.kept_bytes
    return out


def finding_for(payload: FP32Payload | None, cfg: RuleConfig) -> Finding | None:
    if payload is None or not payload.over_limit:
        return None
    castable, n_cast, kept, limit = payload.castable, payload.n_cast, payload.kept, payload.limit
    saved = castable // 2  # float16 and bfloat16 both take 2 bytes per element
    msg = (f"{format_bytes(castable)} of float32 weights in {n_cast} "
           f"tensor{'s' if n_cast != 1 else ''} could be {cfg.cast_to}, saving "
           f"{format_bytes(saved)}")
    if limit:
        msg += f" (over max-bytes {format_limit(limit)})"
    if kept:
        msg += (f"; {len(kept)} tensor{'s' if len(kept) != 1 else ''} "
                f"({format_bytes(payload.kept_bytes)}) {'stay' if len(kept) != 1 else 'stays'} "
                f"float32 (keep-fp32)")
    detail = {"castable_bytes": castable, "cast_to": cfg.cast_to,
              "kept_fp32_bytes": payload.kept_bytes,
              "kept_fp32": [{"path": p, "reason": g} for p, g in kept[:50]]}
    return RULE.finding(cfg, msg, saved, detail)


CASTABLE_ROLES = frozenset({Role.WEIGHTS, Role.EMA})
CASTABLE_KINDS = frozenset({"tensor", "parameter"})


def plan(a: Analysis, cfg: Any, ctx: PlanContext) -> RulePlan:
    """The storages a fix casts: every float32 storage of the weights (or EMA) left in the
    plan's tree, unless keep-fp32 (or a previous fix's record of its values) keeps it —
    and only over ``max-bytes`` (one decision with check: ``keep_fp32.fp32_payload``)."""
    from ckpt_guard.policy.plan_types import CastItem, RulePlan, role_by_storage  # (plans only)

    rp = RulePlan(RULE.id)
    payload = fp32_payload(a, ctx.rules)
    if payload is None or not payload.over_limit:
        # check reports fp32-payload only above max-bytes; a fix made for another rule must
        # not cast below it either.
        if payload is not None and payload.castable:
            rp.notes.append(f"float32 weights not cast: {payload.castable:,} castable bytes, "
                            f"not over fp32-payload max-bytes ({payload.limit:,})")
        return rp
    if a.checkpoint.byteorder != "little":
        rp.notes.append("big-endian storages are not cast")
        rp.why_not = " (fix does not cast big-endian storages)"
        return rp
    target = str(cfg.options.get("cast-to", "float16"))
    roles = role_by_storage(a)
    by_storage: dict[int, tuple[Storage, list[tuple[str, TensorRef]]]] = {}

    def visit(path: tuple, node: Any, inh: Any) -> Any:
        if isinstance(node, TensorRef):
            for st in tensor_storages(node):
                by_storage.setdefault(id(st), (st, []))[1].append((path_text(path), node))
        return None

    walk(ctx.tree, visit)
    recorded = recorded_kept(a.checkpoint.metadata)
    keep = KeepFP32(dict(cfg.options), (pr for _, refs in by_storage.values() for pr in refs),
                    ctx.tree)
    for st, refs in by_storage.values():
        if st.dtype != "float32":
            continue
        paths = sorted({p for p, _ in refs})
        if roles.get(st.key, Role.WEIGHTS if not a.tensors else "") not in CASTABLE_ROLES:
            continue
        odd = [p for p, r in refs if r.kind not in CASTABLE_KINDS or r.dtype != "float32"]
        if odd:
            rp.kept_fp32.extend((p, f"shares its storage with {odd[0]}") for p in paths
                                if p not in odd)
            continue
        reason = next((r for r in map(keep.reason, paths) if r is not None), None)
        if reason is None and any(p in recorded for p in paths):
            why = next(recorded[p] for p in paths if p in recorded)
            rp.value_kept.update((p, why) for p in paths)
            reason = VALUES + why
        if reason is not None:
            rp.kept_fp32.extend((p, reason) for p in paths)
            continue
        rp.cast.append(CastItem(st, paths, target))
    if not rp.cast:
        rp.why_not = " (every float32 tensor left in the fixed file stays float32)"
    return rp


RULE = Rule(
    id="fp32-payload",
    default_action=Action.WARN,
    removes=True,
    evaluate=evaluate,
    plan=plan,
    options=(
        Option("max-bytes", "10MB", SIZE_SCHEMA, size=True),
        Option("cast-to", "float16", {"type": "string", "enum": ["float16", "bfloat16"]}),
        Option("keep-fp32", ["*.running_mean", "*.running_var", "*.num_batches_tracked"],
               {"type": "array", "items": {"type": "string", "minLength": 1}}),
        Option("on-overflow", "keep",
               {"type": "string", "enum": ["keep", "bfloat16", "fail"]}),
    ),
    summary="Float32 weights that could be half precision",
    help="Float32 weights could ship as float16/bfloat16 at half the size. Set the rule to "
         "`fix` (`cast-to: float16` or `bfloat16`) and run `ckpt-guard fix`; normalization "
         "layers matched by `keep-fp32` stay float32.",
    template="""\
  # Float32 weights that could be stored as float16/bfloat16 (half the bytes).
  fp32-payload:
    action: warn
    # Report (and fix) only when the castable float32 bytes exceed this size — also when a
    # file is rewritten for another rule (nothing is cast below it).
    max-bytes: 10MB
    # Target dtype of a cast: float16 or bfloat16.
    cast-to: float16
    # Tensors that stay float32. With the built-in list below, normalization layers
    # (BatchNorm, LayerNorm, GroupNorm, RMSNorm, InstanceNorm: weights, biases, running
    # stats), which lose accuracy in half precision, are found by structure: the layer's
    # name split into words (`bn1`, `ln_f`, `LayerNorm`, `attention_norm` — not
    # `normal_layers`), BatchNorm statistics beside its weight, or the layer class a
    # full-module pickle names. Other biases are cast with their layer so that each layer
    # keeps a single dtype.
    # A list given here replaces this one and says exactly what stays: globs on tensor paths
    # such as `model.0.bn.weight`, case-insensitive, `*` also matches dots (so `*norm*` would
    # also keep `decoder.normal_layers.0.conv.weight`).
    keep-fp32:
      - "*.running_mean"
      - "*.running_var"
      - "*.num_batches_tracked"
    # A tensor whose values do not fit float16, or whose non-zero values would flush to
    # zero or become subnormal in bulk (over 1%; fewer are cast and counted in the report):
    # keep (stay float32), bfloat16 (cast it to bfloat16 instead), fail (the fix fails).
    on-overflow: keep
""",
)
