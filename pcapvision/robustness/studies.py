"""The studies of the robustness suite, one function each: attacks, fooling images, the noise
class, defences, and the traffic-only ones (network-level and packet-level distortions, the
byte-realizable attack). :func:`~pcapvision.robustness.suite.run_suite` runs them in order and
stores what each returns under its key of ``robustness.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pcapvision.robustness.attacks import AttackSpec, decide, predict_proba, run_attack

if TYPE_CHECKING:
    from pcapvision.robustness.suite import EvalData, SuiteConfig

__all__ = ["attack_study", "defence_study", "fooling_study", "noise_class_study", "packet_study", "realizable_study",
           "selection_split", "subsample", "traffic_study"]


def subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(n, k)])


def attack_study(model, classifier, x, y, proba, cfg: SuiteConfig, names, binary, seed):
    rows: list[dict[str, Any]] = []
    examples: dict[str, Any] = {}
    report_result = None
    specs = [AttackSpec("fgsm", eps=e, batch_size=cfg.batch_size) for e in cfg.fgsm_eps]
    specs += [AttackSpec("pgd_linf", eps=e, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, batch_size=cfg.batch_size)
              for e in cfg.pgd_linf_eps]
    specs += [AttackSpec("pgd_l2", eps=e, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, batch_size=cfg.batch_size)
              for e in cfg.pgd_l2_eps]
    for spec in specs:
        result = run_attack(spec, model, x, y, proba_clean=proba, classifier=classifier, class_names=names,
                            binary=binary, seed=seed)
        rows.append(result.metrics)
        examples[f"{spec.name}_eps{spec.eps:g}"] = result
        if spec.name == "pgd_linf" and (report_result is None or abs(spec.eps - cfg.report_eps) <
                                        abs(report_result.spec.eps - cfg.report_eps)):
            report_result = result
    if report_result is None:  # no PGD budgets configured: fall back to the last attack run
        report_result = examples[list(examples)[-1]]
    return rows, examples, report_result


def fooling_study(model, names, cfg: SuiteConfig, seed):
    from pcapvision.robustness.fooling import fooling_images, noise_confidence

    targets = np.repeat(np.arange(len(names)), cfg.fooling_per_class)
    result = fooling_images(model, targets, max_steps=cfg.fooling_steps, seed=seed)
    out = {"summary": result.summary(), "per_class": result.per_class(names),
           "noise_confidence": noise_confidence(model, 1000, seed=seed)}
    return out, result


def noise_class_study(model, ev: EvalData, metadata, cfg: SuiteConfig, binary, seed) -> dict[str, Any]:
    from pcapvision.classify import train_model
    from pcapvision.robustness.fooling import fooling_images, noise_confidence, retrain_with_noise_class

    if ev.x_train is None:
        return {"skipped": "needs the model's training data (the images table it was trained on)"}
    n_classes = len(ev.class_names)
    # Shuffled: data files may be sorted by label, and the last tenth becomes the validation set.
    tr = np.random.default_rng(seed + 7).permutation(len(ev.y_train))[: cfg.defence_train_n]
    split = int(len(tr) * 0.9)
    new_model, info = retrain_with_noise_class(
        train_model, model, ev.x_train[tr[:split]], ev.y_train[tr[:split]], ev.x_train[tr[split:]],
        ev.y_train[tr[split:]], n_per_class=cfg.noise_per_class, epochs=cfg.retrain_epochs, seed=seed,
        max_steps=cfg.fooling_steps)
    targets = np.repeat(np.arange(n_classes), cfg.fooling_per_class)
    before = fooling_images(model, targets, max_steps=cfg.fooling_steps, seed=seed + 100)
    after = fooling_images(new_model, targets, max_steps=cfg.fooling_steps, seed=seed + 100)
    sample = subsample(len(ev.y), 1000, seed + 11)
    x_eval, y_eval = ev.x[sample], ev.y[sample]
    noise_after = noise_confidence(new_model, 1000, seed=seed)
    counts = noise_after["predicted_class_counts"]
    return {
        **info,
        "clean_accuracy_before": float((decide(predict_proba(model, x_eval), binary) == y_eval).mean()),
        # the retrained model has one more class (noise): arg-max, as an image it calls noise is an error here
        "clean_accuracy_after": float((predict_proba(new_model, x_eval).argmax(1) == y_eval).mean()),
        "fooling_success_before": before.summary()["success_rate"],
        "fooling_success_after": after.summary()["success_rate"],
        "fooling_median_steps_before": before.summary()["median_steps_when_successful"],
        "fooling_median_steps_after": after.summary()["median_steps_when_successful"],
        "noise_mean_max_confidence_before": noise_confidence(model, 1000, seed=seed)["mean_max_confidence"],
        "noise_mean_max_confidence_after": noise_after["mean_max_confidence"],
        "noise_fraction_assigned_noise_class_after": float(counts[n_classes] / max(sum(counts), 1)),
        "note": "fresh fooling images (new seed) are grown against each model with the same budget",
    }


def selection_split(n_train: int, n_train_max: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows for a defence and a disjoint validation slice to select its epoch on.

    The slice (10% of the training rows, 20 to 500 images) is carved from the training data, so
    the images a defended model is reported on never took part in choosing it.
    """
    order = np.random.default_rng(seed).permutation(n_train)
    n_select = int(min(500, max(20, round(0.1 * n_train)), max(n_train - 1, 0)))
    return np.sort(order[n_select:][:n_train_max]), np.sort(order[:n_select])


def defence_study(model, ev: EvalData, x_att, y_att, cfg: SuiteConfig, binary, seed) -> dict[str, Any]:
    from pcapvision.robustness.defences import adversarial_training

    if not cfg.defences:
        return {"skipped": "no defences in this suite (run --suite full)"}
    if ev.x_train is None:
        return {"skipped": "needs the model's training data (the images table it was trained on)"}
    eps = cfg.defence_eps if cfg.defence_eps is not None else (0.3 if ev.is_mnist else cfg.report_eps)
    tr, select = selection_split(len(ev.y_train), cfg.defence_train_n, seed + 3)
    evaluate = AttackSpec("pgd_linf", eps=eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, batch_size=cfg.batch_size)
    fgsm = AttackSpec("fgsm", eps=eps, batch_size=cfg.batch_size)

    def measure(m) -> dict[str, float]:
        p = predict_proba(m, x_att)
        return {
            "clean_accuracy": float((decide(p, binary) == y_att).mean()),
            f"fgsm_accuracy_eps{eps:g}": run_attack(fgsm, m, x_att, y_att, proba_clean=p, binary=binary,
                                                    seed=seed).metrics["robust_accuracy"],
            f"pgd{cfg.pgd_steps}_accuracy_eps{eps:g}": run_attack(evaluate, m, x_att, y_att, proba_clean=p, binary=binary,
                                                                  seed=seed).metrics["robust_accuracy"],
        }

    rows = [{"model": "standard (given)", **measure(model)}]
    runs = []
    for method in cfg.defences:
        result = adversarial_training(model, ev.x_train[tr], ev.y_train[tr], method=method, eps=eps,
                                      epochs=cfg.defence_epochs, steps=cfg.defence_steps, x_check=ev.x_train[select],
                                      y_check=ev.y_train[select], seed=seed)
        rows.append({"model": method, **measure(result.model)})
        runs.append(result.describe())
    return {"eps": eps, "evaluation_attack": evaluate.describe(), "table": rows, "training": runs,
            "n_reported": int(len(y_att)),
            "selection": (f"each defence's epoch is chosen by PGD accuracy on {len(select)} validation images carved "
                          f"from the training data (disjoint from its {len(tr)} training images); the table reports "
                          f"the {len(y_att)} attacked test images, which the selection never saw")}


def traffic_study(model, ev: EvalData, eval_idx: np.ndarray, flows, binary, seed: int) -> dict[str, Any]:
    if ev.is_mnist:
        return {"skipped": "MNIST model: network-level distortions apply to traffic images only"}
    if flows is None:
        return {"skipped": "no flows table given (--flows FLOWS): network-level distortions re-render flows"}
    from pcapvision.robustness.traffic_distortions import traffic_severity_sweep

    return {"rows": traffic_severity_sweep(model, ev, eval_idx, flows, seed=seed, binary=binary)}


def packet_study(model, ev: EvalData, eval_idx: np.ndarray, flows, cfg: SuiteConfig, binary, seed: int) -> dict[str, Any]:
    if ev.is_mnist:
        return {"skipped": "MNIST model: packet-level distortions apply to traffic images only"}
    if flows is None:
        return {"skipped": "no flows table given (--flows FLOWS): packet-level distortions rebuild each flow's capture"}
    from pcapvision.io import read_parquet_metadata
    from pcapvision.robustness.packet_distortions import packet_level_sweep
    from pcapvision.robustness.traffic_distortions import read_flows_table

    table = read_flows_table(flows, ev.flow_id[eval_idx])
    labels = dict(zip(ev.flow_id[eval_idx], ev.y[eval_idx]))
    rows = [r for r in table.to_pylist() if r.get("protocol") == 6 and r.get("source_file")]
    rows = [rows[i] for i in np.sort(np.random.default_rng(seed + 13).permutation(len(rows))[: cfg.n_packet_flows])]
    if not rows:
        return {"skipped": "no evaluated TCP flow in the flows table"}
    mask = bool(((ev.images_schema or {}).get("params") or {}).get("mask_tls_sni", False))
    return packet_level_sweep(model, rows, labels, ev.representation, ev.representation_params,
                              ingest_params=read_parquet_metadata(flows).get("params"), mask_tls_sni=mask,
                              binary=binary, seed=seed)


def realizable_study(model, ev: EvalData, attack_idx: np.ndarray, flows, cfg: SuiteConfig, binary, seed: int) -> dict[str, Any]:
    if ev.is_mnist:
        return {"skipped": "MNIST model: the byte-realizable attack needs payload images of flows"}
    if ev.representation != "payload":
        return {"skipped": f"representation {ev.representation!r}: pixels are not bytes the sender controls"}
    if flows is None:
        return {"skipped": "no flows table given (--flows FLOWS): the round trip rebuilds each flow's capture"}
    if ev.payload_length is None:
        return {"skipped": "the images table has no payload_length column"}
    from pcapvision.io import read_parquet_metadata
    from pcapvision.robustness.realizable import STRATEGIES, client_hello_mask, realizable_attack, round_trip
    from pcapvision.robustness.traffic_distortions import read_flows_table

    idx_all = attack_idx
    if binary is not None:  # the attacker is the malicious sender trying to pass as normal
        idx_all = idx_all[ev.y[idx_all] == binary.malicious_index]
    if not len(idx_all):
        return {"skipped": "no attacked test flow of the class the attacker would send (the test split lacks it)"}
    table_all = read_flows_table(flows, ev.flow_id[idx_all])
    is_tcp = dict(zip(table_all.column("flow_id").to_pylist(), (p == 6 for p in table_all.column("protocol").to_pylist())))
    missing = [f for f in ev.flow_id[idx_all] if f not in is_tcp]
    if missing:
        return {"skipped": f"{len(missing)} attacked flow_ids are not in {flows}"}
    position = {fid: i for i, fid in enumerate(table_all.column("flow_id").to_pylist())}
    mask_sni = bool(((ev.images_schema or {}).get("params") or {}).get("mask_tls_sni", False))
    ingest_params = read_parquet_metadata(flows).get("params")
    out: dict[str, Any] = {}
    for strategy in STRATEGIES:
        if strategy == "append":
            fits = ev.payload_length[idx_all] + 5 < int(np.prod(ev.x.shape[1:]))
        else:
            fits = client_hello_mask(ev.x[idx_all])[1]
        idx = idx_all[fits & np.asarray([is_tcp[f] for f in ev.flow_id[idx_all]], bool)][: cfg.n_realizable]
        if len(idx) == 0:
            out[strategy] = {"skipped": "no attacked TCP flow has padding left after its payload" if strategy == "append"
                             else "no attacked TCP flow opens with a ClientHello"}
            continue
        table = table_all.take([position[f] for f in ev.flow_id[idx]])
        x, y, lengths = ev.x[idx], ev.y[idx], ev.payload_length[idx]
        attack = realizable_attack(model, x, y, lengths, strategy=strategy, steps=cfg.realizable_steps, seed=seed,
                                   batch_size=cfg.batch_size)
        result = round_trip(model, table, attack, y, lengths, ev.representation, ev.representation_params,
                            ingest_params=ingest_params, mask_tls_sni=mask_sni, binary=binary)
        result["attack"] = {"attack": "pgd_linf masked to sender-controlled bytes", "eps": 1.0,
                            "steps": cfg.realizable_steps, "step_size": 0.1, "quantised_to_bytes": True}
        out[strategy] = result
    return out
