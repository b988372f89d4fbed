"""The suite's defence study on an MNIST model, each defence's epoch selected on a validation slice
carved from the training data (never on the reported test images).

    .venv/bin/python bench/defence_selection.py MODEL_DIR [--train]

``--train`` first trains MODEL_DIR with ``train_mnist(mnist_file=../shared/datasets/mnist-10k.npz,
epochs=6, seed=0)``. Reports clean / FGSM / PGD-10 accuracy (eps 0.3) on 200 seeded test images
for the given model, FGSM-RS and Gaussian augmentation (2 epochs, up to 8,000 training images).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--train", action="store_true", help="train MODEL_DIR on the shared MNIST sample first")
    args = parser.parse_args()

    from pcapvision.classify import load_model, train_mnist
    from pcapvision.robustness.studies import defence_study
    from pcapvision.robustness.suite import QUICK, load_eval_data

    if args.train:
        train_mnist(args.model_dir, mnist_file="../shared/datasets/mnist-10k.npz", epochs=6, seed=0, allow_download=False)
    model, meta = load_model(args.model_dir)
    ev = load_eval_data(args.model_dir, meta, "mnist")
    idx = np.sort(np.random.default_rng(0).permutation(len(ev.y))[:200])
    cfg = replace(QUICK, defences=("fgsm_rs", "gaussian"), defence_epochs=2, defence_train_n=8000)
    started = time.perf_counter()
    out = defence_study(model, ev, ev.x[idx], ev.y[idx], cfg, None, seed=0)
    print(json.dumps({k: out[k] for k in ("eps", "table", "selection", "n_reported")}, indent=1))
    print("per-epoch checks on the validation slice:", [run["history"] for run in out["training"]])
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
