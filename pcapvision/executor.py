"""Where the per-capture work runs: local processes, or a Dask cluster (``--executor dask``).

    >>> summary = ingest_captures(["captures/"], "out/flows", executor="dask")             # LocalCluster
    >>> summary = ingest_captures(["captures/"], "out/flows", executor="dask",
    ...                           scheduler="tcp://10.0.0.5:8786")                        # a running cluster

With Dask every capture is one task (:mod:`dask.bag`, one partition per capture) that runs the
ingest stage's own public :func:`pcapvision.ingest.ingest` on that capture into the shared
dataset directory: the part ``<sha256[:16]>.parquet`` is written atomically (temporary file,
then rename), so the table holds the same rows as with the local executor. When a worker dies
mid-task, Dask runs the task again elsewhere: the dead worker's temporary file is never visible
to readers, and the rename happens once per capture, so no row is lost or written twice. The
workers must see the captures and the output directory at the same paths (a shared file system
on a real cluster; see docs/scale-out.md).

The Dask packages are optional: ``pip install 'pcapvision[dask]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pcapvision.errors import ParameterError
from pcapvision.validation import check_choice, check_positive_int

log = logging.getLogger(__name__)

EXECUTORS = ("local", "dask")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler`` (``tcp://HOST:PORT``), or on a new
    ``LocalCluster`` of ``workers`` single-threaded worker processes when none is given."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError("--executor dask needs the Dask packages: pip install 'pcapvision[dask]'") from None
    if scheduler:
        with Client(scheduler, set_as_default=False) as client:
            yield client
        return
    workers = check_positive_int("jobs", workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


def _ingest_one(path: str, output: str, options: Any, labeler: Any, force: bool) -> dict[str, Any]:
    """One Dask task: ingest one capture into the dataset directory ``output``."""
    from pcapvision.ingest import ingest

    # The job holds the output's lock (ingest_captures); tasks write their own parts side by side.
    return ingest([path], output, options, labeler=labeler, jobs=1, quiet=True, force=force, lock=False).to_dict()


def _merge(output: str, parts: Sequence[Mapping[str, Any]]) -> Any:
    """One ``IngestSummary`` from the per-capture ones (counts added, counters and lists joined)."""
    from pcapvision.ingest import IngestSummary

    summary = IngestSummary(output=output)
    for f in fields(IngestSummary):
        if f.name in ("output", "seconds"):
            continue
        for part in parts:
            value, current = part.get(f.name), getattr(summary, f.name)
            if value is None:
                continue
            if isinstance(current, Counter):
                current.update(value)
            elif isinstance(current, list):
                current.extend(tuple(v) if isinstance(v, list) else v for v in value)
            else:
                setattr(summary, f.name, current + value)
    return summary


def ingest_captures(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: Any = None,
    *,
    labeler: Any = None,
    executor: str = "local",
    scheduler: str | None = None,
    jobs: int = 1,
    quiet: bool = False,
    force: bool = False,
) -> Any:
    """Ingest ``paths`` into ``output`` with the local executor (``jobs`` processes) or on Dask
    (one task per capture; ``output`` must be a dataset directory). Returns an ``IngestSummary``."""
    from pcapvision.ingest import find_captures, ingest, input_failures, output_guard

    check_choice("executor", executor, EXECUTORS)
    if executor == "local":
        if scheduler:
            raise ParameterError("--scheduler needs --executor dask")
        return ingest(list(paths), output, options, labeler=labeler, jobs=jobs, quiet=quiet, force=force)
    if Path(output).suffix.lower() == ".parquet":
        raise ParameterError(f"{os.fspath(output)}: with --executor dask the output must be a dataset directory "
                             "(one part per capture), not a single .parquet file")
    started = time.perf_counter()
    found, unreadable = find_captures(paths)
    captures = [os.fspath(c) for c in found]
    Path(output).mkdir(parents=True, exist_ok=True)
    import dask.bag as db

    with output_guard(output), dask_client(scheduler, jobs) as client:
        log.info("ingest: %d captures on Dask (%s)", len(captures), client.scheduler.address)
        bag = db.from_sequence(captures, npartitions=max(1, len(captures)))
        tasks = bag.map(_ingest_one, output=os.fspath(output), options=options, labeler=labeler, force=force)
        parts = client.compute(tasks).result()
    summary = _merge(os.fspath(output), parts)
    for path, reason in summary.files_failed:
        log.error("%s: %s", path, reason)
    summary.files_failed[:0] = input_failures(unreadable)
    summary.seconds = time.perf_counter() - started
    return summary


def image_captures(
    flows: str | os.PathLike[str],
    output: str | os.PathLike[str],
    representation: str = "payload",
    params: Mapping[str, Any] | None = None,
    *,
    executor: str = "local",
    scheduler: str | None = None,
    jobs: int = 1,
    **kwargs: Any,
) -> Any:
    """Render a flows table into an images table (see :func:`pcapvision.imaging.image_flows`,
    whose keyword arguments pass through). On Dask each Parquet file (one per capture) is
    rendered by one task; deduplication and the summary are done here, over all files, so the
    table equals the local executor's. Returns an ``ImagingSummary``."""
    from pcapvision.imaging import image_flows

    check_choice("executor", executor, EXECUTORS)
    if executor == "local":
        if scheduler:
            raise ParameterError("--scheduler needs --executor dask")
        return image_flows(flows, output, representation, params, **kwargs)
    import dask.bag as db

    def map_files(function: Any, paths: list[str]) -> list[Any]:
        log.info("image: %d flows files on Dask (%s)", len(paths), client.scheduler.address)
        bag = db.from_sequence(paths, npartitions=max(1, len(paths))).map(function)
        return client.compute(bag).result()

    with dask_client(scheduler, jobs) as client:
        return image_flows(flows, output, representation, params, map_files=map_files, **kwargs)
