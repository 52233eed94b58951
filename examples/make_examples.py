"""Regenerate the example checkpoints in examples/ (real torch, deterministic on any CPU).

    python examples/make_examples.py            # writes examples/training and examples/release
    python examples/make_examples.py OUT_DIR    # writes elsewhere (the tests compare bytes)

Needs torch and safetensors (the test extras), nothing else: the ultralytics classes the
training file pickles come from stand-ins written to a temporary directory and deleted again,
so reading the result never needs them — which is the point of ckpt-guard.

The training fixtures take a few optimizer steps (so the optimizer state has its real
structure), and float math differs in the last bits from CPU to CPU (vector widths, FMA).
So every floating tensor's values are then replaced by small multiples of 1/256 drawn from a
seeded integer generator: exact in FP32 and FP16, the same bytes on every machine.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, for tests.fixtures

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from tests.fixtures.frameworks import lightning_checkpoint  # noqa: E402
from tests.fixtures.modules import TinyResNet  # noqa: E402
from tests.fixtures.oracle import walk_tensors  # noqa: E402
from tests.fixtures.packages import packages_importable, write_packages  # noqa: E402
from tests.fixtures.spec import Ctx  # noqa: E402
from tests.fixtures.yolo import ultralytics_checkpoint  # noqa: E402

NORM_HINTS = ("bn", "norm", "running_", "num_batches_tracked")


def _seed(n: int) -> None:
    torch.manual_seed(n)
    np.random.seed(n)
    random.seed(n)


# Tensors that must stay positive (variances).
POSITIVE = ("running_var", "exp_avg_sq", "max_exp_avg_sq")


def pin_values(obj: object, seed: int) -> None:
    """Overwrite every floating tensor of ``obj`` (dimension ≥ 1; 0-d ones are counters
    and scores set by the fixtures) with seeded multiples of 1/256 in [-0.5, 0.5): exact in
    FP16 and FP32, independent of the CPU that made the originals."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for path, t in walk_tensors(obj):
            if not t.is_floating_point() or t.dim() == 0:
                continue
            k = rng.integers(-128, 128, size=t.numel())
            if path.rsplit(".", 1)[-1] in POSITIVE:
                k = np.abs(k) + 1
            t.copy_(torch.from_numpy((k / 256).astype(np.float32)).reshape(t.shape))


def release_state_dict() -> dict[str, torch.Tensor]:
    """A clean release: FP16 weights, BatchNorm kept FP32 (blind half() hurts BN)."""
    _seed(1)
    sd = TinyResNet(width=16).state_dict()
    pin_values(sd, 1)
    return {k: (v if any(h in k for h in NORM_HINTS) or not v.is_floating_point()
                else v.half()).contiguous() for k, v in sd.items()}


def write_examples(out: Path) -> list[Path]:
    training, release = out / "training", out / "release"
    training.mkdir(parents=True, exist_ok=True)
    release.mkdir(parents=True, exist_ok=True)
    written = []

    with tempfile.TemporaryDirectory() as tmp:
        pkg_root = write_packages(Path(tmp))
        with packages_importable(("ultralytics",), pkg_root):
            _seed(0)
            ckpt = ultralytics_checkpoint(Ctx(pkg_root=pkg_root, width=8), stripped=False)
            pin_values(ckpt, 0)
            torch.save(ckpt, training / "yolo-last.pt")
    written.append(training / "yolo-last.pt")

    _seed(3)
    ckpt = lightning_checkpoint(8, epoch=3)
    pin_values(ckpt, 3)
    torch.save(ckpt, training / "lightning-epoch3.ckpt")
    written.append(training / "lightning-epoch3.ckpt")

    sd = release_state_dict()
    torch.save(sd, release / "resnet-tiny.pt")
    written.append(release / "resnet-tiny.pt")

    _seed(2)
    sd = TinyResNet(width=16).state_dict()
    pin_values(sd, 2)
    tiny = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in sd.items()}
    # One metadata key: safetensors orders several keys by a randomly seeded hash map.
    save_file(tiny, str(release / "tiny-fp16.safetensors"), metadata={"format": "pt"})
    written.append(release / "tiny-fp16.safetensors")
    return written


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else HERE
    total = 0
    for path in write_examples(out):
        size = path.stat().st_size
        total += size
        print(f"{size:>8,d}  {path.relative_to(out)}")
    print(f"{total:>8,d}  total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
