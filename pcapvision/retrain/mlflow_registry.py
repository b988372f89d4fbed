"""MLflow as the registry backend (``pip install 'pcapvision[mlflow]'``; ``--registry sqlite:///mlruns.db``).

Every challenger becomes a registered model version (model ``pcapvision``, or the URI's
``#name`` fragment) carrying the ``challenger`` alias; promotion moves the ``champion`` alias and
the one before gets ``previous-champion`` (aliases are MLflow's current convention; stages are
deprecated). The version's metrics and training parameters are logged to an MLflow run, with
the model directory, ``version.json`` and, at the end, the run record as artifacts.

What MLflow does not hold stays in a local directory beside the database (``<db>.pcapvision/``):
the lock, the data area, the holdout, the job's state, the run records, and a copy of every
version, so that ``predict --registry`` and the job need no download. The local ``aliases.json``
and MLflow's aliases are switched together, the local file last (it is what the job reads).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pcapvision.errors import ParameterError
from pcapvision.retrain.registry import DirectoryRegistry

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "pcapvision"
EXPERIMENT = "pcapvision-retrain"
SCHEMES = ("sqlite", "mlflow+sqlite")


def is_mlflow_uri(uri: str | os.PathLike[str]) -> bool:
    """True when ``uri`` names an MLflow tracking store rather than a directory."""
    text = os.fspath(uri)
    return "://" in text and urlparse(text).scheme in (*SCHEMES, "http", "https", "databricks", "postgresql", "mysql")


def _split(uri: str) -> tuple[str, str, Path]:
    """``(tracking_uri, model_name, local_root)`` of a ``sqlite:///path.db[#name]`` URI."""
    tracking, _, name = uri.partition("#")
    parsed = urlparse(tracking)
    if parsed.scheme not in SCHEMES:
        raise ParameterError(f"The 'registry' parameter must be a directory or a sqlite:/// MLflow tracking URI (remote "
                             f"tracking servers need a local work directory, not supported yet). Got {uri!r} instead.")
    db = Path(tracking.split(":///", 1)[1]) if ":///" in tracking else None
    if db is None or not db.name:
        raise ParameterError(f"The 'registry' parameter must be sqlite:///PATH/TO/FILE.db. Got {uri!r} instead.")
    return tracking.replace("mlflow+", ""), name or DEFAULT_MODEL_NAME, db.parent / f"{db.name}.pcapvision"


class MlflowRegistry(DirectoryRegistry):
    """A :class:`DirectoryRegistry` whose versions and aliases are mirrored into MLflow."""

    kind = "mlflow"

    def __init__(self, uri: str) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise ParameterError(f"The 'registry' parameter {uri!r} needs MLflow: pip install 'pcapvision[mlflow]'") from exc
        self.tracking_uri, self.model_name, root = _split(uri)
        super().__init__(root)
        self._uri = uri
        self._client: Any = None

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(EXPERIMENT, artifact_location=(self.root / "mlflow-artifacts").resolve().as_uri())

    def _registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(self.model_name, description="pcapvision traffic classifier")

    def publish(self, number: int, staging: Path, record: dict[str, Any]) -> Path:
        """Log the version to an MLflow run, register it with the ``challenger`` alias, then publish locally."""
        client = self.client
        run = client.create_run(self._experiment_id(), run_name=f"v{number:04d}",
                                tags={"pcapvision.version": str(number), "pcapvision.decision": record.get("decision", "")})
        run_id = run.info.run_id
        figures = ((record.get("metrics") or {}).get("challenger") or {}).get("figures") or {}
        for key, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                client.log_metric(run_id, f"challenger_{key}", float(value))
        for key, value in (record.get("training") or {}).items():
            client.log_param(run_id, key, value)
        client.log_artifacts(run_id, os.fspath(staging / "model"), "model")
        self._registered_model()
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        mv = client.create_model_version(self.model_name, source=source, run_id=run_id,
                                         tags={"pcapvision.version": str(number)})
        client.set_registered_model_alias(self.model_name, "challenger", mv.version)
        record = {**record, "mlflow": {"tracking_uri": self.tracking_uri, "run_id": run_id, "model_name": self.model_name,
                                       "model_version": int(mv.version)}}
        target = super().publish(number, staging, record)
        client.log_artifact(run_id, os.fspath(target / "version.json"))
        client.set_terminated(run_id)
        log.info("%s: version %d registered as %s version %s (alias challenger)", self.uri, number, self.model_name, mv.version)
        return target

    def _mlflow_version(self, version: int) -> int:
        info = self.version(version).get("mlflow") or {}
        if "model_version" not in info:
            raise ParameterError(f"The 'version' parameter must be a version registered in MLflow. Got {version!r} instead.")
        return int(info["model_version"])

    def _switch(self, champion: int | None, previous: list[int], action: str, reason: str) -> dict[str, Any]:
        client = self.client
        if champion is not None:
            client.set_registered_model_alias(self.model_name, "champion", self._mlflow_version(champion))
        if previous:
            client.set_registered_model_alias(self.model_name, "previous-champion", self._mlflow_version(previous[-1]))
        else:
            from mlflow.exceptions import MlflowException

            try:
                client.delete_registered_model_alias(self.model_name, "previous-champion")
            except MlflowException:
                pass
        return super()._switch(champion, previous, action, reason)

    def write_run(self, record: dict[str, Any]) -> Path:
        path = super().write_run(record)
        run_id = ((record.get("mlflow") or {}).get("run_id")) or self._run_of(record.get("version"))
        if run_id:
            self.client.log_dict(run_id, record, "run_record.json")
        return path

    def _run_of(self, version: int | None) -> str | None:
        if version is None or version not in self.version_numbers():
            return None
        return (self.version(version).get("mlflow") or {}).get("run_id")


__all__ = ["MlflowRegistry", "is_mlflow_uri"]
