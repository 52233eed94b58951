"""Sharded sets: every shard analyzed on its own, totals by role and dtype summed over the
set, tensors named by their state-dict keys (a shard's name is where a tensor lives, not part
of its name: keep-fp32 globs and reports see ``model.layers.0.weight``)."""

from __future__ import annotations

from dataclasses import replace

from ckpt_guard.analyze.directory import analyze_directory
from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read.checkpoint import Checkpoint


def analyze_sharded(ckpt: Checkpoint) -> Analysis:
    from ckpt_guard.analyze.dcp import hf_dcp_roles, is_hf_dcp

    result = analyze_directory(ckpt)
    result.framework = "generic"
    prefixes = tuple(f"{rel}:" for rel, _c, _h in ckpt.children)
    result.tensors = [replace(t, path=_unprefixed(t.path, prefixes)) for t in result.tensors]
    if is_hf_dcp(ckpt):  # torch.distributed.checkpoint's HuggingFaceStorageWriter
        result.framework = "dcp"
        hf_dcp_roles(result)
    return result


def _unprefixed(path: str, prefixes: tuple[str, ...]) -> str:
    for p in prefixes:
        if path.startswith(p):
            return path[len(p):]
    return path
