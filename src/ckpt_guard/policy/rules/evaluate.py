"""Judge an :class:`~ckpt_guard.analyze.model.Analysis` against a file's rules: run every
enabled rule of the registry and collect their findings, most severe first (fail/fix, then
warn).

``evaluate`` also returns ``bytes_removable``: the bytes a ``ckpt-guard fix`` of the enabled
size rules would take out — optimizer and training state, the duplicate EMA/weights copy,
half of the castable FP32 bytes — where the rule has a plan for the file (were it set to
``fix``: :mod:`ckpt_guard.policy.planning`), and a checkpoint directory's training files
where its plan would delete them were the rules set to ``fix`` with
``remove-training-files: true`` (:mod:`ckpt_guard.policy.directories`; they are baggage
whatever the option says).
"""

from __future__ import annotations

from dataclasses import replace

from ckpt_guard.policy.rules import file_size, fp32_payload, registry, shard_index
from ckpt_guard.policy.rules.base import (
    Context,
    Finding,
    Rules,
    by_severity,
    in_member,
    listing,
)
from ckpt_guard.policy.rules.registry import get
from ckpt_guard.policy.rules.unreadable import evaluate_error
from ckpt_guard.policy.rules.unsafe_pickle import RULE as UNSAFE
from ckpt_guard.units import format_bytes
from ckpt_guard.vocab import Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.planning import OutputSize

def evaluate(analysis: Analysis, rules: Rules, *, path: str,
             base_size: int | None = None,
             output_size: OutputSize | None = None) -> tuple[list[Finding], int]:
    """Findings for ``analysis`` under ``rules`` and the bytes a fix would remove.
    ``path`` is the checked path as reported (used in advice such as ``git lfs pull``);
    ``base_size`` the file's size in the base revision (``size-growth``; 0: a new file);
    ``output_size`` the size ``rewrite`` would write for a plan (a legacy file's zip)."""
    fmt = analysis.checkpoint.format
    if fmt in (Format.SHARDED_SAFETENSORS, Format.SHARDED_TORCH):
        return _sharded(analysis, rules, path)
    if (analysis.children and fmt != Format.DCP_DIR) or fmt in (Format.HF_CHECKPOINT_DIR,
                                                                  Format.DEEPSPEED_DIR):
        return _directory(analysis, rules, path)
    ctx = Context(rules=rules, path=path, base_size=base_size)
    findings: list[Finding] = []
    # A DCP directory is judged as the state dict it consolidates to (analyze.dcp); its
    # unreadable items stay failures (their globals are among the directory's own).
    for member, err, _hint in analysis.children:
        if isinstance(err, BaseException):
            unreadable = evaluate_unreadable(err, rules, member=member)
            if unreadable is not None:
                findings.append(unreadable)
    for rule in registry.EVALUATION_ORDER:
        cfg = rules.get(rule.id)
        if cfg is None or not cfg.enabled or rule.evaluate is None:
            continue
        finding = rule.evaluate(analysis, cfg, ctx)
        if finding is not None:
            findings.append(finding)
    # Fixable means the rule's plan for this file removes it (else the fix hook loops on it
    # forever; issue 9, defect 2): decided, with the bytes a fix removes, by the file's plan.
    if not findings:  # nothing to settle (and planning not imported: a clean file's check)
        return findings, 0
    from ckpt_guard.policy.planning import settle

    findings, removable = settle(analysis, rules, findings, output_size=output_size)
    return by_severity(findings), removable


def evaluate_unreadable(err: BaseException, rules: Rules, *, member: str = "") -> Finding | None:
    """The ``unreadable`` finding for a path the reader could not read (``None`` when the
    rule is off). ``member`` names the file inside a checkpoint directory."""
    return evaluate_error(err, rules, member=member)


def evaluate_failure(err: BaseException, rules: Rules, *, member: str = "") -> list[Finding]:
    """Findings for a path that could not be read (or examined) to the end: ``unreadable``,
    and ``unsafe-pickle`` for what its pickles referenced before the failure (an
    ``os.system`` followed by a parse error or a limit is still an ``os.system``)."""
    from ckpt_guard.analyze.analyzer import verdicts
    from ckpt_guard.policy.rules.unsafe_pickle import from_verdicts

    findings: list[Finding] = []
    cfg = rules.get(UNSAFE.id)
    partial = getattr(err, "partial_globals", None) or []
    if cfg is not None and cfg.enabled and partial:
        unsafe = from_verdicts(verdicts(partial), cfg, Context(rules, member), partial=True)
        if unsafe is not None:
            findings.append(in_member(unsafe, member) if member else unsafe)
    finding = evaluate_unreadable(err, rules, member=member)
    if finding is not None:
        findings.append(finding)
    return by_severity(findings)


# Judged over a whole sharded set, not per shard.
_SET_RULES = ("fp32-payload", "file-size", "size-growth")
_NO_STRIP = ("optimizer-state", "training-state", "ema-duplicate")


def _no_suffix(message: str) -> str:
    from ckpt_guard.policy.strips import NOT_SAFETENSORS

    return message[:-len(NOT_SAFETENSORS)] if message.endswith(NOT_SAFETENSORS) else message


def _sharded(a: Analysis, rules: Rules, path: str) -> tuple[list[Finding], int]:
    """A sharded set: each shard's own findings (named by shard), ``shard-index`` for every
    disagreement between the index and its shards, and the size rules over the whole set
    (``fp32-payload``'s ``max-bytes`` and ``file-size`` apply to the set, not per shard)."""
    findings: list[Finding] = []
    removable = 0
    per_shard = {k: v for k, v in rules.items() if k not in _SET_RULES}
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    for member, child, _hint in a.children:
        if isinstance(child, BaseException):
            finding = evaluate_unreadable(child, rules, member=member)
            if finding is not None:
                findings.append(finding)
            continue
        if child.checkpoint.format == Format.LFS_POINTER:
            continue  # a pointer in place of a shard: shard-index names it
        child_findings, child_removable = evaluate(
            child, per_shard, path=f"{folder}/{member}" if folder else member)
        if a.framework == "dcp":
            # torch.distributed.checkpoint's HF-storage set (analyze.dcp): fix casts its
            # shards but takes no entry out of it. (Its shards are safetensors files, which
            # no strip rule has a plan for: neither fixable nor removable already; say why in
            # the set's words.)
            child_findings = [replace(f, fixable=False, message=f"{_no_suffix(f.message)} "
                                      "(fix takes no entry out of a DCP "
                                      "HuggingFaceStorageWriter set: save the model's state "
                                      "dict alone)")
                              if f.rule in _NO_STRIP else f for f in child_findings]
        findings.extend(in_member(f, member) for f in child_findings)
        removable += child_removable
    cfg = rules.get(shard_index.RULE.id)
    if cfg is not None and cfg.enabled:
        findings.extend(shard_index.findings(a, cfg))
    cfg = rules.get(fp32_payload.RULE.id)
    if cfg is not None and cfg.enabled:
        finding = fp32_payload.finding_for(fp32_payload.set_payload(a, rules), cfg)
        if finding is not None:
            findings.append(finding)
            removable += finding.bytes
    cfg = rules.get(file_size.RULE.id)
    if cfg is not None and cfg.enabled:
        finding = file_size.evaluate(a, cfg, Context(rules, path))
        if finding is not None:
            findings.append(finding)
    return by_severity(findings), removable


def _directory(a: Analysis, rules: Rules, path: str) -> tuple[list[Finding], int]:
    """A checkpoint directory: its members' own findings (which fixing the directory does not
    remove: it never rewrites a member), and optimizer-state/training-state for its training
    files, fixable exactly where the directory's plan deletes them
    (:mod:`ckpt_guard.policy.directories`)."""
    from ckpt_guard.policy.directories import HINT_RULE, settle_directory, training_files

    findings: list[Finding] = []
    removable = 0
    unsafe_cfg = rules.get(UNSAFE.id)
    for member, child, hint in a.children:
        if isinstance(child, BaseException):
            # Whatever its name says: a member that cannot be read fails, and what it
            # referenced before failing is judged (the Trainer torch.loads training files).
            findings.extend(evaluate_failure(child, rules, member=member))
            continue
        if hint in HINT_RULE:
            if unsafe_cfg is not None and unsafe_cfg.enabled:
                # Training files are pickles too: still unsafe?
                unsafe = UNSAFE.evaluate(child, unsafe_cfg, Context(rules, path))
                if unsafe is not None:
                    findings.append(in_member(unsafe, member))
            continue
        child_findings, child_removable = evaluate(child, rules, path=f"{path}/{member}")
        # fix of a directory only deletes training files; it never rewrites a member.
        findings.extend(in_member(f, member, fixable=False) for f in child_findings)
        removable += child_removable
    training: list[Finding] = []
    by_rule = training_files(a)
    for rule_id in ("optimizer-state", "training-state"):
        cfg = rules.get(rule_id)
        files = by_rule.get(rule_id)
        if cfg is None or not cfg.enabled or not files:
            continue
        nbytes = sum(f.size or 0 for f in files)
        listed = [f"{f.member} ({format_bytes(f.size) if f.size is not None else 'size unknown'})"
                  for f in files]
        msg = f"training file{'s' if len(files) != 1 else ''} {listing(listed)}"
        detail = {"files": [{"path": f.member, "bytes": f.size, "kind": f.hint}
                            for f in files]}
        training.append(get(rule_id).finding(cfg, msg, nbytes, detail))
    training, training_removable = settle_directory(a, rules, training)
    return by_severity(findings + training), removable + training_removable
