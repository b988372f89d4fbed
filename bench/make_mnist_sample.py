"""Derive the bundled real-MNIST sample (pcapvision/data/mnist-sample.npz) from mnist-10k.npz.

The sample is the shared 10,000-digit file unchanged (all of it: it is small), re-saved as a
compressed ``.npz`` with just ``x`` (uint8, 10000x28x28) and ``y`` (uint8, 10000), so that
``pcapvision train --dataset mnist`` works offline. Usage::

    .venv/bin/python bench/make_mnist_sample.py [../shared/datasets/mnist-10k.npz]
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "mnist-10k.npz"
TARGET = REPO / "pcapvision" / "data" / "mnist-sample.npz"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    with np.load(source, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
    if x.shape != (len(y), 28, 28) or x.dtype != np.uint8:
        raise SystemExit(f"{source}: expected uint8 images (N, 28, 28), got {x.dtype} {x.shape}")
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y.astype(np.uint8))
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(buf.getvalue())
    digest = hashlib.sha256(x.tobytes() + y.astype(np.uint8).tobytes()).hexdigest()
    print(f"{TARGET}: {len(y)} digits, class counts {np.bincount(y).tolist()}, x+y sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
