"""The main job's configuration: every stage's parameters, a TOML file, and command-line overrides.

    >>> cfg = load_config("pipeline.toml")            # defaults, then the file (unknown keys are errors)
    >>> cfg = apply_overrides(cfg, {"epochs": 5})     # command-line options win over the file
    >>> print(render_toml())                          # ``pcapvision config show``

Sections and keys are declared once in :data:`SECTIONS`; the file, the command line
(:data:`OPTIONS`) and ``pcapvision config show`` all read that declaration.
"""

from __future__ import annotations

import copy
import json
import numbers
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pcapvision.choices import ARCHITECTURES, ON_HOLE, READERS, REPRESENTATIONS
from pcapvision.errors import ParameterError


@dataclass(frozen=True)
class Key:
    """One configuration key: its default, type, help text and allowed values."""

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None

    @property
    def kind(self) -> type:
        return type(self.default)


# Sizes of the robustness suite a configuration may change (robustness.SuiteConfig fields).
SUITE_SIZES = {
    "n_eval": "test images the distortions are measured on",
    "n_attack": "test images attacked (FGSM, PGD)",
    "n_deepfool": "images given to DeepFool",
    "fooling_steps": "gradient steps per fooling image",
    "n_certify": "images certified by randomized smoothing",
    "certify_n": "noise draws per certified image",
    "n_realizable": "flows given to the byte-realizable attack",
}

# The main job's defaults are smaller than the stand-alone suite's so that the whole run fits in
# about five minutes on 2 CPU cores (BENCHMARKS.md): fewer images attacked and certified, DeepFool
# (the slowest attack) on 20 images.
RUN_SUITE_SIZES = {"n_eval": 500, "n_attack": 100, "n_deepfool": 20, "n_certify": 10, "certify_n": 500}

SECTIONS: dict[str, tuple[str, tuple[Key, ...]]] = {
    "run": ("where the job reads and writes", (
        Key("captures", ["sample_pcaps"], "capture files, directories or globs"),
        Key("output", "out", "output directory"),
        Key("labels", "", "label rules CSV; empty: labels.csv inside the single capture directory, if any"),
        Key("seed", 0, "random seed of every stage", minimum=0),
        Key("executor", "local", "where ingest and imaging run: local processes, or a Dask cluster",
            choices=("local", "dask")),
        Key("scheduler", "", "with executor = \"dask\": scheduler address (tcp://HOST:PORT); empty: a LocalCluster"),
        Key("jobs", 1, "worker processes (local executor) or LocalCluster workers (dask)", minimum=1),
    )),
    "ingest": ("captures -> flows table (docs/ingest.md)", (
        Key("idle_timeout_s", 120.0, "a flow ends after this long without a packet", minimum=0),
        Key("active_timeout_s", 1800.0, "a flow is split after lasting this long", minimum=0),
        Key("max_bytes", 4096, "payload bytes kept per flow", minimum=1),
        Key("max_packets", 64, "packets kept in the per-packet lists", minimum=1),
        Key("on_hole", "stop", "a TCP direction with missing bytes: stop its payload at the hole, or skip the "
                               "gap", choices=ON_HOLE),
        Key("reader", "auto", "capture decoder", choices=READERS),
        Key("chunk_packets", 65536, "packets decoded per chunk", minimum=1),
    )),
    "image": ("flows table -> 28x28 images (docs/imaging.md)", (
        Key("representation", "packets", "what a pixel means (default: the winner of 'pcapvision compare' on the "
                                         "bundled sample, BENCHMARKS.md)",
            choices=REPRESENTATIONS),
        Key("params", {}, "representation parameters, e.g. { max_bytes = 1500 } (see 'pcapvision image --help')"),
        Key("dedup", True, "keep one row per distinct image; drop images seen with conflicting labels"),
        Key("mask_tls_sni", False, "zero TLS SNI and certificate-name bytes before rendering"),
        Key("group_by", "capture", "split_group column: source capture or server address",
            choices=("capture", "server")),
    )),
    "train": ("the network on the traffic images; the MNIST model uses the same training function "
              "(docs/classify.md)", (
        Key("target", "label", "class column of the traffic model", choices=("label", "family")),
        Key("arch", "cnn1d", "traffic model architecture (default: the winner of 'pcapvision compare' on the "
                             "bundled sample, BENCHMARKS.md)", choices=ARCHITECTURES),
        Key("epochs", 20, "maximum epochs of the traffic model (early stopping on validation loss)", minimum=1),
        Key("patience", 3, "epochs without validation-loss improvement before stopping (both models)", minimum=0),
        Key("batch_size", 128, "images per training batch (both models)", minimum=1),
        Key("learning_rate", 0.0, "optimizer learning rate (both models); 0: 0.001 for cnn/Adam, 0.01 for mlp/SGD",
            minimum=0),
        Key("test_fraction", 0.2, "approximate fraction of traffic images held out for test", minimum=0),
        Key("validation_fraction", 0.1, "fraction used for early stopping (both models)", minimum=0),
        Key("threshold", 0.5, "binary traffic models: operating threshold on p(positive class)", minimum=0),
        Key("positive_class", "", "two-class traffic models: the positive (malicious) class; empty: the class "
                                  "named 'malicious' (any case), else an error: it is never guessed"),
    )),
    "mnist": ("the MNIST proof of concept trained beside the traffic model", (
        Key("enabled", True, "train, evaluate and attack the MNIST model too"),
        Key("file", "", "MNIST file (mnist.npz, IDX directory or x/y npz); empty: the 10,000-digit sample "
                        "bundled with pcapvision"),
        Key("epochs", 5, "maximum epochs of the MNIST model", minimum=1),
        Key("arch", "cnn", "MNIST model architecture (the proof of concept's plain CNN)",
            choices=ARCHITECTURES),
    )),
    "robustness": ("where each model breaks (docs/robustness.md)", (
        Key("suite", "quick", "robustness suite of both models, or none", choices=("quick", "full", "none")),
        *(Key(name, RUN_SUITE_SIZES.get(name, 0), f"{what}; 0: the suite's own", minimum=0)
          for name, what in SUITE_SIZES.items()),
    )),
}

# Command-line option (argparse dest, also run_pipeline keyword) -> (section, key).
OPTIONS: dict[str, tuple[str, str]] = {
    "captures": ("run", "captures"), "output": ("run", "output"), "labels": ("run", "labels"),
    "seed": ("run", "seed"), "executor": ("run", "executor"), "scheduler": ("run", "scheduler"),
    "jobs": ("run", "jobs"), "representation": ("image", "representation"), "target": ("train", "target"),
    "arch": ("train", "arch"), "epochs": ("train", "epochs"), "mnist": ("mnist", "enabled"),
    "mnist_file": ("mnist", "file"), "mnist_epochs": ("mnist", "epochs"), "suite": ("robustness", "suite"),
    "positive_class": ("train", "positive_class"),
}


def default_config() -> dict[str, dict[str, Any]]:
    """Every section with every key at its default (a fresh copy)."""
    return {section: {k.name: copy.deepcopy(k.default) for k in keys} for section, (_, keys) in SECTIONS.items()}


def _check_value(section: str, key: Key, value: Any, where: str) -> Any:
    label = f"{where}[{section}] {key.name}"
    kind = key.kind
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
    if kind is list and isinstance(value, (list, tuple)):
        value = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
        if not all(isinstance(v, str) for v in value):
            raise ParameterError(f"{label} must be a list of strings. Got {value!r} instead.")
    if kind is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ParameterError(f"{label} must be {_kind_name(kind)}. Got {value!r} instead.")
    if kind is float and value != value or kind is float and value in (float("inf"), float("-inf")):
        raise ParameterError(f"{label} must be a finite number. Got {value!r} instead.")
    if key.choices is not None and value not in key.choices:
        raise ParameterError(f"{label} must be one of {list(key.choices)}. Got {value!r} instead.")
    if key.minimum is not None and value < key.minimum:
        raise ParameterError(f"{label} must be >= {key.minimum:g}. Got {value!r} instead.")
    return value


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an int", float: "a number", str: "a string", list: "a list of strings",
            dict: "a table"}[kind]


def validate(config: Mapping[str, Any], where: str = "") -> dict[str, dict[str, Any]]:
    """Defaults completed with ``config``; unknown sections or keys and wrong types are errors
    naming the key and the section (``where``: the file, for messages)."""
    out = default_config()
    for section, values in config.items():
        if section not in SECTIONS:
            raise ParameterError(f"{where}unknown section [{section}]; sections are {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ParameterError(f"{where}[{section}] must be a table. Got {values!r} instead.")
        keys = {k.name: k for k in SECTIONS[section][1]}
        for name, value in values.items():
            if name not in keys:
                raise ParameterError(f"{where}unknown key {name!r} in section [{section}]; "
                                     f"keys there are {', '.join(keys)}")
            out[section][name] = _check_value(section, keys[name], value, where)
    return out


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The defaults, overridden by the TOML file at ``path`` when given."""
    if path is None:
        return default_config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{os.fspath(path)}: not a valid TOML file ({exc})") from None
    return validate(data, where=f"{os.fspath(path)}: ")


def apply_overrides(config: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``config`` with command-line ``options`` (names of :data:`OPTIONS`; ``None`` = not given) applied."""
    nested: dict[str, dict[str, Any]] = {section: dict(values) for section, values in config.items()}
    for name, value in options.items():
        if value is None:
            continue
        if name not in OPTIONS:
            raise ParameterError(f"unknown run option {name!r}; options are {', '.join(OPTIONS)}")
        section, key = OPTIONS[name]
        nested[section][key] = value
    return validate(nested, where="command line: ")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def render_toml(config: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """``config`` (default: the defaults) as a commented TOML file that :func:`load_config` reads back."""
    config = config or default_config()
    lines = ["# pcapvision pipeline configuration: 'pcapvision run --config FILE'.",
             "# Every key is optional; command-line options override the file.", ""]
    for section, (about, keys) in SECTIONS.items():
        lines.append(f"[{section}]  # {about}")
        for key in keys:
            choices = f" ({' | '.join(map(str, key.choices))})" if key.choices else ""
            lines.append(f"# {key.help}{choices}")
            lines.append(f"{key.name} = {_toml_value(config[section][key.name])}")
        lines.append("")
    return "\n".join(lines)
