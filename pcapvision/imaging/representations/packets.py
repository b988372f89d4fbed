"""Packets: one row per packet of the flow's first 28, one column per header field of behaviour.

Inspired by nPrint (Holland et al. 2021: one row per packet, header fields as columns) and
FlowPic (sizes, directions, times): the image holds what the packets *do* (sizes, directions,
timing, TCP flags, the TLS record layer) and nothing that names *who* sends them (no address,
port, absolute time, TTL, IP ID or TCP window, which identify hosts and operating systems).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from pcapvision.errors import DataContractError
from pcapvision.imaging.representations.base import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    Param,
    Representation,
    binary_parts,
    column_array,
    list_parts,
    ragged_index,
    register,
)
from pcapvision.validation import check_positive_number

# Column of each field in a packet's row. Columns 21..27 are always 0 (no further field).
COLUMNS = {
    "present": 0, "direction": 1, "ip_length": 2, "ip_length_log": 3, "payload_length": 4,
    "payload_length_log": 5, "iat_log": 6, "iat_same_direction_log": 7, "time_log": 8,
    # TCP flag bits FIN SYN RST PSH ACK URG ECE CWR: columns 9..16
    "tls_content_type": 17, "tls_record_length_log": 18, "tls_first_body_byte": 19, "tls_records": 20,
}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
FIRST_FLAG_COLUMN = 9
LINEAR_IP_MAX = 1500  # bytes: ip_length is linear up to a full Ethernet frame
LINEAR_PAYLOAD_MAX = 1460  # bytes: payload_length is linear up to a full TCP segment over Ethernet
LOG_LENGTH_MAX = 65535  # bytes: the *_log length columns span every possible IP length
TLS_RECORD_MAX = 16384 + 2048  # largest TLS ciphertext record (RFC 5246 6.2.3)
MAX_TLS_RECORDS = 256  # record headers walked per direction of a flow
# Pixel of each TLS content type: change_cipher_spec 20, alert 21, handshake 22, application_data 23, heartbeat 24.
_TLS_TYPE_PIXELS = np.zeros(256, dtype=np.uint8)
_TLS_TYPE_PIXELS[20:25] = (51, 102, 153, 204, 255)


def _log_pixels(values: np.ndarray, top: float) -> np.ndarray:
    """``round(255 * ln(1 + v) / ln(1 + top))`` for ``v`` clipped to ``[0, top]``, as uint8."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, top)
    return np.rint(255.0 * np.log1p(v) / math.log1p(top)).astype(np.uint8)


def _linear_pixels(values: np.ndarray, top: int) -> np.ndarray:
    v = np.clip(np.asarray(values, dtype=np.int64), 0, top)
    return (v * 255 // top).astype(np.uint8)


def tls_record_starts(stream: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TLS record headers found by walking each value of ``stream`` from offset 0.

    Returns ``(row, offset, content_type, length, first_body_byte)`` per record. The walk of a
    row stops at the first 5 bytes that are not a TLS record header (content type 20..24,
    version major 3) or at the end of the bytes kept; a record cut by the end still counts.
    Vectorised over rows: each step reads the next header of every row still walking.
    """
    data, starts, lengths = binary_parts(stream)
    pos = np.zeros(len(starts), dtype=np.int64)
    walking = np.flatnonzero(lengths >= 5)
    found: list[tuple[np.ndarray, ...]] = []
    padded = np.concatenate([data, np.zeros(6, np.uint8)])  # header reads near the end stay in bounds
    for _ in range(MAX_TLS_RECORDS):
        if walking.size == 0:
            break
        at = starts[walking] + pos[walking]
        ctype, major = padded[at], padded[at + 1]
        length = padded[at + 3].astype(np.int64) * 256 + padded[at + 4]
        ok = (ctype >= 20) & (ctype <= 24) & (major == 3) & (pos[walking] + 5 <= lengths[walking])
        walking, at, ctype, length = walking[ok], at[ok], ctype[ok], length[ok]
        body = np.where(pos[walking] + 5 < lengths[walking], padded[at + 5], 0).astype(np.uint8)
        found.append((walking, pos[walking].copy(), ctype, length, body))
        pos[walking] += 5 + length
        walking = walking[pos[walking] + 5 <= lengths[walking]]
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty.astype(np.uint8), empty, empty.astype(np.uint8)
    return tuple(np.concatenate(parts) for parts in zip(*found))  # type: ignore[return-value]


@register
class PacketsImage(Representation):
    """Pixel ``(r, c)`` = behaviour field ``c`` of packet ``r`` of the flow (its first 28).

    Rows past the flow's last packet are all 0. Columns (each pixel 0..255):

    - 0 ``present``: 255 for a packet.
    - 1 ``direction``: 0 initiator → responder, 255 responder → initiator.
    - 2 ``ip_length``: IP total length ``L``, ``floor(255 * min(L, 1500) / 1500)``.
    - 3 ``ip_length_log``: ``round(255 * ln(1 + L) / ln(1 + 65535))``.
    - 4 ``payload_length``: L4 payload length ``P``, ``floor(255 * min(P, 1460) / 1460)``.
    - 5 ``payload_length_log``: ``round(255 * ln(1 + P) / ln(1 + 65535))``.
    - 6 ``iat_log``: ms since the previous packet (either direction; 0 for the first),
      ``round(255 * ln(1 + t) / ln(1 + time_max_ms))``, ``t`` clipped to ``[0, time_max_ms]``.
    - 7 ``iat_same_direction_log``: the same, since the previous packet of the same direction
      (0 for the first packet of each direction).
    - 8 ``time_log``: the same scale, ms since the flow's first packet.
    - 9..16: TCP flags FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, 255 when set (all 0 for UDP).
    - 17 ``tls_content_type``: the first TLS record whose header starts in this packet's payload:
      change_cipher_spec 51, alert 102, handshake 153, application_data 204, heartbeat 255;
      0 when no record starts here.
    - 18 ``tls_record_length_log``: that record's length ``R``, ``round(255 * ln(1 + R) / ln(1 + 18432))``.
    - 19 ``tls_first_body_byte``: the record's first body byte as is (for a plaintext handshake
      record the message type: 1 ClientHello, 2 ServerHello, 11 Certificate...).
    - 20 ``tls_records``: records starting in the packet, ``51 * min(n, 5)``.
    - 21..27: 0.

    TLS records are found by walking the record headers of each direction's reassembled payload
    (``src2dst_payload``, ``dst2src_payload``: the first ``max_bytes`` of ingest) and placed in
    the packet of that direction whose payload bytes cover the header's offset, counting the
    payload lengths of the direction's packets in order (a retransmitted segment shifts the
    placement of later records by its length). Records past the kept bytes are not drawn.
    Flows without packets are skipped.
    """

    name = "packets"
    summary = "row r = packet r; columns = direction, sizes, inter-arrival times, TCP flags, TLS record type/length"
    skip_reason = "no packets"
    param_specs = (
        Param("time_max_ms", 60000.0, "time span of the log time columns (iat_log, time_log), ms",
              lambda n, v: check_positive_number(n, v), float),
    )

    def required_columns(self) -> tuple[str, ...]:
        return ("packet_time_ms", "packet_direction", "packet_ip_bytes", "packet_payload_bytes", "packet_tcp_flags",
                "src2dst_payload", "dst2src_payload")

    def _render_block(self, flows: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        names = self.required_columns()[:5]
        parts = [list_parts(column_array(flows, name)) for name in names]
        counts = parts[0][2]
        for name, (_, _, lengths) in zip(names[1:], parts[1:]):
            if not np.array_equal(lengths, counts):
                bad = int(np.flatnonzero(lengths != counts)[0])
                raise DataContractError(f"row {bad}: packet_time_ms and {name} have different numbers of packets")
        n = len(counts)
        take = np.minimum(counts, IMAGE_SIDE)
        rows, _ = ragged_index(parts[0][1], take)
        slot = np.arange(rows.size, dtype=np.int64) - np.repeat(np.cumsum(take) - take, take)  # packet number in its flow
        times, directions, ip_len, pay_len, flags = (
            np.asarray(values)[ragged_index(starts, take)[1]] for values, starts, _ in parts
        )
        grid = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
        cell = (rows, slot)
        directions = directions.astype(np.int64)
        grid[cell + (COLUMNS["present"],)] = 255
        grid[cell + (COLUMNS["direction"],)] = np.where(directions != 0, 255, 0)
        grid[cell + (COLUMNS["ip_length"],)] = _linear_pixels(ip_len, LINEAR_IP_MAX)
        grid[cell + (COLUMNS["ip_length_log"],)] = _log_pixels(ip_len, LOG_LENGTH_MAX)
        grid[cell + (COLUMNS["payload_length"],)] = _linear_pixels(pay_len, LINEAR_PAYLOAD_MAX)
        grid[cell + (COLUMNS["payload_length_log"],)] = _log_pixels(pay_len, LOG_LENGTH_MAX)
        t_max = self.params["time_max_ms"]
        t = np.asarray(times, dtype=np.float64)
        first = slot == 0
        grid[cell + (COLUMNS["iat_log"],)] = _log_pixels(np.where(first, 0.0, t - np.roll(t, 1)), t_max)
        grid[cell + (COLUMNS["iat_same_direction_log"],)] = _log_pixels(_same_direction_gaps(rows, directions, t), t_max)
        grid[cell + (COLUMNS["time_log"],)] = _log_pixels(t, t_max)
        flag_bits = (np.asarray(flags, dtype=np.uint8)[:, None] >> np.arange(8, dtype=np.uint8)) & 1
        grid[rows[:, None], slot[:, None], FIRST_FLAG_COLUMN + np.arange(8)] = flag_bits * 255
        self._draw_tls(grid, flows, rows, slot, directions, np.asarray(pay_len, dtype=np.int64), take)
        return grid.reshape(n, IMAGE_PIXELS), counts > 0

    @staticmethod
    def _draw_tls(grid: np.ndarray, flows: pa.Table | pa.RecordBatch, rows: np.ndarray, slot: np.ndarray,
                  directions: np.ndarray, pay_len: np.ndarray, take: np.ndarray) -> None:
        """Draw the TLS columns: each record header goes to the packet whose payload holds its offset."""
        first_packet = np.cumsum(take) - take
        for direction, column in ((0, "src2dst_payload"), (1, "dst2src_payload")):
            rec_row, rec_offset, ctype, length, body = tls_record_starts(column_array(flows, column))
            if rec_row.size == 0:
                continue
            # End offset of each drawn packet in its direction's byte stream: increasing within a flow.
            ends = np.cumsum(np.where(directions == direction, pay_len, 0))
            ends -= np.repeat(np.r_[0, ends][first_packet], take)
            keys = (rows << 40) + ends  # flows in order, each flow's ends increasing: globally sorted
            # The packet holding offset o is the first one of the flow whose end exceeds o (one of
            # this direction with payload, as the end only grows at those).
            hit = np.searchsorted(keys, (rec_row << 40) + rec_offset, side="right")
            inside = hit < keys.size
            inside[inside] = rows[hit[inside]] == rec_row[inside]
            hit, ctype, length, body = hit[inside], ctype[inside], length[inside], body[inside]
            if hit.size == 0:
                continue
            # Records come in walk order per flow, so a packet's first occurrence is its first record.
            _, first = np.unique(hit, return_index=True)
            h = hit[first]
            cell = (rows[h], slot[h])
            grid[cell + (COLUMNS["tls_content_type"],)] = _TLS_TYPE_PIXELS[ctype[first]]
            grid[cell + (COLUMNS["tls_record_length_log"],)] = _log_pixels(length[first], TLS_RECORD_MAX)
            grid[cell + (COLUMNS["tls_first_body_byte"],)] = body[first]
            grid[cell + (COLUMNS["tls_records"],)] = (51 * np.minimum(np.bincount(hit)[h], 5)).astype(np.uint8)


def _same_direction_gaps(rows: np.ndarray, directions: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Time since the previous packet of the same flow and direction (0 for the first of each)."""
    order = np.lexsort((np.arange(rows.size), directions, rows))  # by flow, direction, then packet order
    ts, rs, ds = t[order], rows[order], directions[order]
    gaps = np.zeros(rows.size)
    if rows.size < 2:
        return gaps
    same = np.r_[False, (rs[1:] == rs[:-1]) & (ds[1:] == ds[:-1])]
    gaps[order[same]] = (ts[1:] - ts[:-1])[same[1:]]
    return gaps
