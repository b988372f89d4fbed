"""Byte-realizable attack on payload images: perturb only bytes the sender can append, then prove it.

In a ``payload`` image pixel i is payload byte i (session order) and pixels past the payload's
end are zero padding. A sender can always send more: bytes appended after the last payload byte
of the flow land exactly on that padding, in order. So the attack

1. writes the 5-byte header of one TLS application-data record (``17 03 03 LL LL``) right after
   the payload (the attacker must send it; it is fixed, not optimised) and lets PGD change only
   the record body = the rest of the padding (a mask), with values rounded onto the k/255 grid;
2. turns each adversarial image back into a capture: the flow's own packets from its source
   capture plus one extra TCP segment carrying the record, sent by the initiator (or the
   responder for ``dst2src_payload`` images) after the last payload-carrying packet of either
   direction, so that session-order interleaving puts it at the end; later packets of that
   direction get their sequence numbers shifted and the peer's ACKs follow;
3. re-ingests that capture with the flows table's ingest parameters, re-renders it with the
   model's representation and reports the realizability rate (re-rendered image == adversarial
   image) and the evasion rate that survives the round trip.

The record body is opaque ciphertext to any observer; only the endpoints (here the attacker's own
C2 pair) would notice it does not decrypt, and they can agree to discard it.

Payloads of full TLS sessions usually fill the image, leaving nothing to append into. The second
strategy, ``client_hello``, uses bytes the client chooses freely inside the image instead: the
32-byte ``random`` and the ``session_id`` of its ClientHello, which opens the session-order
payload. A server that echoes the session id (TLS 1.3 middlebox compatibility mode, or a
resumption) repeats those bytes in its ServerHello, and a real client aborts when the echo does
not match; so the attack writes its session id into the echo too (in the image and, in the round
trip, in the server's first segment: same length, no sequence number moves). Each rebuilt capture
is then parsed with scapy's TLS layer and counted as realized only when the image re-renders
exactly *and* the handshake is consistent (the ClientHello parses, and the ServerHello's session
id is the client's new one, or a server-chosen one that is neither the old nor the new).

What a real session would still change: the client random and the whole ClientHello feed the key
schedule (TLS 1.2: the master secret is derived from client_random; TLS 1.3: every traffic key
comes from the transcript hash over the ClientHello), so every encrypted byte after the
ServerHello (TLS 1.3: EncryptedExtensions, certificate, Finished; both: application data) would
be different pseudo-random ciphertext. The round trip keeps the capture's original ciphertext
there; the figure after the round trip therefore assumes the model reacts to those bytes as it
does to any other ciphertext of the same lengths (``CLIENT_HELLO_CAVEAT``, stated in the report).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pcapvision.errors import DataContractError
from pcapvision.robustness.capture_rewrite import (
    append_record_to_flow,
    check_handshake,
    rewrite_client_hello,
    server_first_bytes,
)
from pcapvision.validation import check_choice
from pcapvision.robustness.attacks import (
    AttackSpec,
    art_classifier,
    decide,
    decision_rule,
    generate,
    predict_proba,
    quantize_to_bytes,
    tail_mask,
)

log = logging.getLogger(__name__)

TLS_HEADER_BYTES = 5
TLS_RECORD_HEADER = bytes([0x17, 0x03, 0x03])  # application data, TLS 1.2 on the wire (1.3 too)
PAYLOAD_COLUMNS = ("payload", "src2dst_payload", "dst2src_payload")


STRATEGIES = ("append", "client_hello")
CLIENT_RANDOM = (11, 43)  # record header 5 + handshake header 4 + legacy_version 2; 32 bytes
SESSION_ID_LENGTH_AT = 43


def client_hello_fields(payload: bytes) -> list[tuple[int, int]] | None:
    """Byte ranges ``[start, end)`` of the ClientHello random and session id opening ``payload``.

    None when ``payload`` does not start with a TLS handshake record holding a ClientHello.
    """
    if len(payload) < SESSION_ID_LENGTH_AT + 1 or payload[0] != 0x16 or payload[1] != 3 or payload[5] != 0x01:
        return None
    sid_len = payload[SESSION_ID_LENGTH_AT]
    if sid_len > 32 or len(payload) < SESSION_ID_LENGTH_AT + 1 + sid_len:
        return None
    ranges = [CLIENT_RANDOM]
    if sid_len:
        ranges.append((SESSION_ID_LENGTH_AT + 1, SESSION_ID_LENGTH_AT + 1 + sid_len))
    return ranges


SESSION_ID_MIN_ECHO = 8  # shorter ids could match by chance; they are not searched for an echo
CLIENT_HELLO_CAVEAT = (
    "The client random and the ClientHello feed the TLS key schedule, so in a real session every encrypted "
    "byte after the ServerHello would be different ciphertext; the round trip keeps the capture's original "
    "ciphertext there (only the random, the session id and its ServerHello echo are rewritten)."
)


def session_id_echo(payload: bytes, fields: list[tuple[int, int]]) -> tuple[int, int] | None:
    """Byte range of the ServerHello's echo of the ClientHello session id in a session-order payload.

    ``fields`` are the ClientHello ranges (:func:`client_hello_fields`); the echo is the session
    id's bytes found again later, right after a length byte equal to its length. None when the
    session id is shorter than ``SESSION_ID_MIN_ECHO`` bytes or not echoed inside ``payload``.
    """
    if len(fields) < 2:
        return None
    start, end = fields[1]
    sid = payload[start:end]
    if len(sid) < SESSION_ID_MIN_ECHO:
        return None
    at = payload.find(sid, end)
    while at >= 0:
        if payload[at - 1] == len(sid):
            return at, at + len(sid)
        at = payload.find(sid, at + 1)
    return None


def client_hello_mask(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int]] | None]]:
    """Mask of the ClientHello random and session id pixels of byte images, which rows have them, the ranges."""
    flat = np.round(np.asarray(x, np.float32).reshape(len(x), -1) * 255.0).astype(np.uint8)
    mask = np.zeros(flat.shape, np.float32)
    ranges = [client_hello_fields(row.tobytes()) for row in flat]
    for i, found in enumerate(ranges):
        for start, end in found or ():
            mask[i, start:end] = 1.0
    return mask.reshape(x.shape), np.asarray([r is not None for r in ranges]), ranges


def record_header(body_length: int) -> bytes:
    return TLS_RECORD_HEADER + int(body_length).to_bytes(2, "big")


def with_record_headers(x: np.ndarray, payload_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with a TLS record header written after each payload, the attack mask, and which rows fit one.

    A row is attackable when at least one body byte fits after the header inside the image.
    """
    x = np.array(x, np.float32, copy=True)
    n_pixels = int(np.prod(x.shape[1:]))
    lengths = np.asarray(payload_lengths, np.int64)
    attackable = lengths + TLS_HEADER_BYTES < n_pixels
    flat = x.reshape(len(x), -1)
    for i in np.flatnonzero(attackable):
        start = int(lengths[i])
        header = record_header(n_pixels - start - TLS_HEADER_BYTES)
        flat[i, start : start + TLS_HEADER_BYTES] = np.frombuffer(header, np.uint8) / np.float32(255.0)
    mask = tail_mask(np.where(attackable, lengths, n_pixels), x.shape[1:], reserved=TLS_HEADER_BYTES)
    return flat.reshape(x.shape), mask, attackable


def appended_bytes(x_adv: np.ndarray, payload_length: int) -> bytes:
    """The bytes the sender appends: the image's pixels from the payload's end to the image's end."""
    flat = np.round(np.asarray(x_adv, np.float32).reshape(-1) * 255.0).astype(np.uint8)
    return flat[int(payload_length):].tobytes()


@dataclass
class RealizableAttack:
    """Result of the masked, byte-quantised attack (before any round trip)."""

    x_start: np.ndarray  # images with the record header written in
    x_adv: np.ndarray  # quantised adversarial images
    mask: np.ndarray
    attackable: np.ndarray  # bool per row
    proba_adv: np.ndarray
    strategy: str = "append"
    proba_clean: np.ndarray | None = None  # on the original images


def realizable_attack(model: Any, x: np.ndarray, y: np.ndarray, payload_lengths: np.ndarray, *, strategy: str = "append",
                      steps: int = 40, restarts: int = 1, seed: int = 0, batch_size: int = 256) -> RealizableAttack:
    """PGD restricted to bytes the sender controls (any value: the budget is the whole byte range).

    ``strategy``: ``"append"`` (a TLS record after the payload) or ``"client_hello"`` (the
    ClientHello random and session id).
    """
    check_choice("strategy", strategy, STRATEGIES)
    if strategy == "append":
        x_start, mask, attackable = with_record_headers(x, payload_lengths)
    else:
        x_start = np.array(x, np.float32, copy=True)
        mask, attackable, ranges = client_hello_mask(x_start)
    spec = AttackSpec("pgd_linf", eps=1.0, steps=steps, step_size=0.1, restarts=restarts, batch_size=batch_size)
    x_adv = generate(spec, art_classifier(model), x_start, y, mask=mask, seed=seed)
    x_adv = np.where(mask > 0, quantize_to_bytes(x_adv), x_start)
    if strategy == "client_hello":
        x_adv = _write_echoes(x_start, x_adv, ranges)
    return RealizableAttack(x_start, x_adv, mask, attackable, predict_proba(model, x_adv), strategy,
                            predict_proba(model, np.asarray(x, np.float32)))


def _write_echoes(x_start: np.ndarray, x_adv: np.ndarray, ranges: list[list[tuple[int, int]] | None]) -> np.ndarray:
    """Copy each adversarial session id onto its ServerHello echo (found in the original image)."""
    flat_start = np.round(x_start.reshape(len(x_start), -1) * 255.0).astype(np.uint8)
    flat_adv = x_adv.reshape(len(x_adv), -1).copy()
    for i, fields in enumerate(ranges):
        echo = session_id_echo(flat_start[i].tobytes(), fields) if fields else None
        if echo is not None:
            start, end = fields[1]
            flat_adv[i, echo[0]:echo[1]] = flat_adv[i, start:end]
    return flat_adv.reshape(x_adv.shape)


# --- capture round trip ---------------------------------------------------------------------------


def round_trip(model: Any, flows: pa.Table, attack: RealizableAttack, y: np.ndarray, payload_lengths: np.ndarray,
               representation: str, representation_params: dict[str, Any], *, ingest_params: dict[str, Any] | None = None,
               mask_tls_sni: bool = False, workdir: str | os.PathLike[str] | None = None,
               binary: Any = None) -> dict[str, Any]:
    """Rebuild a capture per attacked flow, re-ingest and re-render it; measure what survives.

    ``flows`` holds the rows of the attacked images, in the same order (joined by ``flow_id``).
    Every decision is taken at the model's operating point (``binary``: the suite's
    BinaryTarget of a two-class model; arg-max otherwise). The attack's success rates count only
    flows the model classified correctly before the attack; a clean miss is not an evasion.
    """
    from pcapvision.ingest import IngestOptions, read_flows
    from pcapvision.robustness.traffic_distortions import render_for_model

    column = representation_params.get("column", "payload")
    if representation != "payload" or column not in PAYLOAD_COLUMNS:
        raise DataContractError(f"representation {representation!r} {representation_params}: the realizable attack "
                                "needs byte images (the 'payload' representation)")
    direction = 1 if column == "dst2src_payload" else 0
    options = IngestOptions(**{k: v for k, v in (ingest_params or {}).items()
                               if k in ("idle_timeout_s", "active_timeout_s", "max_bytes", "max_packets")})
    rows = flows.to_pylist()
    y = np.asarray(y, np.int64)
    pred_before = decide(attack.proba_adv, binary)
    pred_clean = decide(attack.proba_clean, binary) if attack.proba_clean is not None else np.full(len(y), -1)
    outcome: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    try:
        for i, row in enumerate(rows):
            entry: dict[str, Any] = {"flow_id": row["flow_id"], "attackable": bool(attack.attackable[i])}
            if not attack.attackable[i]:
                entry["reason"] = ("payload fills the image: no padding to append into" if attack.strategy == "append"
                                   else "the payload does not open with a ClientHello")
                outcome.append(entry)
                continue
            out = Path(tmp.name) / f"{i}.pcap"
            try:
                if attack.strategy == "append":
                    data = appended_bytes(attack.x_adv[i], int(payload_lengths[i]))
                    path = append_record_to_flow(row["source_file"], row, data, out, direction=direction)
                else:
                    if direction != 0:
                        raise DataContractError(f"{column} images do not show the client's ClientHello")
                    flat = np.round(attack.x_adv[i].reshape(-1) * 255.0).astype(np.uint8)
                    fields = client_hello_fields(flat.tobytes()) or []
                    changed = {start: flat[start:end].tobytes() for start, end in fields}
                    data = b"".join(changed.values())
                    original = np.round(attack.x_start[i].reshape(-1) * 255.0).astype(np.uint8).tobytes()
                    old_sid = original[fields[1][0]:fields[1][1]] if len(fields) > 1 else b""
                    echo = (old_sid, changed[fields[1][0]]) if len(old_sid) >= SESSION_ID_MIN_ECHO else None
                    path = rewrite_client_hello(row["source_file"], row, changed, out, echo=echo)
                    consistent, found = check_handshake(path, row)
                    if consistent and echo is not None and echo[0] != echo[1] and echo[0] in server_first_bytes(path, row):
                        consistent, found = False, "the ServerHello still echoes the old session id"
                    entry.update(handshake_consistent=consistent, handshake_check=found)
            except (DataContractError, OSError) as exc:
                entry["reason"] = " ".join(str(exc).split())
                outcome.append(entry)
                continue
            table = read_flows(path, options)
            table = table.filter(pc.equal(table.column("src_port"), row["src_port"]))
            if table.num_rows != 1:
                entry["reason"] = f"re-ingest found {table.num_rows} matching flows"
                outcome.append(entry)
                continue
            x_new, _ = render_for_model(table, representation, representation_params, mask_tls_sni)
            same = bool(np.array_equal(np.round(x_new[0] * 255), np.round(attack.x_adv[i] * 255)))
            same = same and entry.get("handshake_consistent", True)
            pred_after = int(decide(predict_proba(model, x_new), binary)[0])
            entry.update(realized=same, controlled_bytes=len(data), missed_clean=bool(pred_clean[i] != y[i]),
                         evaded_before=bool(pred_before[i] != y[i]),
                         evaded_after_round_trip=bool(pred_after != y[i]))
            outcome.append(entry)
    finally:
        tmp.cleanup()
    tried = [e for e in outcome if "realized" in e]
    correct = [e for e in tried if not e["missed_clean"]]

    def rate(entries: list[dict[str, Any]], key: str) -> float:
        return float(np.mean([e[key] for e in entries])) if entries else float("nan")

    checks = "re-rendered image equals the adversarial image"
    if attack.strategy == "client_hello":
        checks += ", and the rebuilt handshake parses consistently (scapy TLS layer)"
    return {
        "n_flows": len(rows),
        "realizability_check": checks,
        "n_attackable": int(attack.attackable.sum()),
        "n_round_tripped": len(tried),
        "decision": decision_rule(binary),
        "realizability_rate": rate(tried, "realized"),
        "miss_rate_clean": rate(tried, "missed_clean"),
        "n_detected_clean": len(correct),
        "attack_success_rate_adversarial_images": rate(correct, "evaded_before"),
        "attack_success_rate_after_round_trip": rate(correct, "evaded_after_round_trip"),
        "error_rate_after_round_trip_unconditioned": rate(tried, "evaded_after_round_trip"),
        "median_controlled_bytes": float(np.median([e["controlled_bytes"] for e in tried])) if tried else float("nan"),
        "strategy": attack.strategy,
        **({"caveat": CLIENT_HELLO_CAVEAT} if attack.strategy == "client_hello" else {}),
        "flows": outcome,
    }


__all__ = ["CLIENT_HELLO_CAVEAT", "STRATEGIES", "RealizableAttack", "appended_bytes", "client_hello_fields",
           "client_hello_mask", "realizable_attack", "record_header", "round_trip", "session_id_echo",
           "with_record_headers"]
