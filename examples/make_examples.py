"""Regenerate the example checkpoints in examples/ (real torch, deterministic).

    python examples/make_examples.py            # writes examples/training and examples/release
    python examples/make_examples.py OUT_DIR    # writes elsewhere (the tests compare bytes)

Needs torch and safetensors (the test extras), nothing else: the ultralytics classes the
training file pickles come from stand-ins written to a temporary directory and deleted again,
so reading the result never needs them — which is the point of ckpt-guard.
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
from tests.fixtures.packages import packages_importable, write_packages  # noqa: E402
from tests.fixtures.spec import Ctx  # noqa: E402
from tests.fixtures.yolo import ultralytics_checkpoint  # noqa: E402

NORM_HINTS = ("bn", "norm", "running_", "num_batches_tracked")


def _seed(n: int) -> None:
    torch.manual_seed(n)
    np.random.seed(n)
    random.seed(n)


def release_state_dict() -> dict[str, torch.Tensor]:
    """A clean release: FP16 weights, BatchNorm kept FP32 (blind half() hurts BN)."""
    _seed(1)
    sd = TinyResNet(width=16).state_dict()
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
            torch.save(ckpt, training / "yolo-last.pt")
    written.append(training / "yolo-last.pt")

    _seed(3)
    torch.save(lightning_checkpoint(8, epoch=3), training / "lightning-epoch3.ckpt")
    written.append(training / "lightning-epoch3.ckpt")

    sd = release_state_dict()
    torch.save(sd, release / "resnet-tiny.pt")
    written.append(release / "resnet-tiny.pt")

    _seed(2)
    tiny = {k: v.half().contiguous() if v.is_floating_point() else v
            for k, v in TinyResNet(width=16).state_dict().items()}
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
