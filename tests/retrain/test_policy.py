"""Holdout policy, gates, drift arithmetic, config parsing and the registry's aliases (no training)."""

from __future__ import annotations

import pandas as pd
import pytest

from pcapvision.errors import ParameterError
from pcapvision.retrain import DirectoryRegistry, Gates, load_config
from pcapvision.retrain.config import DriftLimits
from pcapvision.retrain.drift import drift_report, total_variation
from pcapvision.retrain.gates import evaluate_gates, failed
from pcapvision.retrain.holdout import groups_of_version, grow, majority_labels


def test_holdout_takes_a_share_of_each_class_of_new_groups_only_and_never_moves_them():
    first, added = grow({}, {f"n{i}": "normal" for i in range(4)} | {f"m{i}": "malicious" for i in range(4)}, 0.25)
    assert first["version"] == 1 and len(added) == 2
    assert {first["groups"][g]["class"] for g in added} == {"normal", "malicious"}
    # the same arrival gives the same choice (order of the mapping does not matter)
    again, _ = grow({}, dict(reversed(list({f"n{i}": "normal" for i in range(4)}.items()))) |
                    {f"m{i}": "malicious" for i in range(4)}, 0.25)
    assert set(again["groups"]) == set(first["groups"])
    # groups already in the holdout are not re-added; only new ones are considered
    second, added2 = grow(first, {**{g: "normal" for g in first["groups"]}, "n9": "normal", "n8": "normal"}, 0.25)
    assert second["version"] == 2 and len(added2) == 1 and set(added2) <= {"n8", "n9"}
    assert set(first["groups"]) < set(second["groups"])
    assert groups_of_version(second, 1) == set(first["groups"])
    # one new group of a class: it goes to training; nothing new: no new version
    third, added3 = grow(second, {"lonely": "normal"}, 0.25)
    assert added3 == [] and third["version"] == 2


def test_majority_label_of_a_group():
    assert majority_labels(["a", "a", "a", "b"], ["x", "y", "x", "y"]) == {"a": "x", "b": "y"}


def _figures(f1, fpr, robust, macro=0.9):
    return {"f1_name": "malicious_f1", "f1": f1, "fpr_name": "malicious_false_positive_rate", "fpr": fpr,
            "robust_accuracy": robust, "macro_f1": macro}


def test_gates_pass_within_the_tolerances_and_name_each_failure_with_both_figures():
    gates = Gates()
    champion = _figures(0.90, 0.010, 0.80)
    ok = evaluate_gates(gates, _figures(0.896, 0.0119, 0.781), champion, [{"baseline": "stump", "macro_f1": 0.5}])
    assert all(r["passed"] for r in ok) and len(ok) == 4
    bad = evaluate_gates(gates, _figures(0.894, 0.0121, 0.779, macro=0.5), champion,
                         [{"baseline": "stump", "macro_f1": 0.5}])
    assert [r["gate"] for r in bad if not r["passed"]] == [
        "malicious_f1", "malicious_false_positive_rate", "fgsm_robust_accuracy", "macro_f1_vs_best_baseline"]
    lines = failed(bad)
    assert lines[0] == ("gate malicious_f1 failed: challenger 0.8940 vs champion 0.9000 "
                        "(rule: challenger >= champion - 0.005)")
    assert "best trivial baseline ('stump': 0.5000)" in lines[3]


def test_first_run_is_judged_by_the_baseline_gate_alone():
    results = evaluate_gates(Gates(), _figures(0.9, 0.0, 0.8, macro=0.7), None,
                             [{"baseline": "majority class", "macro_f1": 0.4}, {"baseline": "stump", "macro_f1": 0.75}])
    assert [(r["gate"], r["passed"]) for r in results] == [("macro_f1_vs_best_baseline", False)]
    assert results[0]["baseline"] == "stump"


def test_drift_flags_a_moved_mix_and_payload_lengths():
    ref = pd.DataFrame({"label": ["normal"] * 8 + ["malicious"] * 2, "family": ["web"] * 10, "protocol": ["tcp"] * 10,
                        "tls_version": ["TLS 1.3"] * 10, "sni_present": ["SNI"] * 10, "payload_bytes": range(100, 110)})
    same = drift_report(ref.copy(), ref, DriftLimits())
    assert not same["drifted"] and same["mixes"]["label"]["total_variation"] == 0
    new = ref.assign(tls_version="no TLS", sni_present="no SNI", payload_bytes=range(5000, 5010))
    moved = drift_report(new, ref, DriftLimits(), far_share=0.6, far_threshold=1.0, n_images=10)
    assert moved["drifted"]
    assert moved["mixes"]["tls_version"]["total_variation"] == 1.0
    assert moved["payload_bytes"]["ks_statistic"] == 1.0
    assert any("far from every training image" in f for f in moved["flags"])
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0}) == 0.5


def test_config_file_is_validated_with_named_keys(tmp_path):
    path = tmp_path / "retrain.toml"
    path.write_text("[gates]\nmax_f1_drop = 0.01\n[holdout]\nfraction = 0.3\n[training]\nepochs = 4\n")
    config = load_config(path)
    assert config.gates.max_f1_drop == 0.01 and config.holdout_fraction == 0.3 and config.training == {"epochs": 4}
    path.write_text("[gates]\nmax_f1_dorp = 0.01\n")
    with pytest.raises(ParameterError, match=r"unknown key\(s\) \['max_f1_dorp'\] in \[gates\]"):
        load_config(path)
    path.write_text("[gates]\nmax_f1_drop = -1\n")
    with pytest.raises(ParameterError, match="The 'max_f1_drop' parameter must be a number in"):
        load_config(path)
    path.write_text("[training]\nepochs = 0\n")
    with pytest.raises(ParameterError, match="The 'epochs' parameter must be a positive int"):
        load_config(path)


def test_aliases_promote_and_rollback_keep_a_history(tmp_path):
    reg = DirectoryRegistry(tmp_path / "reg")
    for n in (1, 2, 3):
        with reg.new_version() as (number, staging):
            assert number == n
            reg.publish(number, staging, {"decision": "promoted"})
    assert reg.champion() is None
    reg.promote(1)
    reg.promote(2)
    reg.promote(3)
    assert reg.aliases()["previous"] == [1, 2]
    reg.rollback()
    assert (reg.champion(), reg.aliases()["previous"]) == (2, [1])
    assert [e["action"] for e in reg.aliases()["history"]] == ["promote", "promote", "promote", "rollback"]
    with pytest.raises(ParameterError, match="must be a version of"):
        reg.promote(9)


def test_a_version_that_fails_while_being_built_never_appears(tmp_path):
    reg = DirectoryRegistry(tmp_path / "reg")
    with pytest.raises(RuntimeError):
        with reg.new_version() as (_, staging):
            (staging / "model").mkdir()
            raise RuntimeError("killed")
    assert reg.version_numbers() == [] and list((tmp_path / "reg" / "versions").iterdir()) == []
