"""rewrite/directories.py carries the directory's plan out, nothing else: a planned file that
cannot be deleted (or changed since it was read) is reported and kept, and the others are
still deleted; the dry run is the plan unexecuted."""

from __future__ import annotations

from ckpt_guard.analyze import analyze
from ckpt_guard.policy.directories import plan_directory
from ckpt_guard.read import read_path
from ckpt_guard.rewrite import fix_directory
from tests.rewrite.helpers import fix_rules

REMOVE = {"remove-training-files": True}


def _read(path):
    return analyze(read_path(str(path)))


def test_dry_run_is_the_plan_and_real_run_carries_it_out(ckpt_factory, tmp_path):
    fx = ckpt_factory.copy("deepspeed-dir", tmp_path)
    rules = fix_rules(optimizer_state=REMOVE, training_state=REMOVE)
    a = _read(fx.path)
    plan = plan_directory(a, rules)
    dry = fix_directory(str(fx.path), a, rules, dry_run=True, plan=plan)
    member = "global_step10/zero_pp_rank_0_mp_rank_00_optim_states.pt"
    assert dry.removed_files == (member,) and (fx.path / member).exists()
    real = fix_directory(str(fx.path), a, rules, plan=plan)
    assert (real.changed, real.size_after, real.removed, real.removed_files, real.changes) == (
        dry.changed, dry.size_after, dry.removed, dry.removed_files, dry.changes)
    assert not (fx.path / member).exists()
    assert (fx.path / "global_step10" / "mp_rank_00_model_states.pt").exists()


def test_a_file_that_changed_is_kept_and_the_others_deleted(ckpt_factory, tmp_path):
    fx = ckpt_factory.copy("hf-trainer-dir", tmp_path)
    rules = fix_rules(optimizer_state=REMOVE, training_state=REMOVE)
    a = _read(fx.path)
    with open(fx.path / "scheduler.pt", "ab") as f:  # a training run saving it again
        f.write(b"\0" * 10)
    result = fix_directory(str(fx.path), a, rules)
    assert result.changed and result.error is not None
    assert "scheduler.pt changed since it was read" in result.error
    assert set(result.removed_files) == {"optimizer.pt", "scaler.pt", "rng_state.pth",
                                         "training_args.bin"}
    assert (fx.path / "scheduler.pt").exists()
    assert not any((fx.path / m).exists() for m in result.removed_files)
    assert "scheduler" not in result.removed
    assert result.size_after == a.checkpoint.size_bytes - sum(result.removed.values())
