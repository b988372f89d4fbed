"""Attack throughput beside plain inference, in the same run, on the classify stage's CNN.

Prints images/s for: inference (model call), FGSM and PGD-10 with a bare tf.GradientTape loop
(compiled with tf.function), and FGSM / PGD-10 through ART (what the robustness suite uses), each
at a large and a training-size batch. The model is an untrained-then-briefly-trained
``build_cnn`` on MNIST (the weights do not change the cost of an attack).

    .venv/bin/python bench/robustness.py [--mnist-file F] [--n 4096] [--repeats 3]

With ``--reference MODEL_DIR`` (a classify MNIST model) it prints the reference robustness numbers
instead: FGSM at eps 0.1/0.2/0.3 on the model's whole test split, then a PGD-adversarially-trained
copy (eps 0.3, fine-tuned ``--at-epochs`` epochs with PGD-``--at-steps``) under FGSM and
PGD-40 (step 0.01) with ``--restarts`` random restarts on ``--n-pgd`` test images, all through ART.
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
    parser.add_argument("--reference", metavar="MODEL_DIR", default=None, help="print reference numbers for this model")
    parser.add_argument("--at-epochs", type=int, default=3, help="PGD-AT fine-tuning epochs (--reference)")
    parser.add_argument("--at-steps", type=int, default=10, help="PGD steps per training example (--reference)")
    parser.add_argument("--restarts", type=int, default=3, help="PGD-40 random restarts (--reference)")
    parser.add_argument("--n-pgd", type=int, default=500, help="test images attacked with PGD-40 (--reference)")
    args = parser.parse_args()
    if args.reference:
        reference(args)
        return

    import keras
    import tensorflow as tf

    from pcapvision.classify.model import build_cnn
    from pcapvision.robustness.attacks import AttackSpec, art_classifier, generate
    from pcapvision.robustness.defences import pgd_linf_tf

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

    # The bare PGD is the compiled one adversarial training uses (no ART in the loop).
    pgd = pgd_linf_tf(model, eps, steps, alpha)

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


def reference(args: argparse.Namespace) -> None:
    import keras

    from pcapvision.classify import load_model, reload_mnist
    from pcapvision.robustness.attacks import AttackSpec, predict_proba, run_attack
    from pcapvision.robustness.defences import adversarial_training
    from pcapvision.robustness.studies import selection_split

    keras.utils.set_random_seed(0)
    model, metadata = load_model(args.reference)
    info = metadata["dataset"]
    x_train, y_train, x_test, y_test = reload_mnist(info)
    print(f"data: {info['path']} ({info['split']}), {len(y_train)} train / {len(y_test)} test images")
    clean = float((predict_proba(model, x_test).argmax(1) == y_test).mean())
    print(f"standard model: clean accuracy {clean:.4f} on {len(y_test)}")
    for eps in (0.1, 0.2, 0.3):
        m = run_attack(AttackSpec("fgsm", eps=eps, batch_size=500), model, x_test, y_test).metrics
        print(f"standard model: FGSM eps {eps}: robust accuracy {m['robust_accuracy']:.4f} "
              f"(attack success among originally correct {m['attack_success_rate']:.4f})")
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    # the epoch is selected on a validation slice of the training data, never on the reported test images
    fit, check = selection_split(len(y_train), len(y_train), seed=0)
    result = adversarial_training(model, x_train[fit], y_train[fit], method="pgd", eps=0.3, epochs=args.at_epochs,
                                  steps=args.at_steps, step_size=0.03 if args.at_steps >= 20 else None,
                                  x_check=x_train[check], y_check=y_train[check], check_steps=10, seed=0)
    print(f"PGD-AT: {result.params['attack']}, {args.at_epochs} epochs on {len(fit)} images "
          f"(epoch selected on {len(check)} validation images carved from train), "
          f"{time.perf_counter() - start:.0f}s; per epoch: {result.history}")
    robust = result.model
    sub = rng.permutation(len(y_test))[: args.n_pgd]
    for name, m_ in (("standard", model), ("PGD-AT", robust)):
        p = predict_proba(m_, x_test)
        print(f"{name}: clean accuracy {(p.argmax(1) == y_test).mean():.4f}")
        fg = run_attack(AttackSpec("fgsm", eps=0.3, batch_size=500), m_, x_test, y_test, proba_clean=p).metrics
        print(f"{name}: FGSM eps 0.3 robust accuracy {fg['robust_accuracy']:.4f}")
        pg = run_attack(AttackSpec("pgd_linf", eps=0.3, steps=40, step_size=0.01, restarts=args.restarts, batch_size=500),
                        m_, x_test[sub], y_test[sub], proba_clean=p[sub]).metrics
        print(f"{name}: PGD-40 (step 0.01, {args.restarts} restarts) eps 0.3 robust accuracy "
              f"{pg['robust_accuracy']:.4f} on {len(sub)} images ({pg['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
