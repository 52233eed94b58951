"""The GitHub Action surface: ``ckpt-guard action`` (see :mod:`ckpt_guard.action.main`)."""

from ckpt_guard.action.main import main

__all__ = ["main"]
