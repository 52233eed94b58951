"""Checkpoint directories (Hugging Face Trainer, DeepSpeed): each member file analyzed on its
own; the directory's totals are the members' sums, and a member's name decides the role of all
its bytes when it names one (``optimizer.pt`` is optimizer state however it is laid out)."""

from __future__ import annotations

from ckpt_guard.analyze import accounting
from ckpt_guard.analyze.analyzer import analyze_file, verdicts
from ckpt_guard.analyze.frameworks import detect_framework
from ckpt_guard.analyze.model import Analysis, RoleSubtree, TensorEntry, TopKey
from ckpt_guard.analyze.roles import RANK
from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError
from ckpt_guard.vocab import Role

# A directory member's name hint → the role its bytes count for (None: look inside).
HINT_ROLES: dict[str, Role | None] = {
    Role.OPTIMIZER: Role.OPTIMIZER, Role.SCHEDULER: Role.SCHEDULER, Role.SCALER: Role.SCALER,
    Role.RNG: Role.RNG, "training": Role.OTHER, Role.WEIGHTS: None, "": None}


def analyze_directory(ckpt: Checkpoint) -> Analysis:
    """A checkpoint directory: each member analyzed on its own, totals summed."""
    result = Analysis(checkpoint=ckpt, framework=detect_framework(ckpt),
                      bytes_by_role=accounting.by_role({}))
    seen_globals: set[str] = set()
    for rel, child, hint in ckpt.children:
        if isinstance(child, UnreadableError):
            result.children.append((rel, child, hint))
            result.top_level.append(TopKey(key=rel, kind="unreadable", bytes=0,
                                           role=HINT_ROLES.get(hint) or Role.OTHER))
            # What it referenced before failing is judged all the same.
            for v in verdicts(getattr(child, "partial_globals", None) or []):
                if v.use.qualname not in seen_globals:
                    seen_globals.add(v.use.qualname)
                    result.globals.append(v)
            continue
        sub = analyze_file(child, HINT_ROLES.get(hint))
        result.children.append((rel, sub, hint))
        accounting.merge_counts(result.bytes_by_role, sub.bytes_by_role)
        accounting.merge_counts(result.bytes_by_dtype, sub.bytes_by_dtype)
        result.tensor_bytes_total += sub.tensor_bytes_total
        result.tensors.extend(TensorEntry(path=f"{rel}:{t.path}", role=t.role, ref=t.ref)
                              for t in sub.tensors)
        result.subtrees.extend(
            RoleSubtree(path=f"{rel}:{s.path}" if s.path else rel, role=s.role, bytes=s.bytes,
                        what=s.what) for s in sub.subtrees)
        nonzero = {r: b for r, b in sub.bytes_by_role.items() if b}
        role = (max(nonzero.items(), key=lambda kv: (kv[1], -RANK[kv[0]]))[0] if nonzero
                else HINT_ROLES.get(hint) or Role.OTHER)
        result.top_level.append(TopKey(key=rel, kind=child.format,
                                       bytes=sub.tensor_bytes_total, role=role))
        for v in sub.globals:
            if v.use.qualname not in seen_globals:
                seen_globals.add(v.use.qualname)
                result.globals.append(v)
    result.bytes_by_dtype = dict(sorted(result.bytes_by_dtype.items(),
                                        key=lambda kv: (-kv[1], kv[0])))
    return result
