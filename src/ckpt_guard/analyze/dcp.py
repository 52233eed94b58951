"""torch.distributed.checkpoint directories: analyzed as the state dict torch's consolidation
(``dcp_to_torch_save``) builds — model, optimizer (nested or flattened), schedulers and
other training state found by the same structural rules as any checkpoint — with every
global of ``.metadata`` and of the items' pickles judged, and items that could not be read
kept as the directory's failures."""

from __future__ import annotations

from ckpt_guard.analyze.analyzer import analyze_file
from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError


def analyze_dcp(ckpt: Checkpoint) -> Analysis:
    result = analyze_file(ckpt)
    result.children = [(rel, child, hint) for rel, child, hint in ckpt.children
                       if isinstance(child, UnreadableError)]
    return result
