"""Suricata ``eve.json`` alerts -> records (one per alerted Suricata flow).

Only ``event_type == "alert"`` lines are read (others are counted). With ``--min-severity N`` an
alert is kept when its ``alert.severity`` is at most N (Suricata: 1 is the most severe). Alerts of
one Suricata flow (``flow_id``, else the 5-tuple and ``flow.start``) make one malicious record
whose family is the signature of the most severe alert (ties: the earliest). Its window runs from
the flow's start (``flow.start``; without it, :data:`LOOKBACK_S` before the first alert) to the
last alert. The record carries the alert's ``community_id``; a Community ID that differs from
the one of its 5-tuple (Suricata configured with another seed) is counted, as matching uses the
5-tuple that Community ID hashes. Flows without alerts are left unlabeled, or get
``--default-label``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pcapvision.ingest.community_id import community_id
from pcapvision.ingest.importers.records import (
    MALICIOUS,
    PROTOCOLS,
    SECOND_NS,
    FileResult,
    ImportOptions,
    Record,
    Window,
    canonical_ip,
    fail,
    local_ns,
    read_text,
)
from pcapvision.io import sha256_file

LOOKBACK_S = 1800  # pcapvision's default active timeout: no flow lasts longer


def _time_ns(text: Any, options: ImportOptions) -> int:
    return local_ns(datetime.fromisoformat(str(text).replace("Z", "+00:00")), options)


def read(path: Path, options: ImportOptions) -> FileResult:
    result = FileResult(str(path), sha256_file(path))
    groups: dict[Any, dict[str, Any]] = {}
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        result.rows += 1
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(path, line_no, f"not a JSON object ({exc.msg}); not a Suricata eve.json") from None
        if not isinstance(event, dict):
            raise fail(path, line_no, "not a JSON object; not a Suricata eve.json")
        if event.get("event_type") != "alert":
            result.skip(f"event_type_{event.get('event_type', 'missing')}")
            continue
        alert = event.get("alert") or {}
        severity = alert.get("severity", 3)
        if options.min_severity is not None and severity > options.min_severity:
            result.skip("below_min_severity")
            continue
        protocol = PROTOCOLS.get(str(event.get("proto", "")).lower())
        if protocol is None:
            result.skip("not_tcp_udp")
            continue
        try:
            src, dst = canonical_ip(event["src_ip"]), canonical_ip(event["dest_ip"])
            sport, dport = int(event["src_port"]), int(event["dest_port"])
            when = _time_ns(event["timestamp"], options)
            flow = event.get("flow") or {}
            start = _time_ns(flow["start"], options) if "start" in flow else None
        except (KeyError, ValueError, TypeError) as exc:
            raise fail(path, line_no, f"alert without a readable 5-tuple or time ({type(exc).__name__}: {exc})") from None
        ends = tuple(sorted([(src, sport), (dst, dport)]))
        key = event.get("flow_id") or (ends, protocol, start)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"line": line_no, "tuple": (src, dst, sport, dport, protocol), "first": when,
                                   "last": when, "start": start, "best": (severity, line_no, alert.get("signature")),
                                   "community_id": event.get("community_id")}
        group["first"], group["last"] = min(group["first"], when), max(group["last"], when)
        if start is not None:
            group["start"] = start if group["start"] is None else min(group["start"], start)
        group["best"] = min(group["best"], (severity, line_no, alert.get("signature")))
    mismatched = 0
    for group in groups.values():
        src, dst, sport, dport, protocol = group["tuple"]
        start = group["start"] if group["start"] is not None else group["first"] - LOOKBACK_S * SECOND_NS
        window = Window(start - options.slack_ns, group["last"] + 1000 + options.slack_ns)
        cid = group["community_id"]
        if cid is not None and cid != community_id(src, dst, sport, dport, protocol):
            mismatched += 1
        result.records.append(Record(f"{path.name}:{group['line']}", MALICIOUS, group["best"][2] or None,
                                     src, dst, sport, dport, protocol, (window,), community_id=cid))
    if mismatched:
        result.notes.append(f"{mismatched} alert flow(s) with a community_id that is not the v1 seed-0 ID of "
                            "their 5-tuple (another seed?); matched by 5-tuple")
    return result
