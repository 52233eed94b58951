"""``fp32-payload``: float32 weights that could ship as float16/bfloat16 at half the size.

Which tensors stay FP32 is one decision shared with ``fix``
(:func:`ckpt_guard.policy.keep_fp32.fp32_payload`), so a fixed file never fails this rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ckpt_guard.policy.keep_fp32 import FP32Payload, fp32_payload
from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule
from ckpt_guard.units import format_bytes, format_limit
from ckpt_guard.vocab import Action, Format

if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig

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


RULE = Rule(
    id="fp32-payload",
    default_action=Action.WARN,
    fixable=True,
    removes=True,
    evaluate=evaluate,
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
