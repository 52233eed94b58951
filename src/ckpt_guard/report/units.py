"""Byte sizes for humans: moved to :mod:`ckpt_guard.units` (below the policy layer, which words
its messages with them); re-exported here for the report layer's existing imports."""

from ckpt_guard.units import *  # noqa: F403
from ckpt_guard.units import __all__  # noqa: F401
