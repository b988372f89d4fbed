"""Ingest: packet captures (pcap/pcapng, plain or gzip) -> a flows table (Parquet).

    >>> from pcapvision.ingest import IngestOptions, Labeler, ingest, read_flows
    >>> table = read_flows("capture.pcap")                                 # one capture, in memory
    >>> summary = ingest(["captures/"], "out/flows", labeler=Labeler.from_label("normal"), jobs=2)

The flows table's columns are described in ``docs/contracts.md``; usage in ``docs/ingest.md``.
Modules: :mod:`.readers` (capture -> packet batches; :mod:`.defrag` reassembles IP fragments),
:mod:`.flows` (packet batches -> flows; :mod:`.seqgaps` counts the TCP bytes a capture missed),
:mod:`.labels` (flows -> labels), :mod:`.pipeline` (files -> Parquet), :mod:`.importers` (other
tools' ground truth -> label rules, with a match report).
"""

from pcapvision.ingest.assembler import FlowAssembler, FlowOptions, assemble_flows
from pcapvision.ingest.labels import Labeler, LabelRulesError
from pcapvision.ingest.packets import Packet, PacketBatch
from pcapvision.ingest.pipeline import (
    FLOWS_SCHEMA,
    IngestOptions,
    IngestSummary,
    discover_captures,
    ingest,
    iter_flow_tables,
    output_guard,
    read_flows,
)
from pcapvision.ingest.readers import read_packets
from pcapvision.ingest.importers import (
    LABEL_FORMATS,
    ImportOptions,
    MatchReport,
    import_labels,
    rules_path_for,
)
from pcapvision.ingest.tls import ClientHello, parse_client_hello

__all__ = [
    "FLOWS_SCHEMA",
    "ClientHello",
    "FlowAssembler",
    "FlowOptions",
    "IngestOptions",
    "ImportOptions",
    "IngestSummary",
    "LABEL_FORMATS",
    "LabelRulesError",
    "Labeler",
    "MatchReport",
    "Packet",
    "PacketBatch",
    "assemble_flows",
    "discover_captures",
    "import_labels",
    "ingest",
    "output_guard",
    "iter_flow_tables",
    "parse_client_hello",
    "read_flows",
    "read_packets",
    "rules_path_for",
]
