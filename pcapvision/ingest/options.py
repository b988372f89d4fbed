"""Ingest options: how captures are read and flows cut, and which of them a dataset part records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pcapvision.ingest.assembler import FlowOptions
from pcapvision.ingest.constants import READERS
from pcapvision.ingest.labels import Labeler
from pcapvision.validation import check_choice, check_positive_int

__all__ = ["IngestOptions", "ingest_params", "part_identity"]


@dataclass(frozen=True)
class IngestOptions:
    """Flow assembly parameters plus how captures are read; validated on construction."""

    idle_timeout_s: float = 120.0
    active_timeout_s: float = 1800.0
    max_bytes: int = 4096
    max_packets: int = 64
    on_hole: str = "stop"
    reader: str = "auto"
    chunk_packets: int = 65536

    def __post_init__(self) -> None:
        # FlowOptions validates (and normalises) the flow parameters with the same messages.
        flow = self.flow_options()
        for name, value in flow.to_dict().items():
            object.__setattr__(self, name, value)
        check_choice("reader", self.reader, READERS)
        object.__setattr__(self, "chunk_packets", check_positive_int("chunk_packets", self.chunk_packets))

    def flow_options(self) -> FlowOptions:
        return FlowOptions(idle_timeout_s=self.idle_timeout_s, active_timeout_s=self.active_timeout_s,
                           max_bytes=self.max_bytes, max_packets=self.max_packets, on_hole=self.on_hole)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_params(options: IngestOptions, labeler: Labeler | None) -> dict[str, Any]:
    """The parameters recorded in schema metadata (and compared to decide a part is up to date):
    the options, how labels were assigned, and ``labeler_sha256`` (:meth:`Labeler.sha256`, null
    without labels), which later stages fold into their fingerprints."""
    return {**options.to_dict(), "labels": labeler.to_dict() if labeler is not None else None,
            "labeler_sha256": labeler.sha256() if labeler is not None else None}


# Parameters that cannot change a part's rows (memory use only, or where the rules file lies:
# its content is in labeler_sha256): left out of a part's identity.
_NOT_IDENTITY = frozenset({"chunk_packets", "labels"})


def part_identity(params: Mapping[str, Any]) -> dict[str, Any]:
    """What makes a dataset part up to date besides its capture hash: the ingest parameters that
    shape its rows and the labeler hash."""
    return {k: v for k, v in params.items() if k not in _NOT_IDENTITY}
