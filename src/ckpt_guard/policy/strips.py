"""How the strip rules (optimizer-state, training-state, ema-duplicate) plan a file: each
framework's own inference convention (the data in :mod:`.conventions`), then generically by
the roles analysis found.

Each rule's ``plan()`` calls one function here with an :class:`Edits` on the plan's copy of
the tree; every edit is a typed :class:`~ckpt_guard.policy.plan_types.Change`, applied to the
copy as it is recorded (so a later edit, or a later rule, sees the tree as it will be).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.analyze.tree_ops import MISSING, path_text, resolve
from ckpt_guard.analyze.walk import children
from ckpt_guard.policy.conventions import (
    CONVENTIONS,
    LIGHTNING_SCALER,
    NAMESPACE_GLOBALS,
    ROLE_RULE,
    ULTRALYTICS_CFG_KEYS,
)
from ckpt_guard.policy.plan_types import Change, RulePlan, apply
from ckpt_guard.read.tree import Opaque, TensorRef, as_mapping, attributes
from ckpt_guard.vocab import Action, Format, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

WHOLE_FILE = "; the whole file is this state: remove the file instead"
NOT_SAFETENSORS = " (fix does not strip tensors from a safetensors file)"
IMMUTABLE = " (it is inside an immutable value: fix cannot strip it)"


@dataclass(frozen=True)
class RuleView:
    """The part of a rule's config a plan reads: ``action`` and ``options``. Built from a
    ``policy.RuleConfig``, a ``{action: …, option: …}`` dict or a bare action string (the
    rewrite API and tests accept all three)."""

    action: str = Action.OFF
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fixes(self) -> bool:
        return self.action == Action.FIX

    @property
    def enabled(self) -> bool:
        return self.action != Action.OFF


def rule_view(rules: Mapping[str, Any], rule_id: str) -> RuleView:
    """``rules[rule_id]`` as a :class:`RuleView` (absent: off)."""
    cfg = rules.get(rule_id)
    if cfg is None:
        return RuleView()
    if isinstance(cfg, str):
        return RuleView(cfg)
    if isinstance(cfg, Mapping):
        return RuleView(str(cfg.get("action", Action.OFF)),
                        {k: v for k, v in cfg.items() if k != "action"})
    return RuleView(str(getattr(cfg, "action", Action.OFF)),
                    dict(getattr(cfg, "options", {}) or {}))


class Edits:
    """Typed changes to the plan's tree, each applied as it is recorded in ``plan``."""

    def __init__(self, tree: Any, plan: RulePlan) -> None:
        self.tree, self.plan = tree, plan

    def _do(self, change: Change) -> bool:
        if apply(self.tree, change):
            self.plan.changes.append(change)
            return True
        return False

    def get(self, *keys: Any) -> Any:
        node = resolve(self.tree, keys)
        return None if node is MISSING else node

    def has(self, *keys: Any) -> bool:
        return resolve(self.tree, keys) is not MISSING

    def to_none(self, *keys: Any, role: str = "") -> bool:
        return self._do(Change.to_none(path_text(keys), role, keys=keys))

    def drop(self, *keys: Any) -> bool:
        return self.has(*keys) and self._do(Change.removed(path_text(keys), keys=keys))

    def set(self, keys: tuple, value: Any, words: str) -> bool:
        return self._do(Change.set(path_text(keys), words, keys=keys, value=value))

    def move(self, src: str, dst: str) -> bool:
        return self._do(Change.moved(src, dst, keys=(src,), dest=(dst,)))

    def note(self, text: str) -> None:
        self.plan.notes.append(text)

    # The framework's own ways: a key set to a value only when present and not already it.
    def set_present(self, m: dict, key: str, value: Any) -> None:
        if key in m and m[key] is not None and m[key] != value:
            if value is None:
                self.to_none(key)
            else:
                self.set((key,), value, repr(value))

    def drop_all(self, m: dict, keys: tuple[str, ...]) -> None:
        for key in keys:
            if key in m:
                self.drop(key)


# --- ema-duplicate ------------------------------------------------------------------------

def _ema_moves(ed: Edits, m: dict, ema_key: str, weights_key: str, keep: str) -> bool:
    """The EMA replaces the weights (``keep: ema``), or is dropped (``keep: weights``) —
    unless there are no other weights (ultralytics' ``model: None`` during training), then
    it becomes them anyway. True when ``ema_key`` is to go."""
    if m.get(ema_key) is None:
        return False
    if keep == Role.EMA or m.get(weights_key) is None:
        if keep != Role.EMA:
            ed.note(f"{ema_key} kept as the weights: {weights_key} is empty")
        elif m.get(weights_key) is not None:
            # The weights a user loads change: say so plainly, not only as "a → b".
            ed.note(f"the weights change: {weights_key} now holds the EMA weights from "
                    f"{ema_key}, the former {weights_key} weights are dropped "
                    f"(ema-duplicate keep: ema; keep: weights keeps them instead)")
        ed.move(ema_key, weights_key)
    return True


def _ema_yolov5(ed: Edits, m: dict, keep: str, fw: str) -> None:
    ema_key, weights_key = CONVENTIONS[fw].ema or ("", "")
    if _ema_moves(ed, m, ema_key, weights_key, keep):
        ed.set_present(m, ema_key, None)
        ed.set_present(m, "updates", None)


def _ema_drop(ed: Edits, m: dict, keep: str, fw: str) -> None:
    """rfdetr, timm: the EMA copy becomes the weights, its own key goes."""
    c = CONVENTIONS[fw]
    if c.ema and _ema_moves(ed, m, *c.ema, keep):
        ed.drop(c.ema[0])


def _ema_mmengine(ed: Edits, m: dict, keep: str, fw: str) -> None:
    # publish_model.py keeps meta + state_dict. EMAHook already swapped EMA into state_dict.
    if m.get("ema_state_dict") is None:
        return
    if keep == Role.WEIGHTS:
        ema_sd = as_mapping(m["ema_state_dict"]) or {}
        sd = as_mapping(m.get("state_dict"))
        if sd is not None:
            edits = tuple(Change.set(f"state_dict.{k}", "raw weights", keys=("state_dict", k),
                                     value=ema_sd[f"module.{k}"])
                          for k in list(sd) if f"module.{k}" in ema_sd)
            if edits:
                ed._do(Change.other("state_dict ← raw weights from ema_state_dict",
                                    edits=edits))
    ed.drop("ema_state_dict")


def _ema_generic(ed: Edits, m: dict, keep: str, a: Analysis) -> None:
    """A generic ``{"model": …, "ema": …}`` dict with ``keep: ema``: the EMA becomes the
    weights and its own key None. Only for one weights and one EMA key at the top level."""
    if keep != Role.EMA:
        return
    ema = [s.path for s in a.subtrees if s.role == Role.EMA]
    weights = [s.path for s in a.subtrees if s.role == Role.WEIGHTS]
    if len(ema) != 1 or len(weights) != 1 or ema[0] not in m or weights[0] not in m:
        ed.plan.why_not = (" (fix swaps the EMA in only for one EMA and one weights key at "
                           "the top level)")
        return
    if _ema_moves(ed, m, ema[0], weights[0], keep):
        ed.to_none(ema[0], role=Role.EMA)


_EMA = {"yolov5": _ema_yolov5, "ultralytics": _ema_yolov5, "rfdetr": _ema_drop,
        "timm": _ema_drop, "mmengine": _ema_mmengine}


def plan_ema(a: Analysis, ed: Edits, keep: str) -> None:
    if not strippable(a, ed.plan):
        return
    m = as_mapping(ed.tree)
    fn = _EMA.get(a.framework)
    if m is not None and fn is not None:
        fn(ed, m, keep, a.framework)
    elif m is not None and a.framework == "generic":
        _ema_generic(ed, m, keep, a)
    if keep == Role.WEIGHTS:
        by_role(a, ed, (Role.EMA,))


# --- optimizer-state ----------------------------------------------------------------------

def _lightning_like(m: dict) -> bool:
    return "pytorch-lightning_version" in m or "loops" in m


def _saved_by_lightning(a: Analysis, m: dict | None) -> bool:
    """A Lightning checkpoint, or an RF-DETR one its Lightning-era trainer saved (which
    follows Lightning's convention as well as RF-DETR's own)."""
    return a.framework == "lightning" or (a.framework == "rfdetr" and m is not None
                                          and _lightning_like(m))


def plan_optimizer(a: Analysis, ed: Edits) -> None:
    if not strippable(a, ed.plan):
        return
    m = as_mapping(ed.tree)
    fw = a.framework
    c = CONVENTIONS.get(fw)
    if m is None:
        pass
    elif fw in ("yolov5", "ultralytics"):
        for key in c.none_optimizer:
            ed.set_present(m, key, None)
    elif c is not None:
        if fw == "rfdetr" and _saved_by_lightning(a, m):
            ed.drop_all(m, CONVENTIONS["lightning"].drop_optimizer)
        ed.drop_all(m, c.drop_optimizer)
        if fw == "detectron2":
            inner = as_mapping((as_mapping(m.get("trainer")) or {}).get("_trainer"))
            if inner is not None and "optimizer" in inner:
                ed.drop("trainer", "_trainer", "optimizer")
    by_role(a, ed, (Role.OPTIMIZER,))


# --- training-state -----------------------------------------------------------------------

def _training_ultralytics(ed: Edits, m: dict) -> None:
    # ultralytics 8.4 also trims train_args to its default-config keys and turns the
    # model's IterableSimpleNamespace args into a plain dict.
    args = m.get("train_args")
    if isinstance(args, dict):
        for k in [k for k in args if isinstance(k, str) and k not in ULTRALYTICS_CFG_KEYS]:
            ed.drop("train_args", k)
    model = m.get("model")
    attrs = attributes(model) if isinstance(model, Opaque) else None
    ns = attrs.get("args") if attrs is not None else None
    if isinstance(ns, Opaque) and ns.qualname in NAMESPACE_GLOBALS:
        fields = attributes(ns)
        if fields is not None:
            ed.set(("model", "args"), dict(fields), "a dict")
    if attrs is not None and attrs.get("criterion") is not None:
        ed.to_none("model", "criterion")  # the loss object: training only


def _ema_only_weights(ed: Edits, m: dict, fw: str) -> None:
    """A training file whose only weights are the EMA (ultralytics: ``model: None``,
    ``ema: DetectionModel``): ``strip_optimizer`` moves it to ``model`` whatever else is set,
    so fixing training-state does too — the weights do not change, only their key (compared
    with the real trainer in tests/frameworks)."""
    c = CONVENTIONS[fw]
    if not (c.ema_when_weights_empty and c.ema):
        return
    ema_key, weights_key = c.ema
    if m.get(ema_key) is None or weights_key not in m or m[weights_key] is not None:
        return
    ed.move(ema_key, weights_key)
    ed.set_present(m, ema_key, None)
    ed.set_present(m, "updates", None)


def _lightning_training(ed: Edits, m: dict) -> None:
    # What Lightning's own save_weights_only omits (callbacks: ModelCheckpoint/
    # EarlyStopping state, scores, paths), and its precision plugin / AMP scaler state.
    ed.drop_all(m, CONVENTIONS["lightning"].drop_training)
    ed.drop_all(m, tuple(k for k in m if isinstance(k, str) and LIGHTNING_SCALER.search(k)))


def mirrors(a: Analysis) -> str:
    """The framework function whose strip this file's is ("Lightning save_weights_only")."""
    if a.framework == "rfdetr" and _saved_by_lightning(a, as_mapping(a.checkpoint.root)):
        return CONVENTIONS["lightning"].mirrors
    c = CONVENTIONS.get(a.framework)
    return c.mirrors if c is not None else f"{a.framework}'s strip"


def training_keys(a: Analysis) -> frozenset[str]:
    """Top-level keys :func:`plan_training` deletes or sets to None for this file's framework
    (Lightning's ``callbacks``, mmengine's ``message_hub``…): the tensors under them go with
    a training-state fix whatever role analysis gave them, so check counts them too."""
    m = as_mapping(a.checkpoint.root)
    c = CONVENTIONS.get(a.framework)
    if m is None or c is None:
        return frozenset()
    keys = set(c.drop_training) | set(c.none_training)
    if _saved_by_lightning(a, m):
        keys |= set(CONVENTIONS["lightning"].drop_training)
        keys |= {k for k in m if isinstance(k, str) and LIGHTNING_SCALER.search(k)}
    return frozenset(k for k in keys if k in m)


def plan_training(a: Analysis, ed: Edits, *, optimizer_fixed: bool) -> None:
    """``optimizer_fixed``: detectron2's trainer holds the optimizer state, so it goes only
    when optimizer-state is fixed too (else only its schedulers and scalers, generically)."""
    if not strippable(a, ed.plan):
        return
    m = as_mapping(ed.tree)
    fw = a.framework
    c = CONVENTIONS.get(fw)
    if m is None:
        pass
    elif fw in ("yolov5", "ultralytics"):
        _ema_only_weights(ed, m, fw)
        for key in c.none_training:
            ed.set_present(m, key, None)
        for key in c.training_minus_one:
            ed.set_present(m, key, -1)
        if fw == "ultralytics":
            _training_ultralytics(ed, m)
    elif fw == "lightning":
        _lightning_training(ed, m)
    elif fw == "rfdetr":
        if _saved_by_lightning(a, m):
            _lightning_training(ed, m)
        # checkpoint_best_total.pth keeps {model, args}; strip_checkpoint drops `epoch` in
        # both eras (RF-DETR 1.11, compared with the real trainer in tests/frameworks).
        ed.drop_all(m, c.drop_training)
    elif fw == "detectron2":
        keep = () if optimizer_fixed else ("trainer",)
        ed.drop_all(m, tuple(k for k in c.drop_training if k not in keep))
    elif c is not None:
        ed.drop_all(m, c.drop_training)
    by_role(a, ed, tuple(r for r, rid in ROLE_RULE.items() if rid == "training-state"))


# --- shared -------------------------------------------------------------------------------

def strippable(a: Analysis, plan: RulePlan) -> bool:
    """Does fix strip this file at all? (A safetensors file is only ever cast.)"""
    if a.checkpoint.format == Format.SAFETENSORS:
        plan.why_not = NOT_SAFETENSORS
        return False
    return True


def by_role(a: Analysis, ed: Edits, roles: tuple[str, ...]) -> None:
    """Generic: every remaining subtree of ``roles`` becomes None (found in the plan's tree,
    as edited so far)."""
    targets: dict[str, str] = {}
    for sub in a.subtrees:
        if sub.role not in roles:
            continue
        if sub.path == "":
            ed.note(f"the whole file is {sub.role} state; not stripped (remove the file "
                    f"instead)")
            ed.plan.why_not = WHOLE_FILE
            continue
        targets[sub.path] = sub.role
    if not targets:
        return
    # Find each target path in the tree, with its tree path.
    found: list[tuple[tuple, str]] = []
    seen: set[int] = set()
    stack: list[tuple[tuple, Any]] = [((), ed.tree)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, kid in children(node):
            cpath = (*path, key)
            text = path_text(cpath)
            if text in targets:
                if kid is not None:
                    found.append((cpath, text))
            elif kid is not None and not isinstance(kid, (TensorRef, str, int, float)):
                stack.append((cpath, kid))
    for keys, text in found:
        if not ed._do(Change.to_none(text, role=targets[text], keys=keys)):
            ed.note(f"{text}: {targets[text]} state inside an immutable value; left as is")
            if not ed.plan.why_not:
                ed.plan.why_not = IMMUTABLE

