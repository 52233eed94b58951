"""Typed changes a fix plan makes to a checkpoint's tree, carried out by ``rewrite`` and
rendered by the reports — never parsed back from English.

A :class:`Change` is also the string it always was (``"optimizer → None"``,
``"ema → model"``, ``"callbacks removed"``), so logs and existing callers read it unchanged;
code that needs to know what happened reads ``kind``, ``path`` and ``to``.
"""

from __future__ import annotations

from ckpt_guard.vocab import StrEnum


class ChangeKind(StrEnum):
    TO_NONE = "to-none"    # a key's value set to None (the framework's own strip does so)
    REMOVED = "removed"    # a key deleted
    MOVED = "moved"        # ``to`` now holds the value of ``path`` (EMA becomes the weights)
    SET = "set"            # ``path`` set to a new value, described by ``to`` (``-1``, ``a dict``)
    OTHER = "other"        # anything else, described by ``path``


def _text(kind: ChangeKind, path: str, to: str, role: str) -> str:
    label = f"{path} ({role})" if role else path
    if kind is ChangeKind.TO_NONE:
        return f"{label} → None"
    if kind is ChangeKind.REMOVED:
        return f"{label} removed"
    if kind in (ChangeKind.MOVED, ChangeKind.SET):
        return f"{label} → {to}"
    return label


class Change(str):
    """One change to the tree: ``kind``, the key or dotted ``path`` it applies to, ``to``
    (MOVED: the destination key; SET: the new value in words) and, for generic strips by
    role, the ``role`` of what was dropped."""

    kind: ChangeKind
    path: str
    to: str
    role: str

    def __new__(cls, kind: ChangeKind, path: str, to: str = "", role: str = "") -> Change:
        obj = super().__new__(cls, _text(kind, path, to, role))
        obj.kind, obj.path, obj.to, obj.role = kind, path, to, role
        return obj

    def __getnewargs__(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.kind, self.path, self.to, self.role)

    @property
    def label(self) -> str:
        """What the change applies to, as reports list it (``optimizer``,
        ``state.opt (optimizer)``)."""
        return f"{self.path} ({self.role})" if self.role else self.path

    @classmethod
    def to_none(cls, path: str, role: str = "") -> Change:
        return cls(ChangeKind.TO_NONE, path, role=role)

    @classmethod
    def removed(cls, path: str) -> Change:
        return cls(ChangeKind.REMOVED, path)

    @classmethod
    def moved(cls, path: str, to: str) -> Change:
        return cls(ChangeKind.MOVED, path, to)

    @classmethod
    def set(cls, path: str, to: str) -> Change:
        return cls(ChangeKind.SET, path, to)

    @classmethod
    def other(cls, text: str) -> Change:
        return cls(ChangeKind.OTHER, text)


def summarize(changes: tuple[Change, ...] | list[Change], dry_run: bool) -> list[str]:
    """The changes as a few grouped lines, in the tense of what happened (or would)."""
    changes = [c if isinstance(c, Change) else Change.other(str(c)) for c in changes]
    to_none = [c.label for c in changes if c.kind is ChangeKind.TO_NONE]
    removed = [c.label for c in changes if c.kind is ChangeKind.REMOVED]
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
    return lines + [c.path for c in changes if c.kind is ChangeKind.OTHER]
