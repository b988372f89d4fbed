"""Imaging stage: flows table -> images table (28x28 uint8 per flow) and the one loader.

Public API (the classify and robustness stages code against exactly this)::

    REPRESENTATIONS                 # "payload", "byte-distribution", "flowpic" -> class
    get_representation(name, params)            # .name, .params, .render(flows) -> (images, valid, skip_reason)
    render_flows(flows, representation, params, *, dedup, mask_tls_sni, group_by) -> (table, summary)
    image_flows(flows_path, output, representation, params, *, ...) -> ImagingSummary
    dataset_sha256(path) -> str                  # content hash of a Parquet file or dataset directory
    load_images(path, target="label") -> (x float32 (N,28,28,1) in [0,1], y str, ImageSetMeta)
    preview_grid(images_path_or_table, output_png, per_class=8, seed=0) -> Path
    import_images(src, output, *, labels=None, format="auto", dedup=True) -> ImagingSummary   # IDX, npz, PNG folders
    read_idx(path) -> np.ndarray                  # an unsigned-byte IDX file, gzip or not
"""

from pcapvision.imaging.importers import import_images, read_idx
from pcapvision.imaging.masking import MaskingStats, mask_tls_names
from pcapvision.imaging.preview import preview_grid
from pcapvision.imaging.representations import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    REPRESENTATIONS,
    RenderResult,
    Representation,
    get_representation,
)
from pcapvision.imaging.table import (
    IMAGES_SCHEMA,
    ImageSetMeta,
    ImagingSummary,
    dataset_sha256,
    image_flows,
    images_to_array,
    load_images,
    render_flows,
    summary_path,
)

__all__ = [
    "IMAGES_SCHEMA",
    "IMAGE_PIXELS",
    "IMAGE_SIDE",
    "REPRESENTATIONS",
    "ImageSetMeta",
    "ImagingSummary",
    "dataset_sha256",
    "MaskingStats",
    "RenderResult",
    "Representation",
    "get_representation",
    "image_flows",
    "images_to_array",
    "import_images",
    "load_images",
    "mask_tls_names",
    "preview_grid",
    "read_idx",
    "render_flows",
    "summary_path",
]
