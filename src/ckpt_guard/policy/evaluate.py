"""Judge an :class:`~ckpt_guard.analyze.model.Analysis` against a file's rules.

Messages never repeat the rule id (every surface prints it beside them: ``optimizer-state:
617 kB …``) nor whether the finding is fixable (``Finding.fixable`` carries that; each
renderer says it its own way). Findings come most severe first (fail/fix, then warn).

``evaluate`` returns the findings (rules whose action is ``off`` produce none) and
``bytes_removable``: the bytes a ``ckpt-guard fix`` of the enabled size rules would take out —
optimizer and training state, the duplicate EMA/weights copy, half of the castable FP32
bytes, and a checkpoint directory's training files (which ``fix`` deletes only with
``remove-training-files: true``; they are counted because they are baggage either way).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from ckpt_guard.analyze.model import Analysis, GlobalVerdict
from ckpt_guard.policy.describe import find, optimizer_summary
from ckpt_guard.policy.keep_fp32 import ema_dropped_role, fp32_payload
from ckpt_guard.policy.model import FIXABLE_RULES, RuleConfig
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.report.model import Finding
from ckpt_guard.report.units import format_bytes, format_limit, format_percent

Rules = Mapping[str, RuleConfig]

TRAINING_ROLES = ("scheduler", "scaler", "rng")
_ROLE_WORDS = {"scheduler": "LR scheduler", "scaler": "grad scaler", "rng": "RNG state",
               "training": "training metadata"}
_MAX_LISTED = 5
# Directory members whose name marks them as training files, by the rule that owns them.
_HINT_RULE = {"optimizer": "optimizer-state", "scheduler": "training-state",
              "scaler": "training-state", "rng": "training-state", "training": "training-state"}


def evaluate(analysis: Analysis, rules: Rules, *, path: str) -> tuple[list[Finding], int]:
    """Findings for ``analysis`` under ``rules`` and the bytes a fix would remove.
    ``path`` is the checked path as reported (used in advice such as ``git lfs pull``)."""
    if analysis.checkpoint.format == "lfs-pointer":
        return _lfs_pointer(analysis, rules, path), 0
    if analysis.children or analysis.checkpoint.format in ("hf-checkpoint-dir", "deepspeed-dir"):
        return _directory(analysis, rules, path)
    findings: list[Finding] = []
    removable = 0
    for check in (_unsafe_pickle, _needs_code, _optimizer_state, _training_state,
                  _ema_duplicate, _fp32_payload):
        finding, freed = check(analysis, rules)
        if finding is not None:
            findings.append(finding)
            removable += freed
    size = _file_size(analysis.checkpoint.size_bytes, rules, "")
    if size is not None:
        findings.append(size)
    return _by_severity(findings), removable


def evaluate_failure(err: BaseException, rules: Rules, *, member: str = "") -> list[Finding]:
    """Findings for a path that could not be read (or examined) to the end: ``unreadable``,
    and ``unsafe-pickle`` for what its pickles referenced before the failure (an
    ``os.system`` followed by a parse error or a limit is still an ``os.system``)."""
    from ckpt_guard.analyze.analyzer import verdicts

    findings: list[Finding] = []
    unsafe, _ = _unsafe_from(verdicts(getattr(err, "partial_globals", None) or []), rules,
                             partial=True)
    if unsafe is not None:
        findings.append(_in_member(unsafe, member) if member else unsafe)
    finding = evaluate_unreadable(err, rules, member=member)
    if finding is not None:
        findings.append(finding)
    return _by_severity(findings)


def evaluate_unreadable(err: BaseException, rules: Rules, *, member: str = "") -> Finding | None:
    """The ``unreadable`` finding for a path the reader could not read (``None`` when the
    rule is off). ``member`` names the file inside a checkpoint directory."""
    cfg = rules.get("unreadable")
    if cfg is None or not cfg.enabled:
        return None
    reason = _one_line(err)
    prefix = f"{member}: " if member else ""
    detail = {"error": type(err).__name__}
    if member:
        detail["member"] = member
    return _finding("unreadable", cfg, f"{prefix}{reason}", 0, detail)


# --- single files -----------------------------------------------------------------------

def _unsafe_pickle(a: Analysis, rules: Rules) -> tuple[Finding | None, int]:
    return _unsafe_from(a.globals, rules)


def _unsafe_from(judged: list[GlobalVerdict], rules: Rules, *,
                 partial: bool = False) -> tuple[Finding | None, int]:
    cfg = rules.get("unsafe-pickle")
    verdicts = [g for g in judged if g.safety == "unsafe"]
    if cfg is None or not cfg.enabled or not verdicts:
        return None, 0
    parts = []
    pickled = [v for v in verdicts if v.use.opcode != "TorchScript"]
    code = [v for v in verdicts if v.use.opcode == "TorchScript"]
    before = " before it stops parsing" if partial else ""
    if pickled:
        parts.append(f"references {_named(pickled, rules)}{before}: torch.load(weights_only="
                     "False) on this file can run arbitrary code")
    if code:  # a TorchScript archive is a program: torch.load hands it to torch.jit.load
        parts.append(f"TorchScript code calls {_named(code, rules)}: torch.load/torch.jit.load "
                     "compile and run this code")
    msg = "; ".join(parts)
    detail = {"globals": [{"global": v.use.qualname, "reason": v.reason, "opcode": v.use.opcode,
                           "member": v.use.member} for v in verdicts]}
    return _finding("unsafe-pickle", cfg, msg, 0, detail), 0


def _named(verdicts: list, rules: Rules) -> str:
    """``name (reason), … in member, …`` for unsafe verdicts."""
    listed: dict[str, str] = {}
    members: list[str] = []
    for v in verdicts:
        listed.setdefault(v.use.qualname, v.reason)
        if v.use.member and v.use.member not in members:
            members.append(v.use.member)
    trust_cfg = rules.get("needs-code")
    ignored = _trusted(list(listed), trust_cfg.trusted_globals) if trust_cfg else set()
    for q in ignored:
        listed[q] += "; trusted-globals does not apply: trust never covers an unsafe global"
    names = [f"{q} ({r})" if r else q for q, r in listed.items()]
    where = f" in {', '.join(members)}" if members else ""
    return f"{_listing(names)}{where}"


def _needs_code(a: Analysis, rules: Rules) -> tuple[Finding | None, int]:
    cfg = rules.get("needs-code")
    uses = list({g.use.qualname: g.use for g in a.globals if g.safety == "needs-code"}.values())
    if cfg is None or not cfg.enabled or not uses:
        return None, 0
    trusted = _trusted([u.qualname for u in uses], cfg.trusted_globals)
    uses = [u for u in uses if u.qualname not in trusted]
    if not uses:
        return None, 0  # every class is the team's own (trusted-globals)
    classes = [u.qualname for u in uses]
    n = len(classes)
    if a.checkpoint.format == "torchscript":
        msg = (f"TorchScript archive: torch.load(weights_only=True) refuses it, and "
               f"torch.jit.load runs the compiled code it carries (e.g. {classes[0]})")
        return _finding("needs-code", cfg, msg, 0, {"classes": classes}), 0
    packages = _third_party([u.module for u in uses])
    one = n == 1
    msg = (f"{n} {'class or function' if one else 'classes or functions'} outside torch's "
           f"weights_only allowlist ({_listing(classes, 3)}): torch.load(weights_only=True) "
           f"refuses this file")
    if packages:
        many = len(packages) != 1
        msg += (f"; weights_only=False needs {'packages' if many else 'package'} "
                f"{_and([repr(p) for p in packages])} importable and runs "
                f"{'their' if many else 'its'} code")
    else:
        msg += (f"; load it with weights_only=False, or allow {'it' if one else 'them'} with "
                f"torch.serialization.add_safe_globals")
    return _finding("needs-code", cfg, msg, 0, {"classes": classes}), 0


def _trusted(qualnames: list[str], patterns: tuple[str, ...]) -> set[str]:
    """The ``qualnames`` a ``trusted-globals`` glob matches (``*`` crosses dots:
    ``mycompany.*`` covers its subpackages). Callers only offer ``needs-code`` globals:
    trust never applies to an ``unsafe`` one."""
    if not patterns:
        return set()
    from ckpt_guard.analyze.known_classes import compile_pattern

    compiled = [compile_pattern(p, cross_dots=True) for p in patterns]
    return {q for q in qualnames if any(c.match(q) for c in compiled)}


def _third_party(modules: list[str]) -> list[str]:
    """The distinct top-level packages of ``modules`` a user may have to install: not the
    standard library, not torch (which loading needs anyway)."""
    tops = dict.fromkeys(m.split(".")[0] for m in modules)
    return [t for t in tops if t and t != "torch" and t not in sys.stdlib_module_names
            and not t.startswith("_")]


def _optimizer_state(a: Analysis, rules: Rules) -> tuple[Finding | None, int]:
    cfg = rules.get("optimizer-state")
    subtrees = [s for s in a.subtrees if s.role == "optimizer"]
    nbytes = a.bytes_by_role.get("optimizer", 0)
    if cfg is None or not cfg.enabled or not (subtrees or nbytes):
        return None, 0
    descriptions = []
    for s in subtrees:
        summary = optimizer_summary(find(a.checkpoint.root, s.path)) or s.what
        if summary and summary not in descriptions:
            descriptions.append(summary)
    where = _at([s.path for s in subtrees])
    msg = (f"{format_bytes(nbytes)}{_share(nbytes, a)}{where}" if nbytes
           else f"state{where} (no tensor data)")
    if descriptions:
        msg += f": {'; '.join(descriptions)}"
    detail = {"paths": [s.path for s in subtrees]}
    return _finding("optimizer-state", cfg, msg, nbytes, detail), nbytes


def _training_state(a: Analysis, rules: Rules) -> tuple[Finding | None, int]:
    cfg = rules.get("training-state")
    subtrees = [s for s in a.subtrees if s.role in TRAINING_ROLES]
    nbytes = sum(a.bytes_by_role.get(r, 0) for r in TRAINING_ROLES)
    if cfg is None or not cfg.enabled or not (subtrees or nbytes):
        return None, 0
    parts = [f"{_ROLE_WORDS[s.role]}{_at([s.path])}" for s in subtrees]
    if not parts:
        parts = [_ROLE_WORDS[r] for r in TRAINING_ROLES if a.bytes_by_role.get(r)]
    size = (f"{format_bytes(nbytes)}{_share(nbytes, a, short=True)}" if nbytes
            else "no tensor data")
    msg = f"{', '.join(parts)} ({size})"
    detail = {"paths": [s.path for s in subtrees],
              "by_role": {r: a.bytes_by_role.get(r, 0) for r in TRAINING_ROLES}}
    return _finding("training-state", cfg, msg, nbytes, detail), nbytes


def _ema_dropped_role(a: Analysis, rules: Rules) -> str | None:
    """The role a fix would drop as the duplicate copy (``weights`` or ``ema``), if any."""
    return ema_dropped_role(a, rules)


def _ema_duplicate(a: Analysis, rules: Rules) -> tuple[Finding | None, int]:
    dropped = _ema_dropped_role(a, rules)
    if dropped is None:
        return None, 0
    cfg = rules["ema-duplicate"]
    kept = "ema" if dropped == "weights" else "weights"
    ema_b, w_b = a.bytes_by_role["ema"], a.bytes_by_role["weights"]
    paths = {r: [s.path for s in a.subtrees if s.role == r] for r in ("ema", "weights")}
    freed = a.bytes_by_role[dropped]
    msg = (f"EMA weights{_at(paths['ema'])} ({format_bytes(ema_b)}) duplicate the "
           f"weights{_at(paths['weights'])} ({format_bytes(w_b)}); a fix keeps the "
           f"{'EMA copy' if kept == 'ema' else 'training weights'} (keep: {kept}) and removes "
           f"{format_bytes(freed)}")
    detail = {"keep": kept, "ema_paths": paths["ema"], "weights_paths": paths["weights"],
              "ema_bytes": ema_b, "weights_bytes": w_b}
    return _finding("ema-duplicate", cfg, msg, freed, detail), freed


def _fp32_payload(a: Analysis, rules: Rules) -> tuple[Finding | None, int]:
    cfg = rules.get("fp32-payload")
    payload = fp32_payload(a, rules)
    if cfg is None or payload is None or not payload.over_limit:
        return None, 0
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
    return _finding("fp32-payload", cfg, msg, saved, detail), saved


def _file_size(size: int, rules: Rules, what: str) -> Finding | None:
    cfg = rules.get("file-size")
    if cfg is None or not cfg.enabled or cfg.max_bytes is None or size <= cfg.max_bytes:
        return None
    msg = f"{what}{format_bytes(size)}, over max-bytes {format_limit(cfg.max_bytes)}"
    return _finding("file-size", cfg, msg, size, {"size_bytes": size,
                                                   "max_bytes": cfg.max_bytes})


# --- LFS pointers and directories -----------------------------------------------------------

def _lfs_pointer(a: Analysis, rules: Rules, path: str) -> list[Finding]:
    meta = a.checkpoint.metadata
    pointed = meta.get("size")
    pointed = pointed if isinstance(pointed, int) and not isinstance(pointed, bool) else None
    oid = str(meta.get("oid", ""))
    findings = []
    cfg = rules.get("lfs-pointer")
    if cfg is not None and cfg.enabled:
        what = f"a {format_bytes(pointed)} object" if pointed is not None else "an object"
        short = f" ({oid[:19]}…)" if len(oid) > 19 else (f" ({oid})" if oid else "")
        target = f' --include="{path}"' if path else ""
        msg = (f"Git LFS pointer to {what}{short}, not the weights themselves: fetch LFS objects "
               f"to check it (`git lfs pull{target}`, or `lfs: true` on actions/checkout)")
        findings.append(_finding("lfs-pointer", cfg, msg, pointed or 0,
                                 {"oid": oid, "size": pointed}))
    if pointed is not None:
        size = _file_size(pointed, rules, "the LFS object is ")
        if size is not None:
            findings.append(size)
    return findings


def _directory(a: Analysis, rules: Rules, path: str) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    removable = 0
    training: dict[str, list[tuple[str, int | None, str]]] = {}
    for member, child, hint in a.children:
        rule = _HINT_RULE.get(hint)
        if not isinstance(child, Analysis):
            # Whatever its name says: a member that cannot be read fails, and what it
            # referenced before failing is judged (the Trainer torch.loads training files).
            findings.extend(evaluate_failure(child, rules, member=member))
        if rule is not None:
            size = (child.checkpoint.size_bytes if isinstance(child, Analysis)
                    else _stat_size(a.checkpoint.path, member))
            training.setdefault(rule, []).append((member, size, hint))
            if isinstance(child, Analysis):  # training files are pickles too: still unsafe?
                unsafe, _ = _unsafe_pickle(child, rules)
                if unsafe is not None:
                    findings.append(_in_member(unsafe, member))
            continue
        if not isinstance(child, Analysis):
            continue
        child_findings, child_removable = evaluate(child, rules, path=f"{path}/{member}")
        findings.extend(_in_member(f, member) for f in child_findings)
        removable += child_removable
    for rule in ("optimizer-state", "training-state"):
        cfg = rules.get(rule)
        files = training.get(rule)
        if cfg is None or not cfg.enabled or not files:
            continue
        nbytes = sum(s or 0 for _, s, _ in files)
        listed = [f"{m} ({format_bytes(s) if s is not None else 'size unknown'})"
                  for m, s, _ in files]
        msg = f"training file{'s' if len(files) != 1 else ''} {_listing(listed)}"
        can_fix = cfg.remove_training_files
        if cfg.fixes and not can_fix:
            msg += " (set remove-training-files: true to let `ckpt-guard fix` delete them)"
        detail = {"files": [{"path": m, "bytes": s, "kind": h} for m, s, h in files]}
        findings.append(_finding(rule, cfg, msg, nbytes, detail, can_fix=can_fix))
        removable += nbytes
    return _by_severity(findings), removable


def _stat_size(directory: str, member: str) -> int | None:
    try:
        return os.stat(os.path.join(directory, member)).st_size
    except OSError:
        return None


def _in_member(f: Finding, member: str) -> Finding:
    return Finding(rule=f.rule, action=f.action, message=f"{member}: {f.message}",
                   bytes=f.bytes, fixable=f.fixable, detail={**f.detail, "member": member})


# --- wording ---------------------------------------------------------------------------------

def _finding(rule: str, cfg: RuleConfig, message: str, nbytes: int, detail: dict,
             *, can_fix: bool = True) -> Finding:
    fixable = cfg.fixes and can_fix and rule in FIXABLE_RULES
    return Finding(rule=rule, action=cfg.action, message=message, bytes=nbytes,
                   fixable=fixable, detail=detail)


_SEVERITY = {"fail": 0, "fix": 0, "warn": 1}


def _by_severity(findings: list[Finding]) -> list[Finding]:
    """Failing findings first (stable: rule order within each group)."""
    return sorted(findings, key=lambda f: _SEVERITY.get(f.action, 2))


def _share(nbytes: int, a: Analysis, *, short: bool = False) -> str:
    if not nbytes or a.tensor_bytes_total <= 0:
        return ""
    pct = format_percent(nbytes, a.tensor_bytes_total)
    return f", {pct} of tensor bytes" if short else f" ({pct} of tensor bytes)"


def _at(paths: list[str]) -> str:
    if not paths:
        return ""
    shown = ["the top level" if p == "" else f"'{p}'" for p in paths[:_MAX_LISTED]]
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return " at " + ", ".join(shown) + more


def _and(items: list[str]) -> str:
    if len(items) > _MAX_LISTED:
        return _listing(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _listing(items: list[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", +{len(items) - limit} more"
    return shown


def _one_line(err: BaseException) -> str:
    if isinstance(err, UnreadableError):
        text = str(err)
    elif isinstance(err, OSError):
        text = f"cannot read: {err.strerror or err}"
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:299] + "…"
