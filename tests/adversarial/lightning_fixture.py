"""A Lightning/pyannote-style checkpoint as real training writes it (issue 8: it must be
``needs-code`` at most, never ``unsafe``).

``make()`` builds it with real torch and real omegaconf; Lightning and pyannote are not
installed here, so their classes come from stub modules registered under the real module
names (the pickle only records module and name, so the bytes are what the real packages
write: ``GLOBAL pyannote.audio.core.task Problem`` + ``REDUCE``). What it carries:
``torch.__version__`` (a ``torch.torch_version.TorchVersion``), omegaconf hyper-parameters
(``DictConfig``/``ContainerMetadata``/``AnyNode``/``typing.Any``/``defaultdict(dict)``), a
dataclass and two enum classes, Adam state, an LR scheduler and ModelCheckpoint state.

The committed ``data/lightning-omegaconf.ckpt`` is its output (``python -m
tests.adversarial.lightning_fixture`` rewrites it); a test compares its globals with a fresh
build when omegaconf is importable.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import sys
import types
from pathlib import Path

DATA = Path(__file__).parent / "data" / "lightning-omegaconf.ckpt"


class Problem(enum.Enum):
    BINARY_CLASSIFICATION = 0
    MONO_LABEL_CLASSIFICATION = 1


class Resolution(enum.Enum):
    FRAME = 1
    CHUNK = 2


@dataclasses.dataclass
class Specifications:
    problem: Problem
    resolution: Resolution
    duration: float
    classes: list


def register_stubs() -> None:
    """Make the stub classes importable under pyannote's module name (for pickling, and for
    torch.load in a subprocess)."""
    names = ("pyannote", "pyannote.audio", "pyannote.audio.core", "pyannote.audio.core.task")
    for name in names:
        sys.modules.setdefault(name, types.ModuleType(name))
    task = sys.modules["pyannote.audio.core.task"]
    for cls in (Problem, Resolution, Specifications):
        cls.__module__ = task.__name__
        setattr(task, cls.__name__, cls)


def make() -> bytes:
    import torch
    from omegaconf import OmegaConf

    register_stubs()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    hparams = OmegaConf.create({"lr": 1e-3, "model": {"hidden": 3, "act": "relu"},
                                "layers": [4, 3, 2], "name": None})
    ckpt = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {
            "total": {"ready": 4, "started": 4, "processed": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(0.25),
            "best_model_path": "checkpoints/epoch=3.ckpt", "current_score": torch.tensor(0.25),
            "dirpath": "checkpoints", "best_k_models": {}, "kth_best_model_path": "",
            "kth_value": torch.tensor(float("inf")), "last_model_path": ""}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "hparams",
        "hyper_parameters": hparams,
        "pyannote.audio": {
            "versions": {"torch": torch.__version__, "pyannote.audio": "3.1.1"},
            "architecture": {"module": "pyannote.audio.models.segmentation",
                             "class": "PyanNet"},
            "specifications": Specifications(Problem.MONO_LABEL_CLASSIFICATION,
                                             Resolution.FRAME, 5.0, ["speaker#1"]),
        },
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


if __name__ == "__main__":
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_bytes(make())
    print(DATA, DATA.stat().st_size)
