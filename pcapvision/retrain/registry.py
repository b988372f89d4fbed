"""The model registry on disk: numbered versions, the ``champion`` alias, the job's state.

Layout of a registry directory::

    REG/aliases.json        {"champion": N, "previous": [...], "history": [...]}: switched by write + rename
    REG/versions/NNNN/      model/ (model directory), version.json (metrics, gates, data manifest),
                            reference.npz (training embeddings for the in-distribution check)
    REG/versions/.staging-* a version being built (hidden; a killed run's leftovers are removed)
    REG/holdout.json        the versioned holdout (see holdout.py)
    REG/state.json          groups seen and the label rules' hash at the end of the last complete run
    REG/data/               flows/ (one part per capture) and images.parquet
    REG/runs/               one run record per run (JSON)
    REG/.lock               held while a job runs

A version directory appears only complete (built under ``.staging-*``, then renamed), and the
champion changes only by replacing ``aliases.json``, so a crash at any point leaves the champion
as it was and no half-written version visible.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pcapvision.errors import DataContractError, InputNotFoundError, ParameterError
from pcapvision.io import write_json_atomic

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
VERSION_FILE = "version.json"
MODEL_SUBDIR = "model"
STAGING_PREFIX = ".staging-"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataContractError(f"{path}: corrupt registry file ({exc.__class__.__name__}: {exc})") from exc


class DirectoryRegistry:
    """A registry kept in a directory (created on first use by the retrain job)."""

    kind = "directory"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DirectoryRegistry({os.fspath(self.root)!r})"

    # --- paths ----------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return os.fspath(self.root)

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / f"{version:04d}"

    def model_dir(self, version: int) -> Path:
        return self.version_dir(version) / MODEL_SUBDIR

    def reference_path(self, version: int) -> Path:
        return self.version_dir(version) / "reference.npz"

    def check_exists(self) -> None:
        if not (self.root / ALIASES_FILE).is_file() and not self.versions_dir.is_dir():
            raise InputNotFoundError(f"{self.root}: not a pcapvision model registry (no versions yet)")

    # --- versions -------------------------------------------------------------------------------
    def version_numbers(self) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.versions_dir.iterdir() if p.is_dir() and p.name.isdigit()
                      and (p / VERSION_FILE).is_file())

    def version(self, version: int) -> dict[str, Any]:
        """The record of a published version (``version.json``)."""
        path = self.version_dir(version) / VERSION_FILE
        record = _read_json(path, None)
        if record is None:
            known = ", ".join(map(str, self.version_numbers())) or "none"
            raise ParameterError(f"The 'version' parameter must be a version of {self.root} ({known}). Got {version!r} instead.")
        return record

    def versions(self) -> list[dict[str, Any]]:
        return [self.version(n) for n in self.version_numbers()]

    def clean_staging(self) -> list[str]:
        """Remove versions left half-built by a killed run (call with the job lock held)."""
        removed = []
        if self.versions_dir.is_dir():
            for p in self.versions_dir.iterdir():
                if p.name.startswith(STAGING_PREFIX):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p.name)
        if removed:
            log.warning("%s: removed %d half-built version(s) left by an interrupted run: %s", self.root, len(removed),
                        ", ".join(removed))
        return removed

    @contextmanager
    def new_version(self) -> Iterator[tuple[int, Path]]:
        """Yield ``(number, staging_dir)``; build the version there and call :meth:`publish`.

        When the block raises (or the process dies), the staging directory never becomes visible.
        """
        number = max(self.version_numbers(), default=0) + 1
        staging = self.versions_dir / f"{STAGING_PREFIX}{number:04d}-{os.getpid()}"
        staging.mkdir(parents=True)
        try:
            yield number, staging
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def publish(self, number: int, staging: Path, record: dict[str, Any]) -> Path:
        """Write ``version.json`` into ``staging`` and rename it to ``versions/NNNN`` (atomic)."""
        write_json_atomic(staging / VERSION_FILE, {"version": number, **record})
        target = self.version_dir(number)
        os.rename(staging, target)
        log.info("%s: published version %d", self.root, number)
        return target

    # --- aliases --------------------------------------------------------------------------------
    def aliases(self) -> dict[str, Any]:
        return _read_json(self.root / ALIASES_FILE, {"champion": None, "previous": [], "history": []})

    def champion(self) -> int | None:
        return self.aliases().get("champion")

    def _switch(self, champion: int | None, previous: list[int], action: str, reason: str) -> dict[str, Any]:
        aliases = self.aliases()
        event = {"at": utc_now(), "action": action, "from": aliases.get("champion"), "to": champion, "reason": reason}
        new = {"champion": champion, "previous": previous, "history": [*aliases.get("history", []), event]}
        write_json_atomic(self.root / ALIASES_FILE, new)
        log.info("%s: champion %s -> %s (%s)", self.root, aliases.get("champion"), champion, action)
        return new

    def promote(self, version: int, reason: str = "manual") -> dict[str, Any]:
        """Make ``version`` the champion; the current one becomes the previous champion."""
        self.version(version)  # exists?
        aliases = self.aliases()
        current = aliases.get("champion")
        if current == version:
            return aliases
        previous = [v for v in aliases.get("previous", []) if v != version]
        if current is not None:
            previous.append(current)
        return self._switch(version, previous, "promote", reason)

    def rollback(self, reason: str = "manual") -> dict[str, Any]:
        """Make the previous champion the champion again."""
        aliases = self.aliases()
        previous = list(aliases.get("previous", []))
        if not previous:
            raise ParameterError(f"{self.root}: no previous champion to roll back to")
        return self._switch(previous[-1], previous[:-1], "rollback", reason)

    # --- job state ------------------------------------------------------------------------------
    def read_state(self, name: str) -> dict[str, Any]:
        return _read_json(self.root / f"{name}.json", {})

    def write_state(self, name: str, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / f"{name}.json", state)

    def write_run(self, record: dict[str, Any]) -> Path:
        return write_json_atomic(self.runs_dir / f"{record['run_id']}.json", record)


__all__ = ["ALIASES_FILE", "DirectoryRegistry", "MODEL_SUBDIR", "VERSION_FILE", "utc_now"]
