"""Synthetic detection data for the YOLO trainers: a few 64×64 images, one box each, in the
images/ + labels/ layout and data.yaml both ultralytics and yolov5 read."""

from __future__ import annotations

from pathlib import Path


def detection_dataset(root: Path, n: int = 4, size: int = 64) -> Path:
    """Writes ``root``/data/{images,labels}/{train,val} and returns the data.yaml path."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        images, labels = root / "data/images" / split, root / "data/labels" / split
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for i in range(n):
            img = np.full((size, size, 3), 114, np.uint8)
            x0, y0 = (int(v) for v in rng.integers(4, size // 2 - 4, 2))
            w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
            img[y0:y0 + h, x0:x0 + w] = (200, 40, 40)
            cv2.imwrite(str(images / f"{i}.png"), img)
            (labels / f"{i}.txt").write_text(
                f"0 {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} "
                f"{w / size:.6f} {h / size:.6f}\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root / 'data'}\ntrain: images/train\nval: images/val\n"
                    "names:\n  0: box\n")
    return yaml


def sample_image(size: int = 64):
    """A fixed image (numpy HWC, BGR as cv2 reads) with a box to detect."""
    import numpy as np

    img = np.full((size, size, 3), 114, np.uint8)
    img[10:40, 12:44] = (200, 40, 40)
    return img
