"""Analysis of a read checkpoint: roles, framework, accounting (see :mod:`.model`)."""

from ckpt_guard.analyze.analyzer import analyze

__all__ = ["analyze"]
