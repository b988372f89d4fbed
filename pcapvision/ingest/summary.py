"""What an ingest reports: per-capture statistics and the summary of a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from pcapvision.io import printable

__all__ = ["CaptureStats", "IngestSummary"]


@dataclass
class CaptureStats:
    """What reading one capture produced."""

    source_file: str
    source_sha256: str
    bytes_read: int = 0
    packets: int = 0
    flows: int = 0
    packets_skipped: Counter[str] = field(default_factory=Counter)
    frames_decoded_by: Counter[str] = field(default_factory=Counter)  # "fast", "dpkt", "scapy"
    tcp_flows_with_holes: int = 0  # flows with missed bytes (sequence space the capture never saw)
    tcp_missed_bytes: int = 0

    @property
    def packets_read(self) -> int:
        """Records read: the packets in flows plus the packets skipped (they add up)."""
        return self.packets + sum(self.packets_skipped.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["packets_read"] = self.packets_read
        out["packets_skipped"] = dict(sorted((+self.packets_skipped).items()))  # no zero counts
        out["frames_decoded_by"] = dict(sorted((+self.frames_decoded_by).items()))
        return out


@dataclass
class IngestSummary:
    """The outcome of :func:`ingest`."""

    output: str = ""
    files_ok: int = 0
    files_failed: list[tuple[str, str]] = field(default_factory=list)
    internal_errors: int = 0  # failures that are bugs, not bad input (among files_failed)
    files_skipped_already_ingested: int = 0
    files_reingested: int = 0  # dataset parts replaced: made with other parameters or labels
    packets: int = 0
    flows: int = 0
    packets_skipped: Counter[str] = field(default_factory=Counter)
    frames_decoded_by: Counter[str] = field(default_factory=Counter)
    tcp_flows_with_holes: int = 0
    tcp_missed_bytes: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    def add(self, stats: CaptureStats) -> None:
        self.files_ok += 1
        self.packets += stats.packets
        self.flows += stats.flows
        self.packets_skipped.update(stats.packets_skipped)
        self.frames_decoded_by.update(stats.frames_decoded_by)
        self.tcp_flows_with_holes += stats.tcp_flows_with_holes
        self.tcp_missed_bytes += stats.tcp_missed_bytes
        self.bytes_read += stats.bytes_read

    @property
    def packets_read(self) -> int:
        """Records read from the captures that succeeded: packets in flows plus packets skipped."""
        return self.packets + sum(self.packets_skipped.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files_failed"] = [list(f) for f in self.files_failed]
        out["packets_read"] = self.packets_read
        out["packets_skipped"] = dict(sorted((+self.packets_skipped).items()))  # no zero counts
        out["frames_decoded_by"] = dict(sorted((+self.frames_decoded_by).items()))
        return out

    def format(self) -> str:
        """A human-readable summary, one fact per line, failures one line each."""
        read = self.packets_read
        rate = read / self.seconds if self.seconds > 0 else 0.0
        reingested = f", {self.files_reingested} re-ingested (other parameters or labels)" \
            if self.files_reingested else ""
        lines = [
            f"output: {self.output}",
            f"files: {self.files_ok} ok{reingested}, {len(self.files_failed)} failed, "
            f"{self.files_skipped_already_ingested} skipped (already ingested)",
            f"packets read: {read:,} in {self.bytes_read / 1e6:,.1f} MB, {self.seconds:.2f} s "
            f"({rate:,.0f} packets/s)",
            f"packets in flows: {self.packets:,}",
        ]
        skipped = sum(self.packets_skipped.values())
        if skipped:
            reasons = ", ".join(f"{reason} {count:,}" for reason, count in (+self.packets_skipped).most_common())
            lines.append(f"packets skipped: {skipped:,} ({reasons})")
        else:
            lines.append("packets skipped: 0")
        lines.append(f"flows: {self.flows:,}")
        if self.tcp_flows_with_holes:
            lines.append(f"TCP holes: {self.tcp_flows_with_holes:,} flows missed {self.tcp_missed_bytes:,} bytes "
                         "(sequence space the capture never saw)")
        lines.extend(f"failed: {path}: {reason}" for path, reason in self.files_failed)
        if self.internal_errors:
            lines.append(f"{self.internal_errors} internal error(s): a bug in pcapvision, please report it "
                         "with the traceback above")
        return printable("\n".join(lines))
