"""The choices (and the compare grid's defaults) the CLI and the config file offer, spelled out
once without importing a stage.

Importing a stage loads numpy, pyarrow, pandas and numba (~1.5 CPU s): spelled out here, parsing a
command line, ``--help`` included, loads none of them. tests/test_public_api.py checks that each
tuple equals the stage's own definition, so they cannot drift apart.
"""

from __future__ import annotations

__all__ = ["ARCHITECTURES", "COMPARE_ARCHITECTURES", "COMPARE_REPRESENTATIONS", "LABEL_FORMATS", "ON_HOLE", "READERS",
           "REPRESENTATIONS"]

# pcapvision.ingest: READERS, ON_HOLE (IngestOptions.reader, .on_hole) and LABEL_FORMATS.
READERS = ("auto", "dpkt", "scapy")
ON_HOLE = ("stop", "skip")
LABEL_FORMATS = ("cicflowmeter", "binetflow", "zeek", "suricata", "folders")
# pcapvision.imaging.REPRESENTATIONS (the registry's names, in its order).
REPRESENTATIONS = ("payload", "byte-distribution", "flowpic", "packets")
# pcapvision.classify.ARCHITECTURES.
ARCHITECTURES = ("cnn", "mlp", "cnn-embed", "cnn1d")
# pcapvision.compare.DEFAULT_REPRS and DEFAULT_ARCHS.
COMPARE_REPRESENTATIONS = ("payload", "flowpic", "packets")
COMPARE_ARCHITECTURES = ("cnn", "cnn-embed", "cnn1d")
