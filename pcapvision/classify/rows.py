"""Which rows of an images table are test rows for a model, and where its training rows are.

:func:`resolve_test_rows` is the one place that decides it; evaluation, the robustness suite,
retraining and comparisons all call it. A row whose ``flow_id`` or ``image_sha256`` appears in the
model's split manifest as ``train`` or ``validation`` is never scored, whatever table it comes
from; on the table the model was trained on (same content hash) only the stored ``test`` split
is scored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pcapvision.classify.artifact import SPLIT_MANIFEST_FILE, model_directory, read_split_manifest
from pcapvision.classify.datasets import ImagesDataset, load_images_dataset
from pcapvision.errors import PcapvisionError

log = logging.getLogger(__name__)

SEEN_SPLITS = ("train", "validation")


@dataclass
class TestRows:
    """The answer of :func:`resolve_test_rows` for one model and one table.

    ``test``: row indices to score. ``train`` / ``validation``: rows of the table that the manifest
    puts in those splits (never scored; ``train`` feeds baselines and defences). ``n_excluded``:
    how many rows were left out because the model saw them, per split. ``rule``: one sentence
    for reports. ``same_table``: the table is the one the model was trained on.
    """

    test: np.ndarray
    train: np.ndarray
    validation: np.ndarray
    rule: str
    same_table: bool
    n_excluded: dict[str, int] = field(default_factory=dict)

    @property
    def n_excluded_total(self) -> int:
        return int(sum(self.n_excluded.values()))

    def describe(self) -> dict[str, Any]:
        """The record written into metrics.json / robustness.json."""
        return {"rule": self.rule, "n_test": int(len(self.test)), "same_table_as_training": self.same_table,
                "n_excluded_seen_in_training": {k: int(v) for k, v in self.n_excluded.items()}}


def resolve_test_rows(model_dir: str | os.PathLike[str], metadata: Mapping[str, Any], images: ImagesDataset) -> TestRows:
    """Decide which rows of ``images`` are test rows for the model in ``model_dir``.

    Rows matching (by ``flow_id`` or ``image_sha256``) a manifest row of the ``train`` or
    ``validation`` split are never test rows; they are counted per split and a warning says so.
    When ``images`` is the training table (its content hash equals the model's ``data_sha256``)
    the test rows are exactly the manifest's ``test`` split; otherwise every remaining row is.
    Raises :class:`ModelFormatError` when the model has no split manifest.
    """
    manifest = read_split_manifest(model_dir, metadata)  # hash-checked against metadata.json
    flow_id = np.asarray(images.flow_id).astype(str)
    sha = np.asarray(images.image_sha256).astype(str)
    member: dict[str, np.ndarray] = {}
    for name in ("train", "validation", "test"):
        rows = manifest.loc[manifest["split"] == name]
        member[name] = (np.isin(flow_id, rows["flow_id"].astype(str).to_numpy())
                        | np.isin(sha, rows["image_sha256"].astype(str).to_numpy()))
    seen = member["train"] | member["validation"]
    same = images.data_sha256 == metadata.get("data_sha256")
    if same:
        test = member["test"] & ~seen
        rule = "the model's stored test split (this is the table it was trained on)"
    else:
        test = ~seen
        rule = "every row not in the model's training or validation split (a table other than the training table)"
    n_excluded = {"train": int(member["train"].sum()), "validation": int((member["validation"] & ~member["train"]).sum())}
    if not same and (n_excluded["train"] or n_excluded["validation"]):
        log.warning("%s: %d rows were in the model's training split and %d in its validation split; they are not "
                    "scored (%d test rows remain)", images.path, n_excluded["train"], n_excluded["validation"],
                    int(test.sum()))
    return TestRows(test=np.flatnonzero(test), train=np.flatnonzero(member["train"]),
                    validation=np.flatnonzero(member["validation"] & ~member["train"]), rule=rule, same_table=same,
                    n_excluded=n_excluded)


def training_table_record(path: str | os.PathLike[str]) -> str:
    """How a model records its training table's location: the absolute path."""
    return os.fspath(Path(path).resolve())


def find_training_table(model_dir: str | os.PathLike[str], metadata: Mapping[str, Any],
                        candidates: tuple[ImagesDataset | None, ...] = ()) -> tuple[ImagesDataset | None, str | None]:
    """The model's training table, found by content hash: ``(dataset, None)`` or ``(None, why not)``.

    Looks at the ``candidates`` already loaded (e.g. the table being evaluated), then at the
    recorded path (absolute; an older relative record is tried against the model directory's
    parent too). A table counts only when its content hash equals the model's ``data_sha256``.
    """
    want = metadata.get("data_sha256")
    info = metadata.get("dataset") or {}
    target = metadata.get("target", "label")
    for data in candidates:
        if data is not None and data.data_sha256 == want:
            return data, None
    recorded = info.get("path")
    if not recorded:
        return None, "the model records no training table"
    places = [Path(recorded)]
    if not Path(recorded).is_absolute():
        places.append(model_directory(model_dir).parent / recorded)
    reasons = []
    for place in places:
        if not place.is_file() and not place.is_dir():
            continue
        try:
            data = load_images_dataset(place, target=target)
        except PcapvisionError as exc:
            reasons.append(f"{place} unreadable ({exc})")
            continue
        if data.data_sha256 == want:
            return data, None
        reasons.append(f"{place} has changed since training (content hash differs)")
    return None, "; ".join(reasons) or f"the training table is not at its recorded path {recorded}"


__all__ = ["SPLIT_MANIFEST_FILE", "TestRows", "find_training_table", "model_directory", "read_split_manifest",
           "resolve_test_rows", "training_table_record"]
