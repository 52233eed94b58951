"""The policy matrix: every fixable rule alone and all together, with the options that change
what a fix does (``keep``, ``max-bytes`` below/above the files, ``convert``, overrides)."""

from __future__ import annotations

OPT = {"optimizer-state": "fix"}
TRAIN = {"training-state": "fix"}
EMA = {"ema-duplicate": {"action": "fix", "keep": "ema"}}
EMA_WEIGHTS = {"ema-duplicate": {"action": "fix", "keep": "weights"}}
FP32_BELOW = {"fp32-payload": {"action": "fix", "max-bytes": 0}}  # every file is over it
FP32_ABOVE = {"fp32-payload": {"action": "fix", "max-bytes": "1GB"}}  # no file is over it
ALL = {**OPT, **TRAIN, **EMA, **FP32_BELOW}


def _policy(rules: dict, **extra) -> dict:
    return {"version": 1, "rules": rules, **extra}


# name → (policy, fix writes with --out)
POLICIES: dict[str, tuple[dict, bool]] = {
    "optimizer-state": (_policy(OPT), False),
    "training-state": (_policy(TRAIN), False),
    "ema-keep-ema": (_policy(EMA), False),
    "ema-keep-weights": (_policy(EMA_WEIGHTS), False),
    # ema-duplicate stays at its built-in `warn`: the cast must still agree with check.
    "fp32-below": (_policy(FP32_BELOW), False),
    "fp32-above": (_policy(FP32_ABOVE), False),
    "all": (_policy(ALL), False),
    "all-keep-weights": (_policy({**ALL, **EMA_WEIGHTS}), False),
    "all-fp32-above": (_policy({**ALL, **FP32_ABOVE}), False),
    "convert": (_policy({**OPT, **TRAIN, **EMA}, convert="safetensors"), False),
    "convert-all": (_policy(ALL, convert="safetensors"), False),
    "convert-all-out": (_policy(ALL, convert="safetensors"), True),
    "all-out": (_policy(ALL), True),
    "overrides": (_policy(ALL, overrides=[
        {"paths": ["files/train-adam/**", "files/hf-trainer-dir/**"],
         "rules": {"optimizer-state": "off"}},
        {"paths": ["files/lightning-full/**", "files/ultralytics-train/**"],
         "rules": {"fp32-payload": {"max-bytes": "1GB"}}},
        {"paths": ["files/timm-train/**", "files/mmengine-train/**"],
         "rules": {"ema-duplicate": {"keep": "weights"}}},
        {"paths": ["files/state-dict/**", "files/rfdetr-checkpoint/**"],
         "convert": "safetensors"},
    ]), False),
}
