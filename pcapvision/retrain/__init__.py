"""Retrain stage: scheduled retraining with a champion/challenger registry, gates, drift and a lock.

Public API::

    retrain(registry, data=None, *, images=None, labels=None, config=None, training=None) -> run record
    load_config(path) -> RetrainConfig; RetrainConfig, Gates, DriftLimits
    open_registry(uri) -> DirectoryRegistry (.versions(), .version(n), .champion(), .promote(n), .rollback(),
                          .model_dir(n), .reference_path(n))
    EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_LOCKED      # exit codes for schedulers
    format_versions(registry) -> str                      # the 'models list' table
"""

from pcapvision.retrain.config import DriftLimits, Gates, RetrainConfig, load_config
from pcapvision.retrain.job import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_REJECTED, open_registry, retrain
from pcapvision.retrain.registry import DirectoryRegistry

__all__ = [
    "EXIT_FAILED", "EXIT_LOCKED", "EXIT_OK", "EXIT_REJECTED", "DirectoryRegistry", "DriftLimits", "Gates",
    "RetrainConfig", "load_config", "open_registry", "retrain",
]
