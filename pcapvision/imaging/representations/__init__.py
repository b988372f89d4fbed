"""Image representations of flows: what one pixel means (one module per representation)."""

from pcapvision.imaging.representations.base import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    PAYLOAD_COLUMNS,
    REPRESENTATIONS,
    Param,
    RenderResult,
    Representation,
    binary_parts,
    gather_prefix,
    get_representation,
    list_parts,
    log_scale,
    ragged_index,
    register,
)

# Import order is registration order, the order the CLI lists them in.
# isort: off
from pcapvision.imaging.representations.payload import ByteDistributionImage, PayloadImage
from pcapvision.imaging.representations.flowpic import FlowPicImage
from pcapvision.imaging.representations.packets import PacketsImage
# isort: on

__all__ = [
    "IMAGE_PIXELS", "IMAGE_SIDE", "PAYLOAD_COLUMNS", "REPRESENTATIONS", "ByteDistributionImage", "FlowPicImage",
    "PacketsImage", "Param", "PayloadImage", "RenderResult", "Representation", "binary_parts", "gather_prefix",
    "get_representation", "list_parts", "log_scale", "ragged_index", "register",
]
