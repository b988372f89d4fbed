"""Retrain stage: scheduled retraining with a champion/challenger registry, gates, drift and a lock.

Public API::

    retrain(registry, data=None, *, images=None, labels=None, config=None, training=None) -> run record
    load_config(path) -> RetrainConfig; RetrainConfig, Gates, DriftLimits
    open_registry(uri) -> DirectoryRegistry (.versions(), .version(n), .champion(), .promote(n), .rollback(),
                          .model_dir(n), .reference_path(n))
    EXIT_OK, EXIT_FAILED, EXIT_INTERNAL, EXIT_LOCKED, EXIT_REJECTED   # 0, 1, 3, 4, 5 for schedulers
    list_versions(uri) / format_versions(rows) / show_version(uri, n) / promote(uri, n) / rollback(uri)
    champion_paths(uri) -> (model_dir, reference.npz or None)   # for predict --registry
    monitoring_line(record) -> str                        # the one JSON line for monitoring
"""

from pcapvision.retrain.config import DriftLimits, Gates, RetrainConfig, load_config
from pcapvision.retrain.job import EXIT_FAILED, EXIT_INTERNAL, EXIT_LOCKED, EXIT_OK, EXIT_REJECTED, open_registry, retrain
from pcapvision.retrain.models import (
    champion_paths,
    format_versions,
    list_versions,
    monitoring_line,
    promote,
    rollback,
    show_version,
)
from pcapvision.retrain.registry import DirectoryRegistry

__all__ = [
    "EXIT_FAILED", "EXIT_INTERNAL", "EXIT_LOCKED", "EXIT_OK", "EXIT_REJECTED", "DirectoryRegistry", "DriftLimits", "Gates",
    "RetrainConfig", "champion_paths", "format_versions", "list_versions", "load_config", "monitoring_line",
    "open_registry", "promote", "retrain", "rollback", "show_version",
]
