"""Training and inference throughput of the classify stage beside bare Keras on the same arrays.

Compares, on the same network (build_cnn) and the same arrays:
  * training: ``train_model`` (tf.data pipeline, early stopping, progress callback) vs a bare
    ``model.fit(x, y, batch_size)``; images/s over the epochs after the first (tracing excluded);
  * inference: ``predict.predict_proba`` vs a bare ``model.predict(x, batch_size)``.
``--variants`` re-runs the measurement in subprocesses with TF_ENABLE_ONEDNN_OPTS=0/1 and with
``jit_compile=True`` (both must be chosen before TensorFlow starts or at compile time).

    .venv/bin/python bench/train.py [--mnist-file F] [--n 8000] [--epochs 3] [--variants]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(args: argparse.Namespace) -> dict:
    import numpy as np

    import keras
    from pcapvision.classify import build_cnn, load_mnist, train_model
    from pcapvision.classify.predict import predict_proba

    x_train, y_train, x_test, y_test, info = load_mnist(args.mnist_file, seed=0, allow_download=False)
    x, y = x_train[: args.n], y_train[: args.n]
    x_val, y_val = x_test[:256], y_test[:256]

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # time to the end of the last training batch: validation is not training throughput
            self.times.append(self.last - self.start)

    def rate(timer: EpochTimer) -> float:
        # best steady epoch (the first one traces the graph): the CPU is shared, the minimum is the
        # least disturbed measurement
        steady = timer.times[1:] or timer.times
        return len(x) / min(steady)

    jit = args.jit_compile
    ours = EpochTimer()
    model, _h = train_model(x, y, x_val, y_val, epochs=args.epochs, batch_size=args.batch_size, seed=0, patience=args.epochs,
                            class_weight=None, n_classes=10, callbacks=[ours], jit_compile=jit if jit else "auto")
    keras.utils.set_random_seed(0)
    bare_model = build_cnn((28, 28, 1), 10)
    if jit:
        bare_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=True)
    bare = EpochTimer()
    bare_model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=[bare], verbose=0)

    xs = x_test[: args.n_infer] if len(x_test) >= args.n_infer else np.concatenate([x_test] * (args.n_infer // len(x_test) + 1))[: args.n_infer]
    predict_proba(model, xs[:512])  # warm-up (tracing)
    bare_model.predict(xs[:512], batch_size=512, verbose=0)
    ours_s, bare_s = [], []
    for _ in range(args.repeats):  # interleaved, best of N: the CPU is shared with other work
        t = time.perf_counter(); predict_proba(model, xs); ours_s.append(time.perf_counter() - t)
        t = time.perf_counter(); bare_model.predict(xs, batch_size=512, verbose=0); bare_s.append(time.perf_counter() - t)
    ours_inf, bare_inf = len(xs) / min(ours_s), len(xs) / min(bare_s)
    return {
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)"), "jit_compile": bool(jit),
        "n_train": len(x), "epochs": args.epochs, "batch_size": args.batch_size, "data": info["path"],
        "train_images_per_s": round(rate(ours)), "bare_fit_images_per_s": round(rate(bare)),
        "train_ratio": round(rate(ours) / rate(bare), 3),
        "infer_images_per_s": round(ours_inf), "bare_predict_images_per_s": round(bare_inf),
        "infer_ratio": round(ours_inf / bare_inf, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-file", default=str(REPO.parent / "shared" / "datasets" / "mnist-10k.npz"))
    parser.add_argument("--n", type=int, default=8000, help="training images")
    parser.add_argument("--n-infer", type=int, default=10000, help="inference images")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is excluded from the rate)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="inference repetitions (best is kept)")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--variants", action="store_true", help="run oneDNN off/on and XLA variants in subprocesses")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by --variants)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.variants:
        base = [sys.executable, __file__, "--json", "--mnist-file", args.mnist_file, "--n", str(args.n),
                "--n-infer", str(args.n_infer), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                "--repeats", str(args.repeats)]
        runs = [({"TF_ENABLE_ONEDNN_OPTS": "0"}, []), ({"TF_ENABLE_ONEDNN_OPTS": "1"}, []),
                ({"TF_ENABLE_ONEDNN_OPTS": "1"}, ["--jit-compile"])]
        for env, extra in runs:
            out = subprocess.run(base + extra, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
        return 0
    result = measure(args)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
