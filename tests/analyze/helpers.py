"""Shared bits of the analysis tests: small real models, the torch byte oracle, temp packages."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckpt_guard.analyze import analyze
from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read import read_path


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def trained(opt_cls=torch.optim.Adam, width: int = 8, **opt_kw) -> tuple[nn.Module, Any]:
    model = Net(width)
    opt = opt_cls(model.parameters(), lr=0.01, **opt_kw)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    return model, opt


def _tensors(obj: Any, out: list[torch.Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, nn.Module):
        out.extend(obj.state_dict(keep_vars=True).values())
        for v in vars(obj).values():
            if isinstance(v, torch.Tensor):
                out.append(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensors(v, out, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensors(v, out, seen)


def storage_bytes(*objs: Any) -> int:
    """torch's answer: unique untyped storages' nbytes of every tensor in ``objs``."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    for o in objs:
        _tensors(o, found, seen)
    storages: dict[tuple[int, int], int] = {}
    for t in found:
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.nbytes())] = s.nbytes()
    return sum(storages.values())


def save_and_analyze(obj: Any, path: Path, **save_kw: Any) -> Analysis:
    torch.save(obj, str(path), **save_kw)
    return analyze(read_path(str(path)))


def subtree_roles(a: Analysis) -> dict[str, str]:
    return {s.path: s.role for s in a.subtrees}


@contextmanager
def temp_package(root: Path, files: dict[str, str]) -> Iterator[None]:
    """Make modules importable from ``root`` while building; remove them afterwards so the
    reader cannot possibly rely on them."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    tops = {rel.split("/", 1)[0].removesuffix(".py") for rel in files}
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".", 1)[0] in tops:
                del sys.modules[name]
