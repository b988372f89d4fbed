"""The ingest pipeline: capture files -> flows table (Parquet), streamed, labelled, in parallel.

:func:`ingest` finds the captures (:mod:`.discover`), hashes them and plans what to read (a
dataset part already made with the same parameters is kept), streams each capture's flows
(:mod:`.flowstream`: read, assemble, label) into one Parquet file or a dataset directory of one
part per capture (:mod:`.writer`), in worker processes with ``jobs > 1``, and returns an
:class:`~pcapvision.ingest.summary.IngestSummary`. A capture that fails never costs the others
their output.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pcapvision.console import progress
from pcapvision.errors import OutputWriteError, ParameterError, PcapvisionError
from pcapvision.ingest.discover import find_captures, input_failures
from pcapvision.ingest.flowschema import STAGE
from pcapvision.ingest.flowstream import iter_flow_tables, untraced_heap
from pcapvision.ingest.labels import Labeler
from pcapvision.ingest.options import IngestOptions, ingest_params, part_identity
from pcapvision.ingest.packets import PacketBatch
from pcapvision.ingest.summary import CaptureStats, IngestSummary
from pcapvision.ingest.writer import FlowsWriter, row_groups
from pcapvision.io import PARQUET_COMPRESSION, make_metadata, metadata_from_schema, printable, sha256_file
from pcapvision.outputs import output_lock, remove_stale_temporaries, remove_stale_temporaries_in
from pcapvision.validation import check_positive_int

__all__ = ["ingest", "output_guard"]

log = logging.getLogger(__name__)

# What bad input raises while a capture is read (a failed file, exit code 1); anything else is a
# bug in pcapvision (an internal error, exit code 3, traceback shown).
INPUT_ERRORS = (PcapvisionError, OSError, EOFError)


@dataclass
class _Task:
    path: str
    source_sha256: str
    part_path: str  # the dataset part, or a temporary part for a worker's share of a single file
    compression: str


@dataclass
class _Result:
    stats: CaptureStats
    error: str | None = None
    traceback: str | None = None  # set for an internal error (a bug), shown to the user


def _one_line(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {exc.strerror or text}"
    return text


def _reason(exc: BaseException, path: str) -> str:
    """The one-line message of ``exc`` without a leading ``path: `` (the summary adds it)."""
    text = _one_line(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _consume_capture(task: _Task, options: IngestOptions, labeler: Labeler | None,
                     write: Callable[[pa.RecordBatch], None],
                     on_chunk: Callable[[PacketBatch], None] | None = None) -> _Result:
    """Stream one capture's flows into ``write``. Never raises for a bad capture: returns why."""
    stats = CaptureStats(printable(task.path), task.source_sha256)
    try:
        with untraced_heap():
            for batch in iter_flow_tables(task.path, options, labeler, source_sha256=task.source_sha256,
                                          stats=stats, on_chunk=on_chunk):
                write(batch)
        return _Result(stats)
    except OutputWriteError:
        raise  # the output cannot be written: not this capture's failure
    except INPUT_ERRORS as exc:
        log.debug("%s failed", task.path, exc_info=True)
        return _Result(stats, _reason(exc, task.path))
    except Exception as exc:  # a bug: reported as one, and it must not lose the other captures' output
        return _Result(stats, f"internal error ({type(exc).__name__}: {_reason(exc, task.path)})",
                       traceback.format_exc())


def _write_part(task: _Task, options: IngestOptions, labeler: Labeler | None, params: dict[str, Any],
                on_chunk: Callable[[PacketBatch], None] | None = None) -> _Result:
    """Ingest one capture into its own Parquet file (a dataset part), atomically."""
    writer = FlowsWriter(Path(task.part_path), task.compression)
    try:
        result = _consume_capture(task, options, labeler, writer.write, on_chunk)
        if result.error is None:
            writer.close(make_metadata(STAGE, params, source_file=printable(task.path), source_sha256=task.source_sha256,
                                       sources=[result.stats.to_dict()]))
            return result
    except OSError as exc:  # the output side: disk full, permissions
        result = _Result(CaptureStats(printable(task.path), task.source_sha256), _reason(exc, task.path))
    except BaseException:
        writer.abort()
        raise
    writer.abort()
    return result


def _is_dataset_output(output: Path) -> bool:
    return output.is_dir() or output.suffix.lower() != ".parquet"


def ingest(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: IngestOptions | None = None,
    *,
    labeler: Labeler | None = None,
    jobs: int = 1,
    quiet: bool = False,
    force: bool = False,
    lock: bool = True,
) -> IngestSummary:
    """Ingest captures into ``output``: one ``*.parquet`` file, or a dataset directory.

    A dataset directory holds one part per capture, ``<sha256[:16]>.parquet``; captures whose part
    exists with the same ingest parameters and labeler hash are skipped (unless ``force``), so
    re-running over a growing folder adds only new captures; a part made with other parameters or
    labels is re-ingested and atomically replaced. A capture that fails is reported in the summary and never costs the others their
    output. ``jobs`` worker processes read captures in parallel. A second ingest into the same
    output is refused (:class:`~pcapvision.errors.LockedError`) while this one runs; temporaries
    left beside (or in) the output by a killed ingest are removed first. ``lock=False`` is for the
    tasks of a distributed job writing parts of one dataset directory at once: the job holds the
    lock (:func:`output_guard`) and no task touches another's temporaries.
    """
    if not lock:
        return _ingest(paths, output, options, labeler=labeler, jobs=jobs, quiet=quiet, force=force)
    with output_guard(output):
        return _ingest(paths, output, options, labeler=labeler, jobs=jobs, quiet=quiet, force=force)


@contextlib.contextmanager
def output_guard(output: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of ingest output ``output`` and remove what a killed ingest left there."""
    target = Path(output)
    with output_lock(target, what="ingest into this output"):
        remove_stale_temporaries(target)
        if target.is_dir():
            remove_stale_temporaries_in(target)
        yield


def _ingest(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: IngestOptions | None,
    *,
    labeler: Labeler | None,
    jobs: int,
    quiet: bool,
    force: bool,
) -> IngestSummary:
    options = options or IngestOptions()
    jobs = check_positive_int("jobs", jobs)
    started = time.perf_counter()
    output = Path(output)
    dataset = _is_dataset_output(output)
    if output.exists() and not dataset and not output.is_file():
        raise ParameterError(f"{output}: output exists and is not a file")
    if dataset and output.exists() and not output.is_dir():
        raise ParameterError(f"{output}: output is neither a directory nor a *.parquet file")
    captures, unreadable = find_captures(paths)
    summary = IngestSummary(output=str(output))
    summary.files_failed.extend(input_failures(unreadable))
    params = ingest_params(options, labeler)
    parallel = jobs > 1 and len(captures) > 1
    # Workers' shares of a single output file: uncompressed temporary parts, merged in input order.
    parts_dir = output if dataset else (
        Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".parts", dir=_mkdir(output.parent)))
        if parallel else None)
    sink = None if dataset else FlowsWriter(output)
    try:
        tasks = _plan(captures, output, dataset, parts_dir, params, force, summary)
        if sink is not None and not parallel:
            def run_one(task: _Task, on_chunk: Callable[[PacketBatch], None]) -> _Result:
                result = _consume_capture(task, options, labeler, sink.write, on_chunk)
                sink.rollback() if result.error else sink.commit()
                return result

            results = _run_tasks(tasks, run_one, None, jobs, quiet)
        else:
            results = _run_tasks(tasks, lambda task, on_chunk: _write_part(task, options, labeler, params, on_chunk),
                                 functools.partial(_write_part, options=options, labeler=labeler, params=params),
                                 jobs, quiet)
        ok = []
        for task, result in zip(tasks, results):
            if result.error is None:
                summary.add(result.stats)
                ok.append((task, result))
            else:
                summary.files_failed.append((task.path, result.error))
                summary.internal_errors += result.traceback is not None
        if sink is not None:
            if ok:
                if parallel:
                    for task, _ in ok:
                        for batch in row_groups(Path(task.part_path)):
                            sink.write(batch)
                sink.close(make_metadata(STAGE, params, sources=[r.stats.to_dict() for _, r in ok]))
            else:
                sink.abort()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        if not dataset and parts_dir is not None:
            shutil.rmtree(parts_dir, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _plan(captures: list[Path], output: Path, dataset: bool, parts_dir: Path | None, params: dict[str, Any],
          force: bool, summary: IngestSummary) -> list[_Task]:
    """Hash the captures (the hash names parts, finds duplicates, seeds flow ids); the tasks left to run."""
    tasks: list[_Task] = []
    seen: dict[str, str] = {}
    for capture in captures:
        source = os.fspath(capture)
        try:
            sha = sha256_file(capture)
        except OSError as exc:
            summary.files_failed.append((source, _reason(exc, source)))
            log.error("%s: %s", source, _reason(exc, source))
            continue
        if sha in seen:
            log.info("%s: same content as %s, skipped", source, seen[sha])
            summary.files_skipped_already_ingested += 1
            continue
        seen[sha] = source
        part = (parts_dir or output.parent) / f"{sha[:16]}.parquet"
        if dataset and part.exists() and not force:
            if _part_is_current(part, source, params):
                summary.files_skipped_already_ingested += 1
                continue
            summary.files_reingested += 1
        tasks.append(_Task(source, sha, str(part), PARQUET_COMPRESSION if dataset else "none"))
    return tasks


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _part_is_current(part: Path, source: str, params: dict[str, Any]) -> bool:
    """Whether an existing dataset part was made from this capture with these parameters and
    labels (then it is kept); otherwise the capture is re-ingested and the part replaced."""
    try:
        recorded = metadata_from_schema(pq.read_schema(part)).get("params")
    except (OSError, pa.ArrowException, ValueError):
        log.warning("%s: part %s exists but is unreadable; re-ingesting", source, part.name)
        return False
    if not isinstance(recorded, dict) or part_identity(recorded) != part_identity(params):
        changed = sorted(k for k in set(part_identity(params)) | set(part_identity(recorded or {}))
                         if (recorded or {}).get(k) != params.get(k))
        log.warning("%s: part %s was made with other %s; re-ingesting", source, part.name,
                    "labels" if changed == ["labeler_sha256"] else f"parameters ({', '.join(changed)})")
        return False
    log.info("%s: already ingested (%s), skipped", source, part.name)
    return True


def _run_tasks(tasks: list[_Task], run_one: Callable[[_Task, Callable[[PacketBatch], None]], _Result],
               worker: Callable[[_Task], _Result] | None, jobs: int, quiet: bool) -> list[_Result]:
    """Run the tasks in this process (``run_one``) or in ``jobs`` worker processes (``worker``,
    picklable); results in task order, failures logged one line each."""
    total_bytes = sum(os.path.getsize(t.path) for t in tasks)
    results: list[_Result | None] = [None] * len(tasks)
    packets = 0
    with progress(total=total_bytes, desc="ingest", unit="B", unit_scale=True, unit_divisor=1000,
                  quiet=quiet) as bar:
        def report(done_files: int) -> None:
            bar.set_postfix(files=f"{done_files}/{len(tasks)}", packets=f"{packets:,}", refresh=False)

        def done(task: _Task, result: _Result) -> None:
            # Failures are reported as they happen, one line each, above the progress bar.
            if result.error is not None:
                with bar.external_write_mode(file=sys.stderr):
                    log.error("%s: %s", task.path, result.error)
                    if result.traceback is not None:
                        log.error("internal error, please report it with this traceback:\n%s",
                                  result.traceback.rstrip())
            else:
                log.debug("%s: %d packets, %d flows", task.path, result.stats.packets, result.stats.flows)

        if worker is None or jobs == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                size = os.path.getsize(task.path)
                shown = 0

                def on_chunk(batch: PacketBatch) -> None:
                    nonlocal packets, shown
                    packets += len(batch)
                    # Readers do not report bytes consumed: estimate from IP lengths.
                    step = min(size - shown, int(batch.ip_bytes.sum()) + 30 * len(batch))
                    shown += step
                    bar.update(step)
                    report(i)

                results[i] = run_one(task, on_chunk)
                done(task, results[i])
                bar.update(size - shown)
                report(i + 1)
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
                futures = {pool.submit(worker, task): i for i, task in enumerate(tasks)}
                try:
                    for finished, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                        i = futures[future]
                        results[i] = future.result()
                        done(tasks[i], results[i])
                        packets += results[i].stats.packets
                        bar.update(os.path.getsize(tasks[i].path))
                        report(finished)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
