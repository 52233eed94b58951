"""The typed plan of a fix: each rule's :class:`RulePlan` (tree changes, casts), assembled into
one :class:`FilePlan` per file (:mod:`ckpt_guard.policy.planning`) that check reads for
"fixable", the dry run projects and ``rewrite`` carries out — never parsed back from English.

A :class:`Change` is also the string it always was (``"optimizer → None"``,
``"ema → model"``, ``"callbacks removed"``), so logs and existing callers read it unchanged;
code that needs to know what happened reads ``kind``, ``path`` and ``to``, and
:func:`apply` carries it out on a tree from its ``keys`` (the tree path from the root).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ckpt_guard.analyze.tree_ops import MISSING, assign, put, remove, resolve
from ckpt_guard.read.tree import Storage
from ckpt_guard.vocab import StrEnum

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from ckpt_guard.policy.strips import RuleView


@dataclass(frozen=True)
class PlanContext:
    """What a rule's ``plan`` may consult and edit: every rule's config (read through
    :func:`view`), and ``tree``, the plan's copy of the file's tree with the earlier rules'
    changes already applied — a plan edits it only through ``Edits``/``apply``, which record
    each typed change."""

    rules: Mapping[str, Any]
    tree: Any

    def view(self, rule_id: str) -> RuleView:
        from ckpt_guard.policy.strips import rule_view  # (strips imports this module)

        return rule_view(self.rules, rule_id)


class ChangeKind(StrEnum):
    TO_NONE = "to-none"    # a key's value set to None (the framework's own strip does so)
    REMOVED = "removed"    # a key deleted
    MOVED = "moved"        # ``to`` now holds the value of ``path`` (EMA becomes the weights)
    SET = "set"            # ``path`` set to a new value, described by ``to`` (``-1``, ``a dict``)
    FILE_REMOVED = "file-removed"  # a checkpoint directory's member file deleted (no tree edit)
    OTHER = "other"        # anything else, described by ``path``


def _text(kind: ChangeKind, path: str, to: str, role: str) -> str:
    label = f"{path} ({role})" if role else path
    if kind is ChangeKind.TO_NONE:
        return f"{label} → None"
    if kind in (ChangeKind.REMOVED, ChangeKind.FILE_REMOVED):
        return f"{label} removed"
    if kind in (ChangeKind.MOVED, ChangeKind.SET):
        return f"{label} → {to}"
    return label


_UNSET: Any = MISSING


class Change(str):
    """One change to the tree: ``kind``, the key or dotted ``path`` it applies to, ``to``
    (MOVED: the destination key; SET: the new value in words) and, for generic strips by
    role, the ``role`` of what was dropped.

    What :func:`apply` needs: ``keys``, the tree path of what changes (``()``: not a tree
    edit, e.g. a directory's file removal); ``value`` (SET); ``dest``, the tree path a MOVED
    value goes to; ``edits``, the changes an OTHER change stands for (one report line for
    many edits: mmengine's raw EMA weights copied into ``state_dict``)."""

    kind: ChangeKind
    path: str
    to: str
    role: str
    keys: tuple
    value: Any
    dest: tuple
    edits: tuple[Change, ...]

    def __new__(cls, kind: ChangeKind, path: str, to: str = "", role: str = "",
                keys: tuple = (), value: Any = _UNSET, dest: tuple = (),
                edits: tuple[Change, ...] = ()) -> Change:
        obj = super().__new__(cls, _text(kind, path, to, role))
        obj.kind, obj.path, obj.to, obj.role = kind, path, to, role
        obj.keys, obj.value, obj.dest, obj.edits = tuple(keys), value, tuple(dest), tuple(edits)
        return obj

    def __getnewargs__(self) -> tuple[Any, ...]:  # type: ignore[override]
        return (self.kind, self.path, self.to, self.role, self.keys, self.value, self.dest,
                self.edits)

    @property
    def label(self) -> str:
        """What the change applies to, as reports list it (``optimizer``,
        ``state.opt (optimizer)``)."""
        return f"{self.path} ({self.role})" if self.role else self.path

    @classmethod
    def to_none(cls, path: str, role: str = "", *, keys: tuple = ()) -> Change:
        return cls(ChangeKind.TO_NONE, path, role=role, keys=keys)

    @classmethod
    def removed(cls, path: str, *, keys: tuple = ()) -> Change:
        return cls(ChangeKind.REMOVED, path, keys=keys)

    @classmethod
    def file_removed(cls, member: str) -> Change:
        """A checkpoint directory's member file (its path relative to the directory) deleted:
        not a tree edit (``keys=()``)."""
        return cls(ChangeKind.FILE_REMOVED, member)

    @classmethod
    def moved(cls, path: str, to: str, *, keys: tuple = (), dest: tuple = ()) -> Change:
        return cls(ChangeKind.MOVED, path, to, keys=keys, dest=dest)

    @classmethod
    def set(cls, path: str, to: str, *, keys: tuple = (), value: Any = _UNSET) -> Change:
        return cls(ChangeKind.SET, path, to, keys=keys, value=value)

    @classmethod
    def other(cls, text: str, *, edits: tuple[Change, ...] = ()) -> Change:
        return cls(ChangeKind.OTHER, text, edits=edits)


def apply(root: Any, change: Change) -> bool:
    """Carry out ``change`` on ``root`` (a copy of the reader's tree) in place. False when
    it cannot (its path is gone, or the value is immutable: a tuple's item)."""
    if change.kind is ChangeKind.OTHER:
        return all([apply(root, e) for e in change.edits]) if change.edits else False
    if not change.keys:
        return False
    parent = resolve(root, change.keys[:-1])
    key = change.keys[-1]
    current = resolve(parent, (key,)) if parent is not MISSING else MISSING
    if current is MISSING:
        return False
    if change.kind is ChangeKind.TO_NONE:
        return assign(parent, key, current, None)
    if change.kind is ChangeKind.REMOVED:
        return remove(parent, key, current)
    if change.kind is ChangeKind.SET:
        return change.value is not _UNSET and assign(parent, key, current, change.value)
    dest_parent = resolve(root, change.dest[:-1])  # MOVED
    return bool(change.dest) and dest_parent is not MISSING and put(dest_parent,
                                                                    change.dest[-1], current)


@dataclass
class CastItem:
    """One storage a fix casts (every tensor path viewing it) to ``target``."""

    storage: Storage
    paths: list[str]
    target: str


@dataclass(frozen=True)
class FileRemoval:
    """One member file of a checkpoint directory a fix deletes: its path relative to the
    directory, the role its bytes count for and its size as the reader listed it (the
    rewrite refuses to delete a file whose size changed since)."""

    member: str
    role: str
    nbytes: int


@dataclass
class RulePlan:
    """What one rule's fix does to one file: tree ``changes`` (already applied to the plan's
    copy, in order) and ``cast`` items; ``why_not`` says why the plan is empty (a whole-file
    optimizer.pt, an immutable holder…) in the words check appends to the finding."""

    rule: str
    changes: list[Change] = field(default_factory=list)
    cast: list[CastItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kept_fp32: list[tuple[str, str]] = field(default_factory=list)
    value_kept: dict[str, str] = field(default_factory=dict)
    why_not: str = ""
    files: list[FileRemoval] = field(default_factory=list)  # a directory's files it deletes

    @property
    def empty(self) -> bool:
        return not (self.changes or self.cast)


@dataclass
class FilePlan:
    """One file's fix: the fixing rules' plans assembled on a copy of the tree (``root``).
    ``refused``: why nothing of it is carried out (a format fix never rewrites, an unsafe
    pickle, an output that would not be smaller); then no rule has a plan for the file."""

    root: Any
    removed: dict[str, int] = field(default_factory=dict)  # role → bytes no longer stored
    cast: list[CastItem] = field(default_factory=list)
    kept_fp32: list[tuple[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # typed; each reads "optimizer → None"
    notes: list[str] = field(default_factory=list)
    on_overflow: str = "keep"
    # Tensors kept FP32 because of their values (on-overflow: keep), path → why: the writer
    # records them in the output so check and later fixes honour it (keep_fp32.recorded_kept).
    value_kept: dict[str, str] = field(default_factory=dict)
    rules: dict[str, RulePlan] = field(default_factory=dict)  # rule id → its plan, in order
    refused: str = ""
    # A checkpoint directory's plan (policy.directories): the member files it deletes (each
    # with a FILE_REMOVED change); ``root`` is then None (no tree is rewritten).
    files: list[FileRemoval] = field(default_factory=list)

    @property
    def strips(self) -> bool:
        return bool(self.changes)

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.cast)

    def fixes(self, rule_id: str) -> bool:
        """Does ``rule_id`` have a plan for this file (its findings are then fixable)?"""
        rp = self.rules.get(rule_id)
        return not self.refused and rp is not None and not rp.empty

    def why_not(self, rule_id: str) -> str:
        """Why ``rule_id`` has no plan here (``""``: it has one, or it did not plan)."""
        if self.refused:
            return self.refused
        rp = self.rules.get(rule_id)
        return rp.why_not if rp is not None and rp.empty else ""


def summarize(changes: tuple[Change, ...] | list[Change], dry_run: bool) -> list[str]:
    """The changes as a few grouped lines, in the tense of what happened (or would)."""
    changes = [c if isinstance(c, Change) else Change.other(str(c)) for c in changes]
    to_none = [c.label for c in changes if c.kind is ChangeKind.TO_NONE]
    removed = [c.label for c in changes if c.kind is ChangeKind.REMOVED]
    files = [c.path for c in changes if c.kind is ChangeKind.FILE_REMOVED]
    lines = []
    for c in changes:
        if c.kind is ChangeKind.MOVED:
            lines.append(f"{c.to} {'would hold' if dry_run else 'now holds'} the weights "
                         f"from {c.path}")
        elif c.kind is ChangeKind.SET:
            lines.append(f"{c.path} {'would be set' if dry_run else 'set'} to {c.to}")
    if to_none:
        lines.append(f"{'would set' if dry_run else 'set'} to None: {', '.join(to_none)}")
    if removed:
        lines.append(f"{'would remove' if dry_run else 'removed'}: {', '.join(removed)}")
    if files:
        lines.append(f"{'would remove' if dry_run else 'removed'} files: {', '.join(files)}")
    return lines + [c.path for c in changes if c.kind is ChangeKind.OTHER]


def role_by_storage(analysis: Any) -> dict[str, str]:
    """Storage key → the role its bytes count for (the first in :class:`~ckpt_guard.vocab.Role`
    order among the tensors viewing it)."""
    from ckpt_guard.analyze.tree_ops import tensor_storages
    from ckpt_guard.vocab import role_rank

    out: dict[str, str] = {}
    for entry in analysis.tensors:
        for st in tensor_storages(entry.ref):
            cur = out.get(st.key)
            if cur is None or role_rank(entry.role) < role_rank(cur):
                out[st.key] = entry.role
    return out
