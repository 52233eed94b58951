"""evaluate(): findings, their messages and bytes, and bytes_removable, on hand-built analyses."""

from __future__ import annotations

import pytest

from ckpt_guard.analyze.model import RoleSubtree
from ckpt_guard.policy import RuleConfig, builtin_policy, evaluate, evaluate_unreadable
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.tree import GlobalRef, Opaque, Storage, TensorRef
from tests.policy.build import analysis, tensor, verdict


def rules(**changes: dict | str) -> dict[str, RuleConfig]:
    """The built-in rules with ``changes`` (rule id with '_' for '-') merged in."""
    out = dict(builtin_policy().rules)
    for key, change in changes.items():
        rule_id = key.replace("_", "-")
        out[rule_id] = out[rule_id].merged({"action": change} if isinstance(change, str)
                                           else change)
    return out


def _adam_state(n_params: int, *, decoupled: bool | None = False) -> dict:
    st = Storage("s", "float32", 1)
    state = {i: {"step": TensorRef(st, "float32", ()), "exp_avg": TensorRef(st, "float32", (1,)),
                 "exp_avg_sq": TensorRef(st, "float32", (1,))} for i in range(n_params)}
    group = {"lr": 0.001, "betas": (0.9, 0.999), "amsgrad": False,
             "params": list(range(n_params))}
    if decoupled is not None:
        group["decoupled_weight_decay"] = decoupled
    return {"state": state, "param_groups": [group]}


def test_optimizer_message_matches_the_issue_example() -> None:
    a = analysis(
        subtrees=[RoleSubtree("optimizer", "optimizer", 2_100_000_000, "torch optimizer"),
                  RoleSubtree("model", "weights", 1_034_328_358)],
        root={"model": {}, "optimizer": _adam_state(161)},
        bytes_by_role={"weights": 1_034_328_358, "optimizer": 2_100_000_000})
    findings, removable = evaluate(a, rules(fp32_payload="off"), path="best.pt")
    assert [f.message for f in findings] == [
        "2.1 GB (67% of tensor bytes) at 'optimizer': "
        "Adam-style state (exp_avg, exp_avg_sq) for 161 params"]
    f = findings[0]
    assert (f.rule, f.action, f.bytes, f.fixable) == ("optimizer-state", "fail",
                                                      2_100_000_000, False)
    assert f.detail == {"paths": ["optimizer"]}
    assert removable == 2_100_000_000


@pytest.mark.parametrize(("state", "name"), [
    # The class is not recorded: the same words whatever param_groups say (AdamW, RAdam…)
    (_adam_state(2, decoupled=True), "Adam-style state (exp_avg, exp_avg_sq) for 2 params"),
    (_adam_state(2, decoupled=None), "Adam-style state (exp_avg, exp_avg_sq) for 2 params"),
    ({**_adam_state(2), "param_groups": [{"lr": 0.1, "params": [0, 1]}]},  # no amsgrad
     "Adam-style state (exp_avg, exp_avg_sq) for 2 params"),
    ([_adam_state(1), _adam_state(3)],  # Lightning
     "Adam-style state (exp_avg, exp_avg_sq) for 4 params"),
    ({"state": {0: {"momentum_buffer": TensorRef(Storage("m", "float32", 4), "float32", (4,))}},
      "param_groups": [{"params": [0], "momentum": 0.9}]},
     "SGD momentum state (momentum_buffer) for 1 param"),
    ({"state": {0: {"foo": TensorRef(Storage("m", "float32", 4), "float32", (4,))}},
      "param_groups": [{"params": [0]}]}, "optimizer state (foo) for 1 param"),
    ({"state": {}, "param_groups": [{"params": [0, 1]}]}, "no per-parameter buffers"),
    # not an optimizer state_dict: the analysis' own description is used
    ({"something": 1}, "torch optimizer state_dict"),
])
def test_optimizer_description(state: object, name: str) -> None:
    a = analysis([tensor("optimizer.x", "optimizer")],
                 subtrees=[RoleSubtree("trainer._trainer.optimizer", "optimizer", 40,
                                       "torch optimizer state_dict")],
                 root={"trainer": {"_trainer": {"optimizer": state}}})
    [f] = [f for f in evaluate(a, rules(), path="x.pt")[0] if f.rule == "optimizer-state"]
    assert f.message.endswith(f"at 'trainer._trainer.optimizer': {name}")
    assert not f.message.startswith("optimizer state")  # the rule id says that already


def test_optimizer_subtree_found_through_opaque_and_dotted_keys() -> None:
    holder = Opaque(GlobalRef("mypkg", "Box"), "newobj", state={"opt.v1": _adam_state(1)})
    a = analysis([tensor("box.opt.v1.state.0.exp_avg", "optimizer")],
                 subtrees=[RoleSubtree("box.opt.v1", "optimizer", 40)], root={"box": holder})
    [f] = [f for f in evaluate(a, rules(), path="x.pt")[0] if f.rule == "optimizer-state"]
    assert f.message.endswith(": Adam-style state (exp_avg, exp_avg_sq) for 1 param")


def test_whole_file_optimizer_and_fix_action() -> None:
    a = analysis([tensor("state.0.exp_avg", "optimizer", shape=(250,))],
                 subtrees=[RoleSubtree("", "optimizer", 1000)], root=_adam_state(1))
    [f] = evaluate(a, rules(optimizer_state="fix"), path="optimizer.pt")[0]
    # fix never strips a file to nothing (a per-file optimizer.pt): not fixable, else the
    # fix hook loops on it (issue 9, defect 2); the message says what to do instead
    assert f.message == ("1.0 kB (100% of tensor bytes) at the top level: "
                         "Adam-style state (exp_avg, exp_avg_sq) for 1 param; the whole file "
                         "is this state: remove the file instead")
    assert (f.action, f.fixable) == ("fix", False)


def test_off_rules_produce_nothing_and_free_nothing() -> None:
    a = analysis([tensor("model.w", "weights", shape=(10_000_000,)),
                  tensor("ema.w", "ema", shape=(10_000_000,)),
                  tensor("optimizer.state.0.exp_avg", "optimizer", shape=(100,)),
                  tensor("lr_scheduler.x", "scheduler", shape=(5,))],
                 globals_=[verdict("os.system", "unsafe", "process execution"),
                           verdict("models.yolo.Model", "needs-code", "custom class")])
    off = {rule: RuleConfig("off", cfg.options) for rule, cfg in builtin_policy().rules.items()}
    assert evaluate(a, off, path="x.pt") == ([], 0)


def test_bytes_removable_sums_the_size_rules() -> None:
    a = analysis([tensor("model.conv.weight", "weights", shape=(3000, 1000)),
                  tensor("model.bn.weight", "weights", shape=(1000,)),
                  tensor("ema.conv.weight", "ema", shape=(3000, 1000)),
                  tensor("ema.bn.weight", "ema", shape=(1000,)),
                  tensor("optimizer.state.0.exp_avg", "optimizer", shape=(6_000_000,)),
                  tensor("scaler.scale", "scaler", shape=(1,)),
                  tensor("epoch_rng", "rng", "uint8", shape=(5056,))],
                 subtrees=[RoleSubtree("optimizer", "optimizer", 24_000_000),
                           RoleSubtree("scaler", "scaler", 4),
                           RoleSubtree("epoch_rng", "rng", 5056),
                           RoleSubtree("model", "weights", 12_004_000),
                           RoleSubtree("ema", "ema", 12_004_000)])
    r = rules(fp32_payload={"max-bytes": 1_000_000}, ema_duplicate="fix")
    findings, removable = evaluate(a, r, path="last.pt")
    by_rule = {f.rule: f for f in findings}
    assert list(by_rule) == ["optimizer-state", "ema-duplicate", "training-state",
                             "fp32-payload"]
    assert by_rule["optimizer-state"].bytes == 24_000_000
    assert by_rule["training-state"].bytes == 5060
    assert by_rule["training-state"].message == (
        "grad scaler at 'scaler', RNG state at 'epoch_rng' (5.1 kB, <1% of tensor bytes)")
    assert by_rule["ema-duplicate"].bytes == 12_004_000  # keep: ema drops the weights
    assert by_rule["ema-duplicate"].message == (
        "EMA weights at 'ema' (12.0 MB) duplicate the weights at 'model' (12.0 MB); a fix "
        "keeps the EMA copy (keep: ema) and removes 12.0 MB")
    # the cast applies to the kept copy (EMA) only; ema.bn.weight stays FP32
    assert by_rule["fp32-payload"].bytes == 6_000_000
    assert by_rule["fp32-payload"].message == (
        "12.0 MB of float32 weights in 1 tensor could be float16, saving 6.0 MB "
        "(over max-bytes 1.0 MB); 1 tensor (4.0 kB) stays float32 (keep-fp32)")
    assert by_rule["fp32-payload"].detail["kept_fp32"] == [
        {"path": "ema.bn.weight", "reason": "normalization layer"}]
    assert removable == 24_000_000 + 5060 + 12_004_000 + 6_000_000

    # keep: weights drops the EMA; with ema-duplicate off both copies stay and both are cast
    _, removable = evaluate(a, rules(fp32_payload={"max-bytes": 0},
                                     ema_duplicate={"action": "fix", "keep": "weights"}),
                            path="last.pt")
    assert removable == 24_000_000 + 5060 + 12_004_000 + 6_000_000
    # at warn, the duplicate stays in the file, and a fix casts both copies: so does check
    # (issue 9, defect 3)
    findings, _ = evaluate(a, rules(fp32_payload={"max-bytes": 0}), path="last.pt")
    assert {f.rule: f.bytes for f in findings}["fp32-payload"] == 12_000_000
    findings, removable = evaluate(a, rules(fp32_payload={"max-bytes": 0}, ema_duplicate="off"),
                                   path="last.pt")
    assert {f.rule: f.bytes for f in findings}["fp32-payload"] == 12_000_000
    assert removable == 24_000_000 + 5060 + 12_000_000


@pytest.mark.parametrize(("castable", "max_bytes", "fires"), [
    (10_000_000, "10MB", False),  # at the limit: fine
    (10_000_004, "10MB", True),
    (4, 0, True),
    (0, 0, False),
])
def test_fp32_threshold(castable: int, max_bytes: int | str, fires: bool) -> None:
    from ckpt_guard.policy import parse_size

    a = analysis([tensor("w", "weights", shape=(castable // 4,))] if castable else [])
    findings, removable = evaluate(a, rules(fp32_payload={"max-bytes": parse_size(max_bytes)}),
                                   path="x.pt")
    assert [f.rule for f in findings] == (["fp32-payload"] if fires else [])
    assert removable == (castable // 2 if fires else 0)


def test_fp32_counts_shared_storages_once_and_ignores_other_dtypes() -> None:
    shared = Storage("0", "float32", 1_000_000)
    # (2-D weights: a 1-D "weight" marks a normalization layer, which stays FP32)
    a = analysis([tensor("a.weight", "weights", shape=(1000, 1000), storage=shared),
                  tensor("b.weight", "weights", shape=(1000, 1000), storage=shared),  # tied
                  tensor("c.weight", "weights", "float16", shape=(1_000_000,)),
                  tensor("d.idx", "weights", "int64", shape=(1_000_000,)),
                  tensor("optimizer.exp_avg", "optimizer", shape=(9_000_000,))])
    findings, _ = evaluate(a, rules(fp32_payload={"max-bytes": 0, "cast-to": "bfloat16"},
                                    optimizer_state="off"), path="x.pt")
    [f] = findings
    assert f.bytes == 2_000_000 and f.detail["castable_bytes"] == 4_000_000
    assert f.message == ("4.0 MB of float32 weights in 2 tensors could be "
                         "bfloat16, saving 2.0 MB")


def test_fp32_fix_action() -> None:
    a = analysis([tensor("w", "weights", shape=(5_000_000,))])
    [f] = evaluate(a, rules(fp32_payload={"action": "fix", "max-bytes": 0}), path="x.pt")[0]
    assert f.fixable and f.action == "fix" and "fix" not in f.message


def test_unsafe_pickle_lists_globals_with_reasons() -> None:
    a = analysis(globals_=[
        verdict("torch._utils._rebuild_tensor_v2", "safe"),
        verdict("os.system", "unsafe", "runs a shell command"),
        verdict("builtins.eval", "unsafe", "evaluates code", member="archive/extra.pkl"),
        verdict("os.system", "unsafe", "runs a shell command"),
    ])
    [f] = evaluate(a, rules(), path="x.pt")[0]
    assert f.rule == "unsafe-pickle" and f.action == "fail" and not f.fixable
    assert f.message == ("references os.system (runs a shell command), "
                         "builtins.eval (evaluates code) in archive/data.pkl, archive/extra.pkl: "
                         "torch.load(weights_only=False) on this file can run arbitrary code")
    assert [g["global"] for g in f.detail["globals"]] == ["os.system", "builtins.eval",
                                                          "os.system"]


def test_needs_code_lists_classes() -> None:
    names = ["models.yolo.DetectionModel", "models.common.Conv", "models.common.C2f",
             "models.common.SPPF", "models.head.Detect", "models.common.Bottleneck",
             "models.yolo.DetectionModel"]
    a = analysis(globals_=[verdict(n, "needs-code", "custom class") for n in names])
    [f] = evaluate(a, rules(), path="best.pt")[0]
    assert (f.rule, f.action) == ("needs-code", "warn")
    assert f.message == (
        "6 classes or functions outside torch's weights_only allowlist "
        "(models.yolo.DetectionModel, models.common.Conv, models.common.C2f, +3 more): "
        "torch.load(weights_only=True) refuses this file; weights_only=False needs package "
        "'models' importable and runs its code")
    assert f.detail["classes"][0] == "models.yolo.DetectionModel"
    assert len(f.detail["classes"]) == 6


def test_file_size() -> None:
    a = analysis([tensor("w", "weights", "float16", shape=(10,))], size=546_000_000)
    assert evaluate(a, rules(), path="x.pt")[0] == []  # off by default
    [f] = evaluate(a, rules(file_size="fail"), path="x.pt")[0]
    # the limit as it was most likely written (100MiB), not as "105 MB"
    assert f.message == "546 MB, over max-bytes 100 MiB"
    assert (f.bytes, f.detail) == (546_000_000, {"size_bytes": 546_000_000,
                                                 "max_bytes": 104_857_600})


def test_lfs_pointer() -> None:
    oid = "sha256:" + "ab" * 32
    a = analysis(fmt="lfs-pointer", size=132, metadata={"oid": oid, "size": 546_000_000})
    findings, removable = evaluate(a, rules(file_size="warn"), path="models/best.pt")
    assert removable == 0
    assert [f.message for f in findings] == [
        "Git LFS pointer to a 546 MB object (sha256:abababababab…), not the weights "
        "themselves: fetch LFS objects to check it (`git lfs pull "
        "--include=\"models/best.pt\"`, or `lfs: true` on actions/checkout)",
        "the LFS object is 546 MB, over max-bytes 100 MiB",
    ]
    assert findings[0].action == "warn" and findings[0].bytes == 546_000_000


@pytest.mark.parametrize(("err", "message"), [
    (UnreadableError("not a weight file (starts with b'PK\\x03\\x04', no data.pkl)"),
     "not a weight file (starts with b'PK\\x03\\x04', no data.pkl)"),
    (PermissionError(13, "Permission denied"), "cannot read: Permission denied"),
    (ValueError("bad\nthing"), "ValueError: bad thing"),
])
def test_unreadable(err: Exception, message: str) -> None:
    f = evaluate_unreadable(err, rules())
    assert f is not None and (f.rule, f.action, f.message) == ("unreadable", "fail", message)
    assert evaluate_unreadable(err, rules(unreadable="off")) is None


def _hf_dir(remove: bool = False, action: str = "fail") -> tuple:
    weights = analysis([tensor("bert.encoder.w", "weights", shape=(1_000_000,))],
                       fmt="safetensors", size=4_000_100)
    optim = analysis([tensor("state.0.exp_avg", "optimizer", shape=(2_000_000,))],
                     subtrees=[RoleSubtree("", "optimizer", 8_000_000)], size=8_000_500)
    sched = analysis(size=1_000)
    args = analysis(globals_=[verdict("transformers.training_args.TrainingArguments",
                                      "needs-code", "custom class"),
                              verdict("posix.system", "unsafe", "runs a shell command")],
                    size=5_000)
    children = [("model.safetensors", weights, "weights"), ("optimizer.pt", optim, "optimizer"),
                ("scheduler.pt", sched, "scheduler"), ("training_args.bin", args, "training"),
                ("rng_state.pth", UnreadableError("truncated"), "rng"),
                ("extra.bin", UnreadableError("truncated zip"), "")]
    d = analysis(fmt="hf-checkpoint-dir", children=children, path="/nonexistent/checkpoint-500",
                 size=0)
    r = rules(optimizer_state={"action": action, "remove-training-files": remove},
              fp32_payload={"max-bytes": 0})
    return d, r


def test_checkpoint_directory() -> None:
    d, r = _hf_dir()
    findings, removable = evaluate(d, r, path="checkpoint-500")
    # failing findings first, then warnings
    assert [(f.rule, f.message) for f in findings] == [
        ("unsafe-pickle", "training_args.bin: references posix.system (runs a "
                          "shell command) in archive/data.pkl: torch.load(weights_only=False) "
                          "on this file can run arbitrary code"),
        # a member named as a training file that cannot be read still fails (issue 8, 5)
        ("unreadable", "rng_state.pth: truncated"),
        ("unreadable", "extra.bin: truncated zip"),
        ("optimizer-state", "training file optimizer.pt (8.0 MB)"),
        ("fp32-payload", "model.safetensors: 4.0 MB of float32 weights in 1 "
                         "tensor could be float16, saving 2.0 MB"),
        ("training-state", "training files scheduler.pt (1.0 kB), "
                           "training_args.bin (5.0 kB), rng_state.pth (size unknown)"),
    ]
    assert findings[4].detail["member"] == "model.safetensors"
    assert findings[3].bytes == 8_000_500 and findings[5].bytes == 6_000
    assert removable == 2_000_000 + 8_000_500 + 6_000


@pytest.mark.parametrize(("remove", "suffix", "fixable"), [
    (False, " (set remove-training-files: true to let `ckpt-guard fix` delete them)", False),
    (True, "", True),
])
def test_checkpoint_directory_fix_needs_opt_in(remove: bool, suffix: str, fixable: bool) -> None:
    d, r = _hf_dir(remove=remove, action="fix")
    [f] = [f for f in evaluate(d, r, path="checkpoint-500")[0] if f.rule == "optimizer-state"]
    assert f.message == "training file optimizer.pt (8.0 MB)" + suffix
    assert (f.action, f.fixable) == ("fix", fixable)


def test_needs_code_names_the_packages_to_install_not_stdlib_or_torch() -> None:
    a = analysis(globals_=[verdict("argparse.Namespace", "needs-code", "custom class"),
                           verdict("torch.nn.modules.linear.Linear", "needs-code", "torch")])
    [f] = evaluate(a, rules(), path="x.pt")[0]
    assert f.message == (
        "2 classes or functions outside torch's weights_only allowlist (argparse.Namespace, "
        "torch.nn.modules.linear.Linear): torch.load(weights_only=True) refuses this file; "
        "load it with weights_only=False, or allow them with "
        "torch.serialization.add_safe_globals")
    a = analysis(globals_=[verdict("mmengine.x.HistoryBuffer", "needs-code", "c"),
                           verdict("numpy.ndarray", "needs-code", "c")])
    [f] = evaluate(a, rules(), path="x.pt")[0]
    assert f.message.endswith("weights_only=False needs packages 'mmengine' and 'numpy' "
                              "importable and runs their code")


def test_needs_code_on_torchscript_speaks_of_torch_jit_load() -> None:
    a = analysis(fmt="torchscript", globals_=[
        verdict("__torch__.net.SmallNet", "needs-code", "c"),
        verdict("torch.jit._pickle.build_intlist", "needs-code", "c")])
    [f] = evaluate(a, rules(), path="x.pt")[0]
    assert f.message == ("TorchScript archive: torch.load(weights_only=True) refuses it, and "
                         "torch.jit.load runs the compiled code it carries "
                         "(e.g. __torch__.net.SmallNet)")


def test_optimizer_without_tensors_says_so_instead_of_0_b() -> None:
    a = analysis(subtrees=[RoleSubtree("optimizer", "optimizer", 0)],
                 root={"optimizer": {"state": {}, "param_groups": [{"params": [0]}]}})
    [f] = [f for f in evaluate(a, rules(), path="x.pt")[0] if f.rule == "optimizer-state"]
    assert f.message == "state at 'optimizer' (no tensor data): no per-parameter buffers"


def test_findings_come_most_severe_first() -> None:
    a = analysis([tensor("optimizer.state.0.exp_avg", "optimizer", shape=(10,))],
                 subtrees=[RoleSubtree("optimizer", "optimizer", 40)],
                 globals_=[verdict("models.yolo.Model", "needs-code", "custom class")])
    findings, _ = evaluate(a, rules(), path="x.pt")
    assert [(f.rule, f.action) for f in findings] == [("optimizer-state", "fail"),
                                                      ("needs-code", "warn")]


def test_checkpoint_directory_with_an_unsafe_pickle_is_not_fixable() -> None:
    """fix never changes a directory holding an unsafe pickle (app.fix refuses it as it
    refuses any unsafe file): its training files are then neither fixable nor removable."""
    from dataclasses import replace

    d, r = _hf_dir(remove=True, action="fix")
    unsafe = [verdict("posix.system", "unsafe", "runs a shell command")]
    d = replace(d, globals=unsafe)
    findings, removable = evaluate(d, r, path="checkpoint-500")
    [f] = [f for f in findings if f.rule == "optimizer-state"]
    assert not f.fixable
    assert f.message.endswith("(fix does not change a checkpoint directory holding an unsafe "
                              "pickle)")
    assert removable == 2_000_000  # model.safetensors' castable FP32 only


def test_directory_plan_is_one_map_and_one_size_source() -> None:
    """plan_directory: both rules' files (training_args.bin under training-state, as its
    option documents), sizes from the reader's listing, removed bytes by role."""
    from ckpt_guard.policy.directories import KEPT_NOTE, plan_directory
    from ckpt_guard.policy.plan_types import ChangeKind

    d, _ = _hf_dir()
    d.checkpoint.metadata["file_sizes"] = {"optimizer.pt": 8_000_500, "scheduler.pt": 1_000,
                                           "training_args.bin": 5_000, "rng_state.pth": 700}
    both = {"action": "fix", "remove-training-files": True}
    plan = plan_directory(d, {"optimizer-state": both, "training-state": both})
    assert [c.path for c in plan.changes] == ["optimizer.pt", "scheduler.pt",
                                              "training_args.bin", "rng_state.pth"]
    assert {c.kind for c in plan.changes} == {ChangeKind.FILE_REMOVED}
    assert all(c.keys == () for c in plan.changes)
    assert plan.removed == {"optimizer": 8_000_500, "scheduler": 1_000, "other": 5_000,
                            "rng": 700}
    assert plan.fixes("optimizer-state") and plan.fixes("training-state")
    kept = plan_directory(d, {"optimizer-state": both, "training-state": "fix"})
    assert [c.path for c in kept.changes] == ["optimizer.pt"]
    assert not kept.fixes("training-state") and kept.notes == [KEPT_NOTE]
    assert not plan_directory(d, {"optimizer-state": "warn", "training-state": "fail"}).changed
