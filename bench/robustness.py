"""Attack throughput beside plain inference, in the same run, on the classify stage's CNN.

Prints images/s for: inference (model call), FGSM and PGD-10 with a bare tf.GradientTape loop
(compiled with tf.function), and FGSM / PGD-10 through ART (what the robustness suite uses), each
at a large and a training-size batch. The model is an untrained-then-briefly-trained
``build_cnn`` on MNIST (the weights do not change the cost of an attack).

    .venv/bin/python bench/robustness.py [--mnist-file F] [--n 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up: tracing, graph building
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-file", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "mnist-10k.npz"))
    parser.add_argument("--n", type=int, default=4096, help="images per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from pcapvision.classify.model import build_cnn
    from pcapvision.robustness.attacks import AttackSpec, art_classifier, generate

    keras.utils.set_random_seed(0)
    with np.load(args.mnist_file) as data:
        x = (data["x"][: args.n] / 255.0).astype(np.float32)[..., None]
        y = data["y"][: args.n].astype(np.int64)
    model = build_cnn()
    model.fit(x, y, epochs=1, batch_size=256, verbose=0)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=False)
    eps, steps = 0.1, 10
    alpha = 2.5 * eps / steps

    @tf.function
    def infer(xb):
        return model(xb, training=False)

    @tf.function
    def fgsm(xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = loss_fn(yb, model(xb, training=False))
        return tf.clip_by_value(xb + eps * tf.sign(tape.gradient(loss, xb)), 0.0, 1.0)

    @tf.function
    def pgd(xb, yb):
        x_adv = tf.clip_by_value(xb + tf.random.uniform(tf.shape(xb), -eps, eps), 0.0, 1.0)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = loss_fn(yb, model(x_adv, training=False))
            x_adv = x_adv + alpha * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xb - eps, xb + eps), 0.0, 1.0)
        return x_adv

    def batched(fn, batch):
        def run():
            for i in range(0, len(x), batch):
                fn(tf.constant(x[i : i + batch]), tf.constant(y[i : i + batch])).numpy()
        return run

    classifier = art_classifier(model)
    n = len(x)
    print(f"CNN {model.count_params()} parameters, {n} MNIST images per call, eps={eps}, best of {args.repeats}")
    print(f"{'method':<34}{'batch':>7}{'images/s':>12}{'x inference':>13}")
    for batch in (1024, 128):
        rows = []
        infer_rate = _rate(lambda: [infer(tf.constant(x[i : i + batch])).numpy() for i in range(0, n, batch)], n, args.repeats)
        rows.append(("inference (tf.function)", infer_rate))
        rows.append(("FGSM bare GradientTape", _rate(batched(fgsm, batch), n, args.repeats)))
        rows.append(("PGD-10 bare GradientTape", _rate(batched(pgd, batch), n, args.repeats)))
        rows.append(("FGSM ART FastGradientMethod", _rate(
            lambda: generate(AttackSpec("fgsm", eps=eps, batch_size=batch), classifier, x, y), n, args.repeats)))
        rows.append(("PGD-10 ART ProjectedGradientDescent", _rate(
            lambda: generate(AttackSpec("pgd_linf", eps=eps, steps=steps, restarts=1, batch_size=batch), classifier, x, y),
            n, args.repeats)))
        for name, rate in rows:
            print(f"{name:<34}{batch:>7}{rate:>12.0f}{rate / infer_rate:>13.3f}")


if __name__ == "__main__":
    main()
