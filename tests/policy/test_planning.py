"""Rules own their fix plan: a finding is fixable iff its rule's action is ``fix`` and its plan
for the file is non-empty; check's fixable flags and removable bytes, the dry run and fix all
come from one :class:`~ckpt_guard.policy.plan_types.FilePlan` (issue 9, "the design step")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ckpt_guard.analyze import analyze
from ckpt_guard.analyze.model import RoleSubtree
from ckpt_guard.policy import evaluate
from ckpt_guard.policy.plan_types import ChangeKind
from ckpt_guard.policy.planning import plan_file
from ckpt_guard.read import read_path
from ckpt_guard.rewrite import fix_file
from ckpt_guard.rewrite.plan import make_plan, projected_size, replay
from tests.fixtures import FILE_FAMILIES
from tests.policy.build import analysis, tensor
from tests.rewrite.helpers import fix_rules


def _read(path: Path):
    return analyze(read_path(str(path)))


def _shape(a) -> list[tuple[str, str, tuple]]:
    return sorted((t.path, t.role, tuple(t.ref.shape)) for t in a.tensors)


@pytest.mark.parametrize("family", FILE_FAMILIES)
def test_a_plans_changes_describe_its_tree(ckpt_factory, family: str) -> None:
    """The typed changes are the plan: replayed on the file's own tree they give the tree the
    rewrite writes, and the reader's tree is left as read."""
    a = _read(ckpt_factory.get(family).path)
    if a.checkpoint.root is None:
        pytest.skip("no object tree")
    before = _shape(a)
    plan = make_plan(a, fix_rules())
    assert _shape(a) == before  # planning copies
    assert all(c.keys or c.edits for c in plan.changes), plan.changes
    replayed = analyze(replace(a.checkpoint, root=replay(a.checkpoint.root, plan.changes)))
    planned = analyze(replace(a.checkpoint, root=plan.root))
    assert _shape(replayed) == _shape(planned)
    for rid, rp in plan.rules.items():  # each rule's plan is its own part of the file's
        assert all(c in plan.changes for c in rp.changes), rid


def test_fixable_iff_the_rule_has_a_plan() -> None:
    # a generic dict with two EMA copies: ema-duplicate (keep: ema) cannot pick one
    a = analysis([tensor("model.w", "weights", shape=(1000,)),
                  tensor("ema.w", "ema", shape=(1000,)),
                  tensor("ema2.w", "ema", shape=(1000,))],
                 subtrees=[RoleSubtree("model", "weights", 4000), RoleSubtree("ema", "ema", 4000),
                           RoleSubtree("ema2", "ema", 4000)])
    rules = fix_rules(fp32_payload={"action": "off"})
    [f] = evaluate(a, rules, path="x.pt")[0]
    assert (f.rule, f.fixable) == ("ema-duplicate", False)
    assert f.message.endswith("(fix swaps the EMA in only for one EMA and one weights key at "
                              "the top level)")
    assert not make_plan(a, rules).fixes("ema-duplicate")
    # one EMA copy: planned (the EMA becomes the weights), so fixable
    b = analysis([tensor("model.w", "weights", shape=(1000,)),
                  tensor("ema.w", "ema", shape=(1000,))],
                 subtrees=[RoleSubtree("model", "weights", 4000), RoleSubtree("ema", "ema", 4000)])
    [f] = evaluate(b, rules, path="x.pt")[0]
    assert (f.rule, f.fixable) == ("ema-duplicate", True)
    plan = make_plan(b, rules)
    assert [c.kind for c in plan.changes] == [ChangeKind.MOVED, ChangeKind.TO_NONE]
    assert plan.removed == {"weights": 4000}


def test_safetensors_are_cast_not_stripped() -> None:
    a = analysis([tensor("model.w", "weights", shape=(1000,)),
                  tensor("optimizer.exp_avg", "optimizer", shape=(1000,))],
                 subtrees=[RoleSubtree("optimizer", "optimizer", 4000)], fmt="safetensors")
    by_rule = {f.rule: f for f in evaluate(a, fix_rules(), path="x.safetensors")[0]}
    assert not by_rule["optimizer-state"].fixable
    assert by_rule["optimizer-state"].message.endswith(
        "(fix does not strip tensors from a safetensors file)")
    assert by_rule["fp32-payload"].fixable


def test_a_file_fix_never_rewrites_has_no_plan() -> None:
    a = analysis([tensor("w", "weights", shape=(10_000,))], fmt="torchscript")
    [f] = evaluate(a, fix_rules(), path="m.pt")[0]
    assert (f.rule, f.fixable) == ("fp32-payload", False)
    assert f.message.endswith("(fix does not rewrite torchscript files)")
    _, removable = evaluate(a, fix_rules(), path="m.pt")
    assert removable == 0  # nothing a fix can remove (was counted before plans decided)
    assert plan_file(a, fix_rules()).refused


def test_removable_counts_what_a_fix_would_remove_once_asked(tmp_path: Path) -> None:
    """At the built-in actions (nothing at fix) removable is what the rules would plan were
    they set to fix: the same bytes as when they are."""
    sd = {"w": torch.ones(3000), "b": torch.ones(10)}
    torch.save({"model": sd, "optimizer": {"state": {0: {"exp_avg": torch.ones(3000)}},
                                            "param_groups": [{"params": [0]}]}},
               tmp_path / "a.pt")
    a = _read(tmp_path / "a.pt")
    builtin = {rid: cfg for rid, cfg in fix_rules().items()}
    for rid in ("optimizer-state", "training-state", "ema-duplicate", "fp32-payload"):
        builtin[rid] = builtin[rid].merged({"action": "warn"})
    f_warn, r_warn = evaluate(a, builtin, path="a.pt")
    f_fix, r_fix = evaluate(a, fix_rules(), path="a.pt")
    assert r_warn == r_fix == 12_000 + 6_020
    assert not any(f.fixable for f in f_warn) and all(f.fixable for f in f_fix)


def test_tiny_legacy_file_whose_cast_would_grow_it_has_no_plan(tmp_path: Path) -> None:
    """The invariant harness's one known exception, gone: check, dry run and fix agree that
    a legacy file whose only fix is a cast, which as a zip would be larger, is not fixed."""
    path = tmp_path / "tiny.pth"
    torch.save({"w": torch.ones(8)}, path, _use_new_zipfile_serialization=False)
    a = _read(path)
    rules = fix_rules()
    [f] = evaluate(a, rules, path="tiny.pth", output_size=projected_size)[0]
    assert (f.rule, f.fixable) == ("fp32-payload", False)
    assert "(as a torch zip the output would be larger than the input: " in f.message
    plan = make_plan(a, rules)
    assert plan.refused and not plan.fixes("fp32-payload")
    before = path.read_bytes()
    result = fix_file(str(path), a, rules)
    assert not result.changed and path.read_bytes() == before
    assert any("would be larger than the input" in n for n in result.notes)
    # a legacy file the cast halves is planned (and rewritten) as before
    big = tmp_path / "big.pth"
    torch.save({"w": torch.ones(50_000)}, big, _use_new_zipfile_serialization=False)
    b = _read(big)
    [f] = evaluate(b, rules, path="big.pth", output_size=projected_size)[0]
    assert f.fixable and not make_plan(b, rules).refused
