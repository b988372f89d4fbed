"""Property: the rules written from any set of records label every flow as the records say.

Oracle, written from the definition and not from the code: a flow is covered by the records of
its 5-tuple (either direction) with a window holding its start; it gets their label when they all
agree (and their family when that agrees too), no label when they disagree or none covers it.
The rules file is run through the same ``Labeler`` ingest uses; the report's own matching must
agree with both.
"""

from __future__ import annotations

import calendar
import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapvision.ingest import Labeler
from pcapvision.ingest.importers import cicflowmeter
from pcapvision.ingest.importers.matcher import match_flows
from pcapvision.ingest.importers.records import ImportOptions, Record, Window
from pcapvision.ingest.importers.rules import build_rules, write_rules

TUPLES = [("10.0.0.1", 1000, "10.0.0.2", 80, 6), ("10.0.0.1", 1000, "10.0.0.2", 80, 17),
          ("10.0.0.3", 53, "10.0.0.1", 1000, 17)]
S = 10**9

records_strategy = st.lists(st.tuples(
    st.sampled_from(range(len(TUPLES))), st.booleans(),
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10)), min_size=1, max_size=2),
    st.sampled_from(["malicious", "normal", None]), st.sampled_from(["a", "b", None])), max_size=8)
flows_strategy = st.lists(st.tuples(st.sampled_from(range(len(TUPLES))), st.booleans(), st.integers(0, 42)),
                          max_size=12)


def _record(i: int, spec: tuple) -> Record:
    t, reverse, windows, label, family = spec
    src, sport, dst, dport, proto = TUPLES[t]
    if reverse:
        src, sport, dst, dport = dst, dport, src, sport
    return Record(f"gt.csv:{i + 2}", label, family, src, dst, sport, dport, proto,
                  tuple(Window(start * S, (start + length) * S) for start, length in windows))


def _flows(specs: list[tuple]) -> pa.Table:
    rows = []
    for i, (t, reverse, start) in enumerate(specs):
        src, sport, dst, dport, proto = TUPLES[t]
        if reverse:
            src, sport, dst, dport = dst, dport, src, sport
        rows.append({"flow_id": f"f{i}", "src_ip": src, "dst_ip": dst, "src_port": sport, "dst_port": dport,
                     "protocol": proto, "first_seen_ns": start * S, "source_file": "cap.pcap", "tls_sni": None,
                     "label": None, "family": None, "label_source": None})
    schema = pa.schema([("flow_id", pa.string()), ("src_ip", pa.string()), ("dst_ip", pa.string()),
                        ("src_port", pa.uint16()), ("dst_port", pa.uint16()), ("protocol", pa.uint8()),
                        ("first_seen_ns", pa.int64()), ("source_file", pa.string()), ("tls_sni", pa.string()),
                        ("label", pa.string()), ("family", pa.string()), ("label_source", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def _oracle(records: list[Record], flow: dict) -> tuple[str | None, str | None]:
    ends = {(flow["src_ip"], flow["src_port"]), (flow["dst_ip"], flow["dst_port"])}
    covering = [r for r in records if r.label is not None and r.protocol == flow["protocol"]
                and {(r.src_ip, r.src_port), (r.dst_ip, r.dst_port)} == ends
                and any(w.from_ns <= flow["first_seen_ns"] < w.to_ns for w in r.windows)]
    labels = {r.label for r in covering}
    if len(labels) != 1:
        return None, None
    families = {r.family for r in covering}
    return labels.pop(), families.pop() if len(families) == 1 else None


@settings(max_examples=40, deadline=None)
@given(records_strategy, flows_strategy)
def test_rules_label_each_flow_as_the_records_say(record_specs: list[tuple], flow_specs: list[tuple]) -> None:
    records = [_record(i, spec) for i, spec in enumerate(record_specs)]
    flows = _flows(flow_specs)
    rows, _ = build_rules(records)
    with tempfile.TemporaryDirectory() as tmp:
        rules = write_rules(rows, Path(tmp) / "rules.csv")
        labels, families, _ = Labeler.from_rules_csv(rules).assign(flows, "cap.pcap")
        report = match_flows(records, flows, rules)
    expected = [_oracle(records, flow) for flow in flows.to_pylist()]
    assert list(zip(labels.to_pylist(), families.to_pylist())) == expected
    assert report["flows"]["rules_disagree"] == 0
    conflicts = sum(1 for flow in flows.to_pylist() if len({r.label for r in records if r.label is not None
                                                             and _oracle([r], flow)[0] is not None}) > 1)
    assert report["flows"]["conflict"] == conflicts


@settings(max_examples=60, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31)), st.booleans(),
       st.booleans())
def test_cicflowmeter_timestamps_keep_the_true_minute_in_a_window(moment: datetime, twelve_hour: bool,
                                                                  with_seconds: bool) -> None:
    """Written as CICFlowMeter does (d/m/yyyy, 12-hour without AM/PM or 24-hour, seconds or not),
    the true instant lies in one of the record's windows; a 12-hour file gives an am and a pm one."""
    moment = moment.replace(microsecond=0) if with_seconds else moment.replace(second=0, microsecond=0)
    hour = (moment.hour % 12 or 12) if twelve_hour else moment.hour
    stamp = f"{moment.day}/{moment.month}/{moment.year} {hour}:{moment.minute:02d}" + (
        f":{moment.second:02d}" if with_seconds else "")
    text = "Source IP,Source Port,Destination IP,Destination Port,Protocol,Timestamp,Flow Duration,Label\n" \
           f"10.0.0.1,1000,10.0.0.2,80,6,{stamp},0,BENIGN\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.csv"
        path.write_text(text)
        record = cicflowmeter.read(path, ImportOptions(time_slack_s=0)).records[0]
    truth = calendar.timegm(moment.timetuple()) * S
    assert any(w.from_ns <= truth < w.to_ns for w in record.windows)
    ambiguous = not (moment.hour == 0 or moment.hour > 12) or twelve_hour
    assert len(record.windows) == (2 if ambiguous else 1)
