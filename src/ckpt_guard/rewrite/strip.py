"""Strip training state from a (copied) tree, following each framework's own inference
convention (shared/notes/frameworks.md), then generically by the roles analysis found."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.analyze.walk import children
from ckpt_guard.policy.conventions import (
    CONVENTIONS,
    LIGHTNING_SCALER,
    NAMESPACE_GLOBALS,
    ROLE_RULE,
    ULTRALYTICS_CFG_KEYS,
)
from ckpt_guard.policy.plan_types import Change
from ckpt_guard.read.tree import Opaque, TensorRef, as_mapping, attributes
from ckpt_guard.rewrite.tree_ops import assign, path_text

if TYPE_CHECKING:
    from ckpt_guard.rewrite.plan import Plan

@dataclass(frozen=True)
class Rule:
    """The part of a policy rule a fix needs (duck-typed from ``policy.RuleConfig``)."""

    action: str = "off"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fixes(self) -> bool:
        return self.action == "fix"


def rule(rules: Mapping[str, Any], rule_id: str) -> Rule:
    """``rules[rule_id]`` as a :class:`Rule`; accepts RuleConfig objects or plain dicts."""
    cfg = rules.get(rule_id)
    if cfg is None:
        return Rule()
    if isinstance(cfg, str):
        return Rule(cfg)
    if isinstance(cfg, Mapping):
        return Rule(str(cfg.get("action", "off")),
                    {k: v for k, v in cfg.items() if k != "action"})
    return Rule(str(getattr(cfg, "action", "off")), dict(getattr(cfg, "options", {}) or {}))


class Stripper:
    def __init__(self, plan: Plan, rules: Mapping[str, Any]):
        self.plan = plan
        self.opt = rule(rules, "optimizer-state")
        self.train = rule(rules, "training-state")
        self.ema = rule(rules, "ema-duplicate")

    def _set(self, m: dict, key: str, value: Any, what: str, only_present: bool = True) -> None:
        if key not in m:
            return
        cur = m[key]
        if only_present and (cur is None or cur == value):
            return
        m[key] = value
        self.plan.changes.append(Change.to_none(key) if what == "None"
                                 else Change.set(key, what))

    def _del(self, m: dict, key: str) -> None:
        if key in m:
            del m[key]
            self.plan.changes.append(Change.removed(key))

    def _drop(self, m: dict, *, optimizer: tuple[str, ...] = (),
              training: tuple[str, ...] = ()) -> None:
        """Delete the top-level keys the optimizer-state and training-state rules fix."""
        for key in optimizer if self.opt.fixes else ():
            self._del(m, key)
        for key in training if self.train.fixes else ():
            self._del(m, key)

    def _ema_moves(self, m: dict, ema_key: str, weights_key: str) -> bool:
        """ema-duplicate: the EMA replaces the weights (``keep: ema``), or is dropped
        (``keep: weights``) — unless there are no other weights (ultralytics' ``model: None``
        during training), then it becomes them anyway. True when ``ema_key`` is to go."""
        if not (self.ema.fixes and m.get(ema_key) is not None):
            return False
        if self.ema.options.get("keep", "ema") == "ema" or m.get(weights_key) is None:
            if self.ema.options.get("keep", "ema") != "ema":
                self.plan.notes.append(f"{ema_key} kept as the weights: {weights_key} is empty")
            elif m.get(weights_key) is not None:
                # The weights a user loads change: say so plainly, not only as "a → b".
                self.plan.notes.append(
                    f"the weights change: {weights_key} now holds the EMA weights from "
                    f"{ema_key}, the former {weights_key} weights are dropped "
                    f"(ema-duplicate keep: ema; keep: weights keeps them instead)")
            m[weights_key] = m[ema_key]
            self.plan.changes.append(Change.moved(ema_key, weights_key))
        return True

    def framework(self, fw: str, m: dict) -> None:
        handler = getattr(self, "_fw_" + fw.replace("-", "_"), None)
        if handler is not None:
            handler(m)

    def _fw_ultralytics(self, m: dict) -> None:
        # ultralytics/yolov5 strip_optimizer(): EMA becomes the model, the rest set to None.
        self._fw_yolov5(m, "ultralytics")
        if not self.train.fixes:
            return
        # ultralytics 8.4 also trims train_args to its default-config keys and turns the
        # model's IterableSimpleNamespace args into a plain dict.
        args = m.get("train_args")
        if isinstance(args, dict):
            extra = [k for k in args if isinstance(k, str) and k not in ULTRALYTICS_CFG_KEYS]
            for k in extra:
                del args[k]
            self.plan.changes.extend(Change.removed(f"train_args.{k}") for k in extra)
        model = m.get("model")
        attrs = attributes(model) if isinstance(model, Opaque) else None
        ns = attrs.get("args") if attrs is not None else None
        if isinstance(ns, Opaque) and ns.qualname in NAMESPACE_GLOBALS:
            fields = attributes(ns)
            if fields is not None:
                attrs["args"] = dict(fields)
                self.plan.changes.append(Change.set("model.args", "a dict"))
        if attrs is not None and attrs.get("criterion") is not None:
            attrs["criterion"] = None  # the loss object: training only
            self.plan.changes.append(Change.to_none("model.criterion"))

    def _fw_yolov5(self, m: dict, fw: str = "yolov5") -> None:
        c = CONVENTIONS[fw]
        ema_key, weights_key = c.ema or ("", "")
        if self._ema_moves(m, ema_key, weights_key):
            self._set(m, ema_key, None, "None")
            self._set(m, "updates", None, "None")
        for key in c.none_optimizer if self.opt.fixes else ():
            self._set(m, key, None, "None")
        if self.train.fixes:
            for key in c.none_training:
                self._set(m, key, None, "None")
            for key in c.training_minus_one:
                self._set(m, key, -1, "-1")

    def _fw_lightning(self, m: dict) -> None:
        # What Lightning's own save_weights_only omits (callbacks: ModelCheckpoint/
        # EarlyStopping state, scores, paths).
        c = CONVENTIONS["lightning"]
        self._drop(m, optimizer=c.drop_optimizer, training=c.drop_training)
        if self.train.fixes:
            for key in [k for k in m if isinstance(k, str) and LIGHTNING_SCALER.search(k)]:
                self._del(m, key)

    def _fw_rfdetr(self, m: dict) -> None:
        if "pytorch-lightning_version" in m or "loops" in m:
            self._fw_lightning(m)
        # Pre-Lightning: checkpoint_best_total.pth keeps {model, args}.
        c = CONVENTIONS["rfdetr"]
        if c.ema and self._ema_moves(m, *c.ema):
            self._del(m, c.ema[0])
        self._drop(m, optimizer=c.drop_optimizer,
                   training=c.drop_training if "state_dict" not in m else ())

    def _fw_timm(self, m: dict) -> None:
        # clean_checkpoint.py: state_dict_ema (or state_dict) is the weights.
        c = CONVENTIONS["timm"]
        if c.ema and self._ema_moves(m, *c.ema):
            self._del(m, c.ema[0])
        self._drop(m, optimizer=c.drop_optimizer, training=c.drop_training)

    def _fw_mmengine(self, m: dict) -> None:
        # publish_model.py keeps meta + state_dict. EMAHook already swapped EMA into state_dict.
        if self.ema.fixes and m.get("ema_state_dict") is not None:
            if self.ema.options.get("keep", "ema") == "weights":
                ema_sd = as_mapping(m["ema_state_dict"]) or {}
                sd = as_mapping(m.get("state_dict"))
                if sd is not None:
                    for k in list(sd):
                        if f"module.{k}" in ema_sd:
                            sd[k] = ema_sd[f"module.{k}"]
                    self.plan.changes.append(
                        Change.other("state_dict ← raw weights from ema_state_dict"))
            self._del(m, "ema_state_dict")
        c = CONVENTIONS["mmengine"]
        self._drop(m, optimizer=c.drop_optimizer, training=c.drop_training)

    def _fw_detectron2(self, m: dict) -> None:
        c = CONVENTIONS["detectron2"]
        self._drop(m, optimizer=c.drop_optimizer)
        if self.opt.fixes:
            inner = as_mapping((as_mapping(m.get("trainer")) or {}).get("_trainer"))
            if inner is not None and "optimizer" in inner:
                del inner["optimizer"]
                self.plan.changes.append(Change.removed("trainer._trainer.optimizer"))
        # The trainer holds the optimizer state: it goes only when optimizer-state is fixed
        # too; else only its schedulers and scalers go (the generic pass), not the optimizer.
        keep = () if self.opt.fixes else ("trainer",)
        self._drop(m, training=tuple(k for k in c.drop_training if k not in keep))

    def _generic_ema(self, root: Any, analysis: Analysis) -> None:
        """A generic ``{"model": …, "ema": …}`` dict with ``keep: ema``: the EMA becomes the
        weights and its own key None — else check would call it fixable and fix would never
        fix it (issue 9, defect 2). Only for one weights and one EMA key at the top level."""
        if not self.ema.fixes or self.ema.options.get("keep", "ema") != "ema":
            return
        m = as_mapping(root)
        ema = [s.path for s in analysis.subtrees if s.role == "ema"]
        weights = [s.path for s in analysis.subtrees if s.role == "weights"]
        if m is None or len(ema) != 1 or len(weights) != 1 or ema[0] not in m \
                or weights[0] not in m:
            return
        if self._ema_moves(m, ema[0], weights[0]):
            m[ema[0]] = None
            self.plan.changes.append(Change.to_none(ema[0], role="ema"))

    def roles(self, root: Any, analysis: Analysis) -> None:
        """Generic: every remaining subtree whose role a fixing rule covers becomes None."""
        if analysis.framework == "generic":
            self._generic_ema(root, analysis)
        targets: dict[str, str] = {}
        for sub in analysis.subtrees:
            rid = ROLE_RULE.get(sub.role)
            if sub.role == "ema" and self.ema.fixes \
                    and self.ema.options.get("keep", "ema") == "weights":
                rid = "ema-duplicate"
            if rid is None or not rule_fixes(self, rid):
                continue
            if sub.path == "":
                self.plan.notes.append(f"the whole file is {sub.role} state; not stripped"
                                       " (remove the file instead)")
                continue
            targets[sub.path] = sub.role
        if not targets:
            return
        # Find each target path in the (already copied) tree, with its parent.
        found: list[tuple[Any, Any, Any, str]] = []
        seen: set[int] = set()
        stack: list[tuple[tuple, Any]] = [((), root)]
        while stack:
            path, node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for key, child in children(node):
                cpath = (*path, key)
                text = path_text(cpath)
                if text in targets:
                    if child is not None:
                        found.append((node, key, child, text))
                elif child is not None and not isinstance(child, (TensorRef, str, int, float)):
                    stack.append((cpath, child))
        for parent, key, child, text in found:
            if assign(parent, key, child, None):
                self.plan.changes.append(Change.to_none(text, role=targets[text]))
            else:
                self.plan.notes.append(f"{text}: {targets[text]} state inside an immutable"
                                       " value; left as is")


def rule_fixes(stripper: Stripper, rule_id: str) -> bool:
    return {"optimizer-state": stripper.opt, "training-state": stripper.train,
            "ema-duplicate": stripper.ema}[rule_id].fixes
