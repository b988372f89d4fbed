"""Robustness stage: where a traffic-image CNN breaks, by how much, and what helps.

Public API::

    run_suite(model_dir, data=None, output_dir="robustness-report", suite="quick", *,
              mnist_file=None, flows=None, seed=0, config=None) -> dict     # robustness.json record
    plot_adversarial_rows(...), plot_fooling_grid(...)                     # report figures (matplotlib)
    suite_config(suite) -> SuiteConfig                                      # sizes of a named suite
    distort(x, name, severity, *, seed=0) / severity_sweep(predict, x, y)   # pixel distortions
    distort_flows(flows_table, name, severity, *, seed=0)                   # network-level distortions
    AttackSpec(name, eps, steps, step_size, restarts); run_attack(spec, model, x, y, ...) -> AttackResult
    generate(spec, art_classifier(model), x, y, mask=None)                   # ART-backed, clipped to [0, 1]
    tail_mask(payload_lengths, image_shape); quantize_to_bytes(x)           # byte-level attack masks
    fooling_images(model, targets, ...); noise_confidence(model)            # Nguyen et al. 2015
    adversarial_training(model, x, y, method="pgd"|"fgsm_rs"|"gaussian")    # defences (fine-tuning)
    certify_smoothing(model, x, y, sigma, n)                                # Cohen et al., via ART
    realizable_attack(model, x, y, payload_lengths, strategy="append"|"client_hello")
    round_trip(model, flows_rows, attack, y, payload_lengths, representation, params)  # pcap -> re-ingest
"""

from pcapvision.robustness.attacks import (
    ATTACKS,
    AttackResult,
    AttackSpec,
    BinaryTarget,
    art_classifier,
    attack_metrics,
    generate,
    perturbation_norms,
    quantize_to_bytes,
    run_attack,
    tail_mask,
)
from pcapvision.robustness.certify import certify_smoothing
from pcapvision.robustness.defences import adversarial_training
from pcapvision.robustness.distortions import DISTORTIONS, distort, severity_sweep
from pcapvision.robustness.fooling import fooling_images, noise_confidence
from pcapvision.robustness.plots import adversarial_rows as plot_adversarial_rows
from pcapvision.robustness.plots import fooling_grid as plot_fooling_grid
from pcapvision.robustness.realizable import realizable_attack, round_trip
from pcapvision.robustness.suite import FULL, QUICK, SUITES, SuiteConfig, run_suite, suite_config
from pcapvision.robustness.traffic_distortions import TRAFFIC_DISTORTIONS, distort_flows

__all__ = [
    "ATTACKS", "DISTORTIONS", "FULL", "QUICK", "SUITES", "TRAFFIC_DISTORTIONS", "AttackResult", "AttackSpec",
    "BinaryTarget", "SuiteConfig", "adversarial_training", "art_classifier", "attack_metrics", "certify_smoothing",
    "distort", "distort_flows", "fooling_images", "generate", "noise_confidence", "perturbation_norms",
    "plot_adversarial_rows", "plot_fooling_grid",
    "quantize_to_bytes", "realizable_attack", "round_trip", "run_attack", "run_suite", "severity_sweep", "suite_config", "tail_mask",
]
