"""Ingest: packet captures (pcap/pcapng, plain or gzip) -> a flows table (Parquet).

    >>> from pcapvision.ingest import IngestOptions, Labeler, ingest, read_flows
    >>> table = read_flows("capture.pcap")                                 # one capture, in memory
    >>> summary = ingest(["captures/"], "out/flows", labeler=Labeler.from_label("normal"), jobs=2)

The flows table's columns are described in ``docs/contracts.md``; usage in ``docs/ingest.md``.
Modules, by stage:

* capture files -> record chunks: :mod:`.capture` (format detection, entry points), :mod:`.source`
  (plain or gzip bytes), :mod:`.pcap`, :mod:`.pcapng` (the walkers), :mod:`.records` (the chunk type);
* record chunks -> packet batches (:mod:`.packets`): :mod:`.readers` (reader dispatch, chunk
  decoding), :mod:`.fastpath` (compiled decoder), :mod:`.dpkt_decode` (reference decoder),
  :mod:`.scapy_reader` (cross-check), :mod:`.defrag` (IP fragments);
* packet batches -> flows: :mod:`.assembler` (cutting flows), :mod:`.flowkey` (packet keys),
  :mod:`.flowtable` (per-flow state, open flows), :mod:`.flowbuffers` (page pools: payload, packet
  lists), :mod:`.reassembly` (payload placement), :mod:`.seqgaps` (TCP bytes the capture missed),
  :mod:`.emission` (columns), :mod:`.arrays` (Arrow columns through their buffers),
  :mod:`.flowschema` (the flows table's schema), with :mod:`.community_id` and :mod:`.tls`;
  the loops over packets and bytes are compiled with numba (:mod:`.jit`);
* flows -> Parquet: :mod:`.pipeline` (:func:`ingest`: plan, run, in worker processes),
  :mod:`.discover` (input files), :mod:`.flowstream` (one capture's flows, labelled by
  :mod:`.labels`), :mod:`.flowid`, :mod:`.writer`, :mod:`.options`, :mod:`.summary`;
* :mod:`.importers`: other tools' ground truth -> label rules, with a match report;
  :mod:`.constants`: values shared by several of the above.
"""

from pcapvision.ingest.assembler import FlowAssembler, FlowOptions, assemble_flows
from pcapvision.ingest.labels import Labeler, LabelRulesError
from pcapvision.ingest.packets import Packet, PacketBatch
from pcapvision.ingest.discover import discover_captures, find_captures, input_failures
from pcapvision.ingest.flowschema import FLOWS_SCHEMA
from pcapvision.ingest.flowstream import iter_flow_tables, read_flows
from pcapvision.ingest.options import IngestOptions
from pcapvision.ingest.pipeline import ingest, output_guard
from pcapvision.ingest.summary import IngestSummary
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
    "find_captures",
    "import_labels",
    "input_failures",
    "ingest",
    "output_guard",
    "iter_flow_tables",
    "parse_client_hello",
    "read_flows",
    "read_packets",
    "rules_path_for",
]
