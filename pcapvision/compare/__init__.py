"""Compare stage: which representation and architecture win on the user's own data, beside baselines.

Public API::

    compare(source, output, *, reprs=DEFAULT_REPRS, archs=DEFAULT_ARCHS, seeds=3, epochs=12,
            target="label", group_by="capture", split_seed=0, quiet=False) -> dict   # the compare.json record
    DEFAULT_REPRS, DEFAULT_ARCHS

Writes ``OUTPUT/leaderboard.csv``, ``OUTPUT/leaderboard.html`` and ``OUTPUT/compare.json``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcapvision.compare.grid import (
    DEFAULT_ARCHS,
    DEFAULT_EPOCHS,
    DEFAULT_REPRS,
    DEFAULT_SEEDS,
    check_compare_params,
    load_compare_data,
    make_split,
    run_grid,
)
from pcapvision.compare.leaderboard import aggregate, verdict, write_leaderboard

log = logging.getLogger(__name__)


def compare(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    reprs: Sequence[str] = DEFAULT_REPRS,
    archs: Sequence[str] = DEFAULT_ARCHS,
    seeds: int = DEFAULT_SEEDS,
    epochs: int = DEFAULT_EPOCHS,
    target: str = "label",
    group_by: str = "capture",
    split_seed: int = 0,
    positive_class: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train every (representation x architecture) with ``seeds`` seeds on one shared split; write the leaderboard.

    ``source``: a flows table (every representation is rendered from it, and the per-flow
    statistics reference runs) or an images table (its one representation; no reference).
    ``positive_class``: the class whose F1 and false-positive rate are reported for a two-class
    target (default: the class named ``malicious``; otherwise it must be given).
    """
    from pcapvision.classify import resolve_positive_class
    from pcapvision.imaging import dataset_sha256
    from pcapvision.io import library_versions, write_json_atomic

    params = check_compare_params(reprs, archs, seeds, epochs, target, group_by, split_seed, positive_class)
    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data, info = load_compare_data(source, params)
    params["positive_class"] = resolve_positive_class(data.class_names, params["positive_class"])
    split = make_split(data, params["split_seed"])
    results = run_grid(data, params, quiet=quiet)
    table = aggregate(results)
    record: dict[str, Any] = {
        "stage": "compare", "params": params, "input": {"path": os.fspath(source), "sha256": dataset_sha256(source), **info},
        "class_names": data.class_names, "split": split, "notes": data.notes,
        "rows_per_representation": data.rows_per_representation, "library_versions": library_versions(),
    }
    record["verdict"] = verdict(table)
    record["leaderboard"] = table.to_dict(orient="records")
    record["runs"] = results
    record["seconds"] = round(time.perf_counter() - started, 1)
    write_leaderboard(out, table, record)
    write_json_atomic(out / "compare.json", record)
    log.info("%s", record["verdict"]["text"])
    return record


__all__ = ["DEFAULT_ARCHS", "DEFAULT_REPRS", "compare"]
