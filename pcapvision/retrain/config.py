"""The retrain job's parameters: defaults, a ``retrain.toml`` file, command-line overrides; validated here.

A config file holds any of these tables (all optional)::

    [training]            # used on the first run; later runs take the champion's, unless overridden
    arch = "cnn"
    epochs = 20
    seed = 0
    ...
    [gates]
    max_f1_drop = 0.005
    max_fpr_rise = 0.002
    max_robust_accuracy_drop = 0.02
    beat_baselines = true
    [holdout]
    fraction = 0.25
    [robustness]
    fgsm_eps = 0.05
    [drift]
    max_mix_distance = 0.2
    max_payload_ks = 0.2
    max_far_share = 0.1
    reference_quantile = 0.99
    [imaging]             # first run only (later runs image as the champion was trained)
    representation = "payload"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pcapvision.errors import InputNotFoundError, ParameterError
from pcapvision.validation import check_choice, check_int, check_number, check_positive_int

# Training parameters the challenger inherits from the champion (names of train_images' arguments).
TRAINING_KEYS = ("target", "arch", "epochs", "batch_size", "seed", "learning_rate", "patience", "test_fraction",
                 "validation_fraction", "threshold", "positive_class")


@dataclass(frozen=True)
class Gates:
    """How much worse than the champion a challenger may be on the holdout and still replace it."""

    max_f1_drop: float = 0.005  # malicious-class F1
    max_fpr_rise: float = 0.002  # false-positive rate of the malicious class
    max_robust_accuracy_drop: float = 0.02  # accuracy under FGSM at robustness.fgsm_eps
    beat_baselines: bool = True  # macro-F1 above every trivial baseline's

    def __post_init__(self) -> None:
        for name in ("max_f1_drop", "max_fpr_rise", "max_robust_accuracy_drop"):
            check_number(name, getattr(self, name), min_value=0, max_value=1)
        if not isinstance(self.beat_baselines, bool):
            raise ParameterError(f"The 'beat_baselines' parameter must be a bool. Got {self.beat_baselines!r} instead.")


@dataclass(frozen=True)
class DriftLimits:
    """When the new data count as drifted from the champion's training data."""

    max_mix_distance: float = 0.2  # total-variation distance of a categorical mix
    max_payload_ks: float = 0.2  # Kolmogorov-Smirnov statistic of payload lengths
    max_far_share: float = 0.1  # share of new images beyond the reference distance
    reference_quantile: float = 0.99
    reference_points: int = 2000

    def __post_init__(self) -> None:
        for name in ("max_mix_distance", "max_payload_ks", "max_far_share"):
            check_number(name, getattr(self, name), min_value=0, max_value=1)
        check_number("reference_quantile", self.reference_quantile, min_value=0, max_value=1, min_inclusive=False)
        check_positive_int("reference_points", self.reference_points)


@dataclass(frozen=True)
class RetrainConfig:
    """Everything the job needs besides its paths."""

    training: dict[str, Any] = field(default_factory=dict)  # overrides of train_images' defaults
    representation: str = "payload"
    holdout_fraction: float = 0.25
    fgsm_eps: float = 0.05
    gates: Gates = field(default_factory=Gates)
    drift: DriftLimits = field(default_factory=DriftLimits)

    def __post_init__(self) -> None:
        check_number("holdout_fraction", self.holdout_fraction, min_value=0, max_value=0.5, min_inclusive=False)
        check_number("fgsm_eps", self.fgsm_eps, min_value=0, max_value=1, min_inclusive=False)
        object.__setattr__(self, "training", check_training(self.training))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_training(self, overrides: dict[str, Any]) -> RetrainConfig:
        """A copy whose training parameters are updated with the non-None ``overrides``."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, training={**self.training, **given}) if given else self


def check_training(params: dict[str, Any]) -> dict[str, Any]:
    """Validate training overrides (unknown keys and obviously bad values; train_images checks the rest)."""
    unknown = sorted(set(params) - set(TRAINING_KEYS))
    if unknown:
        raise ParameterError(f"The 'training' parameter must only hold {list(TRAINING_KEYS)}. Got {unknown} instead.")
    out = dict(params)
    if "arch" in out:
        from pcapvision.classify import ARCHITECTURES

        check_choice("arch", out["arch"], ARCHITECTURES)
    if "target" in out:
        check_choice("target", out["target"], ("label", "family"))
    for name in ("epochs", "batch_size"):
        if name in out:
            check_positive_int(name, out[name])
    for name in ("seed", "patience"):
        if name in out:
            check_int(name, out[name], min_value=0)
    return out


def _section(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ParameterError(f"{path}: [{name}] must be a table")
    return value


def _build(cls: type, values: dict[str, Any], path: Path, section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParameterError(f"{path}: unknown key(s) {unknown} in [{section}]; known: {sorted(known)}")
    return cls(**values)


def load_config(path: str | os.PathLike[str] | None) -> RetrainConfig:
    """The configuration in ``path`` (a TOML file), or the defaults when ``path`` is None."""
    if path is None:
        return RetrainConfig()
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: retrain config not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ParameterError(f"{path}: not a valid TOML file ({exc})") from exc
    unknown = sorted(set(raw) - {"training", "gates", "holdout", "robustness", "drift", "imaging"})
    if unknown:
        raise ParameterError(f"{path}: unknown table(s) {unknown}")
    holdout = _section(raw, "holdout", path)
    robustness = _section(raw, "robustness", path)
    imaging = _section(raw, "imaging", path)
    for section, allowed in (("holdout", {"fraction"}), ("robustness", {"fgsm_eps"}), ("imaging", {"representation"})):
        extra = sorted(set(_section(raw, section, path)) - allowed)
        if extra:
            raise ParameterError(f"{path}: unknown key(s) {extra} in [{section}]; known: {sorted(allowed)}")
    defaults = RetrainConfig()
    return RetrainConfig(
        training=_section(raw, "training", path),
        representation=imaging.get("representation", defaults.representation),
        holdout_fraction=holdout.get("fraction", defaults.holdout_fraction),
        fgsm_eps=robustness.get("fgsm_eps", defaults.fgsm_eps),
        gates=_build(Gates, _section(raw, "gates", path), path, "gates"),
        drift=_build(DriftLimits, _section(raw, "drift", path), path, "drift"),
    )


__all__ = ["DriftLimits", "Gates", "RetrainConfig", "TRAINING_KEYS", "check_training", "load_config"]
