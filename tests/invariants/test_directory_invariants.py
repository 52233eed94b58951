"""Checkpoint directories' fix is a plan like a file's (policy/directories.py): over the real
directory fixtures (HF Trainer ``checkpoint-500/`` made by torch with a real AdamW, LambdaLR,
GradScaler and RNG states — safetensors and .bin weights, and save_only_model; DeepSpeed
ZeRO-2 with ``global_step10/``), black-box through the CLI's JSON (tests/invariants/harness.py),
for every policy of {remove-training-files true, false} × {action fix, warn, fail} on
optimizer-state and training-state:

* the generic invariants (tests/invariants/checks.py): dry run = real run (statuses, sizes,
  removable bytes, summary), the dry run writes nothing, a directory is changed iff reported
  fixed, after ``fix`` no fixable finding is left;
* a training-file finding is fixable iff the real fix deleted its files (all of them; a
  finding that is not fixable has none deleted), and nothing else is deleted;
* the bytes: the fix's ``size_after`` and ``removed`` are the deleted files' sizes, equal to
  the fixable findings' bytes, and the dry run's ``removed`` equals the real run's;
* every other member is untouched (bytes and mtime equal).
"""

from __future__ import annotations

import pytest

from tests.fixtures import DIRECTORY_FAMILIES
from tests.invariants.checks import INVARIANTS
from tests.invariants.harness import Run, run_policy

TRAINING_RULES = ("optimizer-state", "training-state")
POLICIES = {f"{action}-{'remove' if remove else 'keep'}": {
    "version": 1,
    "rules": {r: {"action": action, "remove-training-files": remove} for r in TRAINING_RULES}}
    for action in ("fix", "warn", "fail") for remove in (True, False)}
# removable-agrees compares tensor bytes; a directory's fix deletes whole files (their file
# bytes are what its findings count): checked below by _bytes_agree instead.
GENERIC = {k: v for k, v in INVARIANTS.items() if k != "removable-agrees"}


def _deleted(run: Run, fam: str) -> set[str]:
    """Members (relative to the directory) that the real fix deleted."""
    prefix = run.paths[fam].removeprefix("files/") + "/"
    before, after = run.snaps["fix"].files, run.snaps["after"].files
    return {n[len(prefix):] for n in before if n.startswith(prefix) and n not in after}


def _training(report: dict) -> list[dict]:
    return [f for f in report["findings"]
            if f["rule"] in TRAINING_RULES and "files" in f.get("detail", {})]


def fixable_iff_deleted(run: Run) -> dict[str, str]:
    bad = {}
    for fam in run.families:
        gone = _deleted(run, fam)
        planned: set[str] = set()
        for f in _training(run.file("check", fam)):
            files = {x["path"] for x in f["detail"]["files"]}
            if f["fixable"]:
                planned |= files
                if not files <= gone:
                    bad[fam] = f"{f['rule']} fixable, but {sorted(files - gone)} not deleted"
            elif files & gone:
                bad[fam] = f"{f['rule']} not fixable, but {sorted(files & gone)} deleted"
        if gone != planned:
            bad[fam] = f"deleted {sorted(gone)}, fixable findings named {sorted(planned)}"
    return bad


def bytes_agree(run: Run) -> dict[str, str]:
    bad = {}
    for fam in run.families:
        c, d, f = run.file("check", fam), run.file("dry", fam), run.file("fix", fam)
        prefix = run.paths[fam].removeprefix("files/") + "/"
        freed = sum(len(run.snaps["fix"].files[prefix + m][0]) for m in _deleted(run, fam))
        promised = sum(x["bytes"] for x in _training(c) if x["fixable"])
        removed = (f.get("details") or {}).get("fix", {}).get("removed", {})
        dry_removed = (d.get("details") or {}).get("fix", {}).get("removed", {})
        after = f["size_after"] if f["size_after"] is not None else f["size_bytes"]
        if not (freed == promised == sum(removed.values()) == f["size_bytes"] - after):
            bad[fam] = (f"deleted {freed} B, fixable findings {promised} B, fix removed "
                        f"{removed}, size {f['size_bytes']} → {after}")
        elif dry_removed != removed:
            bad[fam] = f"dry run removed {dry_removed}, fix {removed}"
        if c["size_bytes"] != f["size_bytes"] or \
                run.file("after", fam)["size_bytes"] != after:
            bad[fam] = (f"sizes: check {c['size_bytes']}, fix {f['size_bytes']} → {after}, "
                        f"check after {run.file('after', fam)['size_bytes']}")
    return bad


def others_untouched(run: Run) -> dict[str, str]:
    bad = {}
    for fam in run.families:
        prefix = run.paths[fam].removeprefix("files/") + "/"
        before, after = run.snaps["fix"].files, run.snaps["after"].files
        touched = [n for n, v in before.items() if n.startswith(prefix) and n in after
                   and after[n] != v]
        added = [n for n in after if n.startswith(prefix) and n not in before]
        if touched or added:
            bad[fam] = f"changed {touched}, added {added}"
    return bad


CHECKS = {**GENERIC, "fixable-iff-deleted": fixable_iff_deleted, "bytes-agree": bytes_agree,
          "others-untouched": others_untouched}


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_directory_invariants(runs, ckpt_factory, tmp_path_factory, policy):
    run = run_policy(ckpt_factory, policy, POLICIES[policy],
                     tmp_path_factory.mktemp(f"dir-{policy}"), families=DIRECTORY_FAMILIES)
    broken = {name: fams for name, check in CHECKS.items() if (fams := check(run))}
    assert not broken, f"{policy}: " + "; ".join(
        f"{name}: {fams}" for name, fams in broken.items())
    fixed = {fam for fam in run.families if run.file("fix", fam)["status"] == "fixed"}
    if policy == "fix-remove":  # every layout had training files: all deleted, all pass
        assert fixed == set(DIRECTORY_FAMILIES)
        assert all(run.file("after", fam)["status"] == "pass" for fam in run.families)
    else:
        assert not fixed, f"{policy}: {fixed} changed although nothing may delete files"
