"""Flows table -> images table: render, deduplicate, write with provenance; and the one loader.

Images table (one row per kept flow), Parquet, zstd:

=================  ======================  ===============================================
column             type                    meaning
=================  ======================  ===============================================
``flow_id``        string                  the flow's id in the flows table
``label``          string, null            class label
``family``         string, null            finer class
``split_group``    string                  unit that must not straddle train/test: the
                                           capture (``source_sha256``, else ``source_file``)
                                           or, with ``group_by="server"``, ``dst_ip``
``image_sha256``   string                  SHA-256 hex of the 784 image bytes
``payload_length`` int64, null             bytes in the flow's ``payload`` column
``source_file``    string, null            capture the flow came from
``image``          fixed_size_binary(784)  28 x 28 uint8 pixels, row-major
=================  ======================  ===============================================

``fixed_size_binary(784)`` rather than Arrow's ``fixed_shape_tensor``: it reads back from
Parquet into numpy ~30x faster (see BENCHMARKS.md). Schema metadata ``pcapvision`` holds the
representation, its parameters, the input's hash and the imaging summary.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pcapvision.console import progress
from pcapvision.errors import DataContractError
from pcapvision.imaging.masking import MaskingStats, mask_tls_names
from pcapvision.imaging.representations import IMAGE_PIXELS, IMAGE_SIDE, Representation, get_representation
from pcapvision.io import (
    make_metadata,
    metadata_from_schema,
    open_parquet,
    parquet_errors,
    parquet_files,
    read_parquet_schema,
    read_parquet_table,
    sha256_file,
    with_metadata,
    write_json_atomic,
    write_parquet_atomic,
)
from pcapvision.validation import check_choice, check_positive_int

log = logging.getLogger(__name__)

STAGE = "image"
IMAGE_TYPE = pa.binary(IMAGE_PIXELS)
IMAGES_SCHEMA = pa.schema([
    ("flow_id", pa.string()),
    ("label", pa.string()),
    ("family", pa.string()),
    ("split_group", pa.string()),
    ("image_sha256", pa.string()),
    ("payload_length", pa.int64()),
    ("source_file", pa.string()),
    ("image", IMAGE_TYPE),
])
GROUP_BY = ("capture", "server")
TARGETS = ("label", "family")
CONFLICT_POLICY = (
    "an image that occurs with more than one (label, family) is dropped entirely: no row of it is "
    "kept, since no model can tell those rows apart"
)
_READ_BATCH_ROWS = 65536
_EXAMPLES = 5


@dataclass
class ImagingSummary:
    """What one imaging run did; stored in the schema metadata and as ``<output>.summary.json``."""

    representation: str
    params: dict[str, Any]
    dedup: bool
    mask_tls_sni: bool
    group_by: str
    rows_in: int = 0
    rows_rendered: int = 0
    rows_out: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # rows not rendered, by reason
    duplicates: int = 0  # rows repeating an earlier row's image with the same (label, family)
    duplicates_across_groups: int = 0  # of those, rows whose split_group differs from the first's
    duplicates_removed: int = 0
    conflicting_images: int = 0  # distinct images seen with more than one (label, family)
    conflicting_rows: int = 0
    conflicting_rows_dropped: int = 0
    conflict_examples: list[dict[str, Any]] = field(default_factory=list)
    conflict_policy: str = CONFLICT_POLICY
    class_counts: dict[str, int] = field(default_factory=dict)  # label -> rows out
    family_counts: dict[str, int] = field(default_factory=dict)
    masking: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A few human-readable lines for the terminal."""
        lines = [
            f"representation: {self.representation} {self.params}",
            f"rows in: {self.rows_in}, rendered: {self.rows_rendered}, out: {self.rows_out}",
            "skipped: " + (", ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "none"),
            f"duplicates: {self.duplicates} ({self.duplicates_across_groups} across split groups), "
            f"removed: {self.duplicates_removed}",
            f"conflicting images: {self.conflicting_images} ({self.conflicting_rows} rows), "
            f"rows dropped: {self.conflicting_rows_dropped}",
        ]
        for example in self.conflict_examples[:3]:
            lines.append(f"  conflict {example['image_sha256'][:12]}: {example['labels']} e.g. flows {example['flow_ids']}")
        lines.append("classes: " + (", ".join(f"{k}: {v}" for k, v in self.class_counts.items()) or "none"))
        if self.masking is not None and "note" in self.masking:
            lines.append(f"TLS name masking: {self.masking['note']}")
        elif self.masking is not None:
            m = self.masking
            lines.append(
                f"TLS name masking: {m['flows_masked']} of {m['flows_checked']} TLS-looking flows masked, "
                f"{m['bytes_zeroed']} bytes zeroed"
            )
        return "\n".join(lines)


@dataclass
class ImageSetMeta:
    """What :func:`load_images` knows besides the pixels."""

    schema: dict[str, Any]  # the stored pcapvision metadata
    columns: pd.DataFrame  # the non-image columns, row-aligned with x
    representation: str | None
    params: dict[str, Any]


# --- rendering -----------------------------------------------------------------------------------


def _needed_columns(rep: Representation, names: Iterable[str], *, mask: bool, group_by: str, where: str) -> list[str]:
    """Columns to read, checked against the contract; raises DataContractError naming what is missing."""
    names = list(names)
    required = ["flow_id", *rep.required_columns()]
    if group_by == "server":
        required.append("dst_ip")
    missing = [c for c in required if c not in names]
    if group_by == "capture" and not ({"source_sha256", "source_file"} & set(names)):
        missing.append("source_sha256 (or source_file)")
    if missing:
        raise DataContractError(
            f"{where}: missing column(s) {', '.join(missing)} needed by representation {rep.name!r}"
            + (f" with group_by={group_by!r}" if group_by == "server" else "")
        )
    optional = ["label", "family", "source_file", "source_sha256", "payload"]
    if mask and rep.needs_payload:
        optional += ["tls_sni", "dst2src_payload"]
    wanted = list(dict.fromkeys(required + [c for c in optional if c in names]))
    return wanted


def _string_column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    if name not in batch.schema.names:
        return pa.nulls(batch.num_rows, pa.string())
    col = batch.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col if col.type == pa.string() else col.cast(pa.string())


def _split_groups(batch: pa.RecordBatch | pa.Table, group_by: str) -> pa.Array:
    if group_by == "server":
        return _string_column(batch, "dst_ip")
    return pc.coalesce(_string_column(batch, "source_sha256"), _string_column(batch, "source_file"))


@dataclass
class _Part:
    """The rendered valid rows of one batch of flows."""

    images: np.ndarray  # uint8 (k, 784)
    columns: dict[str, pa.Array]  # the non-image columns, in IMAGES_SCHEMA order


def _render_batch(
    batch: pa.RecordBatch | pa.Table, rep: Representation, *, mask: bool, group_by: str,
    summary: ImagingSummary, masking: MaskingStats,
) -> _Part:
    if mask and rep.needs_payload:
        column = rep.params["column"]
        masked, stats = mask_tls_names(batch, column)
        masking.add(stats)
        batch = batch.set_column(batch.schema.get_field_index(column), column, masked)
    images, valid, reason = rep.render(batch)
    summary.rows_in += batch.num_rows
    skipped = int(batch.num_rows - valid.sum())
    if skipped:
        summary.skipped[reason] = summary.skipped.get(reason, 0) + skipped
    keep = pa.array(valid)
    if "payload" in batch.schema.names:
        payload_length = pc.fill_null(pc.binary_length(batch.column("payload")), 0).cast(pa.int64())
    else:
        payload_length = pa.nulls(batch.num_rows, pa.int64())
    if isinstance(payload_length, pa.ChunkedArray):
        payload_length = payload_length.combine_chunks()
    flat = np.ascontiguousarray(images.reshape(-1, IMAGE_PIXELS)[valid])
    columns = {
        "flow_id": _string_column(batch, "flow_id").filter(keep),
        "label": _string_column(batch, "label").filter(keep),
        "family": _string_column(batch, "family").filter(keep),
        "split_group": _split_groups(batch, group_by).filter(keep),
        "image_sha256": pa.array(_sha256_rows(flat), pa.string()),
        "payload_length": payload_length.filter(keep),
        "source_file": _string_column(batch, "source_file").filter(keep),
    }
    return _Part(flat, columns)


def _sha256_rows(images: np.ndarray) -> list[str]:
    view = memoryview(images.reshape(-1))
    width = images.shape[1] if images.ndim == 2 else IMAGE_PIXELS
    return [hashlib.sha256(view[i : i + width]).hexdigest() for i in range(0, len(view), width)]


def _assemble(parts: list[_Part], summary: ImagingSummary) -> pa.Table:
    """One table from the rendered parts, deduplicated per ``summary.dedup``; fills the summary."""
    images = np.concatenate([p.images for p in parts]) if parts else np.zeros((0, IMAGE_PIXELS), np.uint8)
    columns = {
        name: pa.concat_arrays([p.columns[name] for p in parts]) if parts else pa.array([], IMAGES_SCHEMA.field(name).type)
        for name in IMAGES_SCHEMA.names if name != "image"
    }
    summary.rows_rendered = len(images)
    keep = _deduplicate(columns, summary)
    if summary.dedup and not keep.all():
        images = images[keep]
        mask = pa.array(keep)
        columns = {name: col.filter(mask) for name, col in columns.items()}
    image_array = pa.FixedSizeBinaryArray.from_buffers(IMAGE_TYPE, len(images), [None, pa.py_buffer(np.ascontiguousarray(images))])
    table = pa.table({**columns, "image": image_array}, schema=IMAGES_SCHEMA)
    summary.rows_out = table.num_rows
    summary.class_counts = _counts(table.column("label"))
    summary.family_counts = _counts(table.column("family"))
    return table


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(column.fill_null(""))
    return dict(sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def _codes(column: pa.Array) -> np.ndarray:
    """Integer code of each value (equal values, and all nulls, share a code)."""
    encoded = column.dictionary_encode()
    return encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False).astype(np.int64)


def _deduplicate(columns: Mapping[str, pa.Array], summary: ImagingSummary) -> np.ndarray:
    """Rows to keep: the first row of each image, none of an image with conflicting labels."""
    n = len(columns["image_sha256"])
    if n == 0:
        return np.ones(0, dtype=bool)
    image = _codes(columns["image_sha256"])
    family = _codes(columns["family"])
    target = _codes(columns["label"]) * (int(family.max()) + 1) + family  # one code per (label, family)
    group = _codes(columns["split_group"])
    _, first_row = np.unique(image, return_index=True)  # image codes are 0..k-1 in order of appearance
    first = np.zeros(n, dtype=bool)
    first[first_row] = True
    pairs = np.unique(image * (int(target.max()) + 1) + target)
    targets_per_image = np.bincount(pairs // (int(target.max()) + 1), minlength=len(first_row))
    conflicting = targets_per_image[image] > 1
    duplicate = ~first & ~conflicting
    summary.duplicates = int(duplicate.sum())
    summary.duplicates_across_groups = int((duplicate & (group != group[first_row[image]])).sum())
    summary.conflicting_rows = int(conflicting.sum())
    summary.conflicting_images = int((targets_per_image > 1).sum())
    if summary.conflicting_images:
        shas = columns["image_sha256"].to_numpy(zero_copy_only=False)
        labels = columns["label"].fill_null("<null>").to_numpy(zero_copy_only=False)
        families = columns["family"].fill_null("<null>").to_numpy(zero_copy_only=False)
        flow_ids = columns["flow_id"].to_numpy(zero_copy_only=False)
        for code in np.flatnonzero(targets_per_image > 1)[:_EXAMPLES]:
            rows = np.flatnonzero(image == code)
            summary.conflict_examples.append({
                "image_sha256": shas[rows[0]],
                "labels": sorted({f"{labels[r]}/{families[r]}" for r in rows}),
                "flow_ids": [str(f) for f in flow_ids[rows[:4]]],
            })
    if not summary.dedup:
        return np.ones(n, dtype=bool)
    summary.duplicates_removed = summary.duplicates
    summary.conflicting_rows_dropped = summary.conflicting_rows
    return first & ~conflicting


def _image_metadata(rep: Representation, summary: ImagingSummary, **extra: Any) -> dict[str, Any]:
    params = {"representation": rep.name, "representation_params": rep.params, "dedup": summary.dedup,
              "mask_tls_sni": summary.mask_tls_sni, "group_by": summary.group_by}
    return make_metadata(
        STAGE, params,
        representation=rep.name,
        representation_params=rep.params,
        pixel_meaning=rep.summary,
        image_shape=[IMAGE_SIDE, IMAGE_SIDE],
        image_encoding="fixed_size_binary(784): 28x28 uint8 row-major; load_images divides by 255",
        summary=summary.to_dict(),
        **extra,
    )


def _render_file(path: str, rep: Representation, mask: bool, group_by: str) -> tuple[list[_Part], ImagingSummary, MaskingStats]:
    """Render one flows file on its own (one task of a distributed executor): its parts, in
    order, and its share of the summary and masking counts."""
    summary = ImagingSummary(rep.name, dict(rep.params), dedup=False, mask_tls_sni=mask, group_by=group_by)
    masking = MaskingStats()
    parquet = open_parquet(path)
    columns = _needed_columns(rep, parquet.schema_arrow.names, mask=mask, group_by=group_by, where=path)
    with parquet_errors(path):
        parts = [_render_batch(b, rep, mask=mask, group_by=group_by, summary=summary, masking=masking)
                 for b in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, columns=columns)]
    return parts, summary, masking


def _render_all(
    batches: Iterable[pa.RecordBatch | pa.Table], rep: Representation, *, dedup: bool, mask: bool, group_by: str,
    rendered: Iterable[tuple[list[_Part], ImagingSummary, MaskingStats]] = (),
) -> tuple[pa.Table, ImagingSummary]:
    """Render ``batches`` (or take the files already ``rendered`` by :func:`_render_file`) and
    assemble one deduplicated table."""
    summary = ImagingSummary(rep.name, dict(rep.params), dedup=dedup, mask_tls_sni=mask, group_by=group_by)
    masking = MaskingStats()
    parts = [_render_batch(b, rep, mask=mask, group_by=group_by, summary=summary, masking=masking) for b in batches]
    for file_parts, file_summary, file_masking in rendered:
        parts.extend(file_parts)
        summary.rows_in += file_summary.rows_in
        for reason, count in file_summary.skipped.items():
            summary.skipped[reason] = summary.skipped.get(reason, 0) + count
        masking.add(file_masking)
    if mask:
        summary.masking = masking.to_dict()
        if not rep.needs_payload:
            summary.masking["note"] = f"representation {rep.name!r} draws no payload bytes: masking has no effect"
    table = _assemble(parts, summary)
    for reason, count in summary.skipped.items():
        log.info("skipped %d of %d flows: %s", count, summary.rows_in, reason)
    if summary.conflicting_images:
        log.warning("%d images carry more than one label (%d rows)%s", summary.conflicting_images,
                    summary.conflicting_rows, ": all dropped" if dedup else "")
    return table, summary


def _check_options(representation: str, params: Mapping[str, Any] | None, dedup: Any, mask: Any, group_by: Any) -> Representation:
    rep = get_representation(representation, params)
    check_choice("dedup", dedup, (True, False))
    check_choice("mask_tls_sni", mask, (True, False))
    check_choice("group_by", group_by, GROUP_BY)
    return rep


def render_flows(
    flows: pa.Table,
    representation: str = "payload",
    params: Mapping[str, Any] | None = None,
    *,
    dedup: bool = True,
    mask_tls_sni: bool = False,
    group_by: str = "capture",
) -> tuple[pa.Table, ImagingSummary]:
    """Render an in-memory flows table into an images table (schema metadata included).

    For prediction on new flows pass ``dedup=False`` so that every rendered flow keeps its row.
    """
    rep = _check_options(representation, params, dedup, mask_tls_sni, group_by)
    columns = _needed_columns(rep, flows.schema.names, mask=mask_tls_sni, group_by=group_by, where="flows table")
    table, summary = _render_all([flows.select(columns)], rep, dedup=dedup, mask=mask_tls_sni, group_by=group_by)
    source = metadata_from_schema(flows.schema)
    meta = _image_metadata(rep, summary, input={"path": None, "sha256": None, "flows_params": source.get("params")})
    return with_metadata(table, meta), summary


def dataset_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a Parquet file, or of the sorted ``relative path, sha256`` lines of a dataset's parts."""
    root = Path(path)
    files = parquet_files(root)
    if root.is_file():
        return sha256_file(root)
    lines = "".join(f"{f.relative_to(root).as_posix()}\t{sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _read_batches(files: list[Path], columns_for: Any, quiet: bool) -> Iterator[pa.RecordBatch]:
    total = sum(open_parquet(f).metadata.num_rows for f in files)
    with progress(total=total, desc="imaging", unit="flows", quiet=quiet) as bar:
        for f in files:
            parquet = open_parquet(f)
            with parquet_errors(f):
                for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, columns=columns_for(f, parquet.schema_arrow)):
                    bar.update(batch.num_rows)
                    yield batch


def image_flows(
    flows_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    representation: str = "payload",
    params: Mapping[str, Any] | None = None,
    *,
    dedup: bool = True,
    mask_tls_sni: bool = False,
    group_by: str = "capture",
    preview: str | os.PathLike[str] | None = None,
    preview_per_class: int = 8,
    quiet: bool = False,
    map_files: Callable[[Callable[[str], Any], list[str]], list[Any]] | None = None,
) -> ImagingSummary:
    """Read a flows table (file or dataset directory), render it, write the images table atomically.

    Also writes ``<output>.summary.json`` and, when ``preview`` is given, a PNG grid of samples.
    ``map_files(function, paths)``: how to run ``function`` on every Parquet file of the table,
    results in ``paths`` order (e.g. on a Dask cluster, see :mod:`pcapvision.executor`); the
    table is the same as without it.
    """
    rep = _check_options(representation, params, dedup, mask_tls_sni, group_by)
    check_positive_int("preview_per_class", preview_per_class)
    files = parquet_files(flows_path)

    def columns_for(path: Path, schema: pa.Schema) -> list[str]:
        return _needed_columns(rep, schema.names, mask=mask_tls_sni, group_by=group_by, where=str(path))

    for f in files:  # fail on a bad part before rendering anything
        columns_for(f, read_parquet_schema(f))
    if map_files is None:
        table, summary = _render_all(_read_batches(files, columns_for, quiet), rep, dedup=dedup, mask=mask_tls_sni,
                                     group_by=group_by)
    else:
        render = functools.partial(_render_file, rep=rep, mask=mask_tls_sni, group_by=group_by)
        table, summary = _render_all((), rep, dedup=dedup, mask=mask_tls_sni, group_by=group_by,
                                     rendered=map_files(render, [os.fspath(f) for f in files]))
    source = metadata_from_schema(read_parquet_schema(files[0]), files[0])
    meta = _image_metadata(
        rep, summary,
        input={"path": os.fspath(flows_path), "sha256": dataset_sha256(flows_path), "files": len(files),
               "flows_params": source.get("params")},
    )
    write_parquet_atomic(table, output, meta)
    write_json_atomic(summary_path(output), summary.to_dict())
    log.info("wrote %d images to %s", table.num_rows, output)
    if preview is not None:
        from pcapvision.imaging.preview import preview_grid

        preview_grid(with_metadata(table, meta), preview, per_class=preview_per_class)
        log.info("wrote preview %s", preview)
    return summary


def summary_path(output: str | os.PathLike[str]) -> Path:
    """Where :func:`image_flows` writes the summary of ``output``: ``<output>.summary.json``."""
    out = Path(output)
    return out.with_name(out.name + ".summary.json")


# --- loading -------------------------------------------------------------------------------------


def images_to_array(table: pa.Table) -> np.ndarray:
    """The ``image`` column as float32 ``(N, 28, 28, 1)`` in [0, 1] (pixel / 255)."""
    if "image" not in table.schema.names:
        raise DataContractError("images table has no 'image' column")
    column = table.column("image")
    if column.type != IMAGE_TYPE:
        raise DataContractError(f"images table column 'image' is {column.type}, expected {IMAGE_TYPE}")
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    if n == 0:
        return np.zeros((0, IMAGE_SIDE, IMAGE_SIDE, 1), np.float32)
    raw = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=n * IMAGE_PIXELS, offset=column.offset * IMAGE_PIXELS)
    x = raw.reshape(n, IMAGE_SIDE, IMAGE_SIDE, 1).astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    return x


def load_images(
    path: str | os.PathLike[str] | pa.Table, target: str = "label"
) -> tuple[np.ndarray, np.ndarray, ImageSetMeta]:
    """Load an images table (file, dataset directory, or in-memory table).

    Returns ``x`` float32 ``(N, 28, 28, 1)`` in [0, 1], ``y`` the ``target`` column as str
    (null -> ``""``), and :class:`ImageSetMeta`. The pcapvision metadata is read from each
    Parquet file itself (a dataset scan may drop it); parts made with different
    representations or parameters are refused.
    """
    check_choice("target", target, TARGETS)
    if isinstance(path, pa.Table):
        table, meta, where = path, metadata_from_schema(path.schema), "images table"
    else:
        files = parquet_files(path)
        tables, meta, where = [], {}, os.fspath(path)
        for f in files:
            part = read_parquet_table(f)
            part_meta = metadata_from_schema(part.schema, f)
            if not part_meta:
                raise DataContractError(f"{f}: an images table needs schema metadata: make one with "
                                        "`pcapvision image` or `pcapvision image import`")
            if part_meta.get("stage") != STAGE:
                raise DataContractError(f"{f}: not an images table (schema metadata stage is {part_meta.get('stage')!r})")
            if not meta:
                meta = part_meta
            elif (part_meta.get("representation"), part_meta.get("representation_params")) != (
                meta.get("representation"), meta.get("representation_params")
            ):
                raise DataContractError(f"{f}: made with a different representation or parameters than {files[0]}")
            tables.append(part.replace_schema_metadata(None))
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    missing = [c for c in ("image", target) if c not in table.schema.names]
    if missing:
        raise DataContractError(f"{where}: missing column(s) {', '.join(missing)}")
    try:
        x = images_to_array(table)
    except DataContractError as exc:
        raise DataContractError(f"{where}: {exc}") from None
    y_col = table.column(target)
    if not (pa.types.is_string(y_col.type) or pa.types.is_large_string(y_col.type)
            or (pa.types.is_dictionary(y_col.type) and pa.types.is_string(y_col.type.value_type))):
        raise DataContractError(f"{where}: column {target!r} is {y_col.type}, expected string")
    n_null = y_col.null_count
    if n_null:
        log.warning("%s: %d of %d rows have no %s", where, n_null, table.num_rows, target)
    y = np.asarray(y_col.fill_null("").to_numpy(zero_copy_only=False), dtype=str) if table.num_rows else np.zeros(0, dtype=str)
    columns = table.drop_columns(["image"]).to_pandas()
    return x, y, ImageSetMeta(
        schema=meta, columns=columns, representation=meta.get("representation"),
        params=dict(meta.get("representation_params") or {}),
    )
