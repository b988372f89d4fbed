"""Small data and one tiny trained model shared by the classify tests (CPU-only, seconds)."""

from __future__ import annotations

import numpy as np
import pytest


def toy_images(n: int = 240, seed: int = 0, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 28x28 images whose class is a bright 8x8 square in a class-specific corner."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.uniform(0, 0.3, size=(n, 28, 28, 1)).astype(np.float32)
    corners = [(2, 2), (18, 18), (2, 18), (18, 2)]
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, r:r + 8, c:c + 8, 0] = rng.uniform(0.7, 1.0)
    rng.shuffle(idx := np.arange(n))
    return x[idx], y[idx].astype(np.int64)


@pytest.fixture(scope="session")
def mnist_small(tmp_path_factory) -> "Path":  # noqa: F821
    """An x/y .npz of 600 random digits from the bundled real-MNIST sample."""
    from pcapvision.classify.datasets import bundled_mnist_path

    with np.load(bundled_mnist_path()) as npz:
        x, y = npz["x"], npz["y"]
    pick = np.random.default_rng(0).choice(len(y), size=600, replace=False)
    path = tmp_path_factory.mktemp("mnist") / "mnist-600.npz"
    np.savez(path, x=x[pick], y=y[pick])
    return path


@pytest.fixture(scope="session")
def mnist_model_dir(tmp_path_factory, mnist_small):
    """A model directory trained for 2 epochs on mnist_small (shared: training is the slow part)."""
    from pcapvision.classify.pipeline import train_mnist

    out = tmp_path_factory.mktemp("models") / "mnist-cnn"
    record = train_mnist(out, mnist_file=mnist_small, epochs=2, batch_size=64, seed=0)
    return out, record


def write_images_table(path, x_u8, labels, families, groups, *, representation_params=None, payload_length=None,
                       mask_tls_sni=False, flow_ids=None):
    """An images table following docs/contracts.md, as pcapvision.imaging writes it."""
    import hashlib

    import pyarrow as pa

    from pcapvision.imaging import IMAGES_SCHEMA, get_representation
    from pcapvision.io import make_metadata, write_parquet_atomic

    rep = get_representation("payload", representation_params)
    n = len(labels)
    flat = [img.astype(np.uint8).tobytes() for img in x_u8]
    table = pa.table({
        "flow_id": list(flow_ids) if flow_ids is not None else [f"{i:016x}" for i in range(n)],
        "label": list(labels), "family": list(families), "split_group": list(groups),
        "image_sha256": [hashlib.sha256(b).hexdigest() for b in flat],
        "payload_length": list(payload_length if payload_length is not None else np.full(n, 100)),
        "source_file": [f"{g}.pcap" for g in groups], "image": flat,
    }, schema=IMAGES_SCHEMA)
    meta = make_metadata(
        "image", {"representation": rep.name, "representation_params": rep.params, "dedup": True,
                  "mask_tls_sni": mask_tls_sni, "group_by": "capture"},
        representation=rep.name, representation_params=rep.params,
        input={"path": None, "sha256": None, "flows_params": {"max_bytes": 4096, "max_packets": 64}},
    )
    write_parquet_atomic(table, path, meta)
    return path


@pytest.fixture(scope="session")
def images_table(tmp_path_factory):
    """A 3-family, 2-label images table: 24 captures (split groups) of 10 flows each."""
    x, y = toy_images(240, seed=5, n_classes=3)
    x_u8 = np.clip(np.rint(x[..., 0] * 255), 0, 255).astype(np.uint8)
    families = np.array(["web-browsing", "c2-beacon", "exfil"])[y]
    labels = np.where(y == 0, "normal", "malicious")
    # each capture holds one family, as real captures tend to
    order = np.argsort(y, kind="stable")
    groups = np.empty(len(y), dtype=object)
    groups[order] = [f"cap{i // 10:02d}" for i in range(len(y))]
    payload = np.where(y == 0, 300, 120) + np.arange(len(y)) % 7
    path = tmp_path_factory.mktemp("images") / "images.parquet"
    return write_images_table(path, x_u8, labels, families, groups, payload_length=payload)
