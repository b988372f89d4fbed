"""The MLflow registry backend against a local sqlite-backed store (skipped without mlflow)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'pcapvision[mlflow]')")
pytest.importorskip("sqlalchemy", reason="the sqlite tracking store needs sqlalchemy (pip install 'pcapvision[mlflow]')")

from pcapvision.errors import ParameterError  # noqa: E402
from pcapvision.retrain import open_registry  # noqa: E402
from pcapvision.retrain.mlflow_registry import MlflowRegistry, is_mlflow_uri  # noqa: E402


def _publish(reg, f1: float) -> int:
    with reg.new_version() as (number, staging):
        (staging / "model").mkdir()
        (staging / "model" / "metadata.json").write_text(json.dumps({"f1": f1}))
        reg.publish(number, staging, {"decision": "promoted", "training": {"arch": "cnn", "epochs": 2},
                                      "metrics": {"challenger": {"figures": {"malicious_f1": f1, "f1_name": "malicious_f1"}}}})
    return number


def test_versions_and_aliases_are_mirrored_into_mlflow(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert is_mlflow_uri(uri) and not is_mlflow_uri(tmp_path / "reg")
    reg = open_registry(uri + "#traffic")
    assert isinstance(reg, MlflowRegistry) and reg.root == tmp_path / "mlruns.db.pcapvision"
    client = MlflowClient(uri)

    v1 = _publish(reg, 0.9)
    reg.promote(v1, reason="test")
    v2 = _publish(reg, 0.95)
    model = client.get_registered_model("traffic")
    assert model.aliases == {"champion": 1, "challenger": 2}
    reg.promote(v2, reason="test")
    assert client.get_registered_model("traffic").aliases == {"champion": 2, "challenger": 2, "previous-champion": 1}
    reg.rollback(reason="test")
    assert client.get_registered_model("traffic").aliases == {"champion": 1, "challenger": 2}
    assert reg.champion() == 1  # the local aliases switch with MLflow's

    record = reg.version(v2)
    run = client.get_run(record["mlflow"]["run_id"])
    assert run.data.metrics["challenger_malicious_f1"] == pytest.approx(0.95)
    assert run.data.params["epochs"] == "2"
    reg.write_run({"run_id": "r1", "version": v2, "status": "promoted"})
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "version.json", "run_record.json"} <= artifacts


def test_remote_tracking_servers_are_refused_with_the_reason():
    with pytest.raises(ParameterError, match="remote tracking servers need a local work directory"):
        open_registry("http://mlflow.example:5000")
