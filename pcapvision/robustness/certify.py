"""Randomized-smoothing certification (Cohen et al. 2019) through ART.

ART's ``TensorFlowV2RandomizedSmoothing`` votes over ``sample_size`` noisy copies to pick a
class, then estimates a lower confidence bound p_A on that class from ``n`` more copies and
certifies the L2 radius ``sigma * Phi^-1(p_A)`` (it abstains when p_A < 0.5). Certified accuracy
at radius r is the fraction of samples predicted correctly with a certified radius >= r.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcapvision.validation import check_number, check_positive_int

log = logging.getLogger(__name__)

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion k/n.

    Equals ``statsmodels``' ``proportion_confint(k, n, alpha=2*alpha, method="beta")[0]``, which
    ART calls here; computing it with scipy spares the project a statsmodels dependency.
    """
    from scipy.stats import beta

    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def _smoothing_class() -> type:
    from art.estimators.certification.randomized_smoothing import TensorFlowV2RandomizedSmoothing

    class ScipyRandomizedSmoothing(TensorFlowV2RandomizedSmoothing):
        """ART's TensorFlow v2 randomized smoothing with the confidence bound computed by scipy."""

        def _lower_confidence_bound(self, n_class_samples: int, n_total_samples: int) -> float:
            return clopper_pearson_lower(int(n_class_samples), int(n_total_samples), float(self.alpha))

    return ScipyRandomizedSmoothing


def certify_smoothing(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float = 0.25,
    n: int = 200,
    sample_size: int = 32,
    alpha: float = 0.001,
    radii: Sequence[float] = DEFAULT_RADII,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Certify ``model`` smoothed with N(0, sigma^2) noise on (``x``, ``y``).

    Returns the parameters, certified accuracy per L2 radius, the abstention rate and the
    per-sample certified radii (0 where abstained or wrong).
    """
    import keras
    from scipy.stats import norm

    sigma = check_number("sigma", sigma, min_value=0.0, min_inclusive=False)
    n = check_positive_int("n", n)
    smoothed = _smoothing_class()(
        model=model,
        nb_classes=int(model.output_shape[-1]),
        input_shape=tuple(int(d) for d in model.input_shape[1:]),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
        clip_values=(0.0, 1.0),
        sample_size=sample_size,
        scale=sigma,
        alpha=alpha,
    )
    np.random.seed(seed)  # ART draws the Gaussian noise from numpy's global generator
    start = time.perf_counter()
    prediction, radius = smoothed.certify(np.asarray(x, np.float32), n=n, batch_size=batch_size)
    seconds = time.perf_counter() - start
    y = np.asarray(y, np.int64)
    correct = prediction == y
    certified = np.where(correct, radius, 0.0)
    rows = [{"radius_l2": float(r), "certified_accuracy": float((correct & (radius >= r)).mean())} for r in radii]
    log.info("randomized smoothing sigma=%g: certified accuracy at r=0 %.3f (%.1fs)", sigma, rows[0]["certified_accuracy"], seconds)
    return {
        "sigma": sigma, "n": n, "sample_size": sample_size, "alpha": alpha, "n_samples": int(len(y)),
        "abstain_rate": float((prediction == -1).mean()) if len(y) else float("nan"),
        "smoothed_accuracy": float(correct.mean()) if len(y) else float("nan"),
        "certified_accuracy": rows,
        # With n draws even a unanimous vote bounds p_A by alpha ** (1/n): no larger radius is possible.
        "max_certifiable_radius": float(sigma * norm.ppf(clopper_pearson_lower(n, n, alpha))),
        "median_certified_radius_of_correct": float(np.median(radius[correct])) if correct.any() else 0.0,
        "certified_radius": certified.tolist(),
        "seconds": round(seconds, 2),
    }


__all__ = ["DEFAULT_RADII", "certify_smoothing", "clopper_pearson_lower"]
