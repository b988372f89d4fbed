"""Label importers: each format's ground truth, crafted here, against a capture crafted with scapy.

The ground-truth files describe the flows of ``importer_data.write_capture`` the way each tool
writes them, with the traps of real datasets: a 12-hour timestamp without PM, a record in the
reverse direction, a record with no flow, two records that disagree on one flow, the 5-tuple of a
flow reused later. Expected labels are written flow by flow from those files, and compared with
what ``ingest`` gives each flow under the imported rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcapvision.errors import GroundTruthFormatError, ParameterError
from pcapvision.ingest import ImportOptions, Labeler, import_labels, ingest, read_flows
from pcapvision.ingest.community_id import community_id
from tests.ingest.importer_data import F1, F2, F3, T0_S, flow_name, write_capture

HALIFAX = ImportOptions(tz="America/Halifax")
UNLABELED = (None, None)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_capture(tmp_path_factory.mktemp("capture") / "day.pcap")


@pytest.fixture(scope="module")
def flows(capture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("flows") / "flows.parquet"
    summary = ingest([capture], out, quiet=True)
    assert summary.flows == 5
    return out


def labels_by_flow(capture: Path, rules: Path) -> dict[str, tuple[str | None, str | None]]:
    table = read_flows(capture, labeler=Labeler.from_rules_csv(rules))
    rows = table.select(["src_ip", "src_port", "first_seen_ns", "label", "family"]).to_pylist()
    return {flow_name(r["src_ip"], r["src_port"], r["first_seen_ns"]): (r["label"], r["family"]) for r in rows}


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --- cicflowmeter ---------------------------------------------------------------------------------
CIC_HEADER = "Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, Flow Duration, " \
             "Total Fwd Packets, Label\n"
CIC = CIC_HEADER + (
    "x,192.168.10.5,50000,205.174.165.73,80,6,3/7/2017 1:55,70000,5,DDoS\n"        # 2: F1, 1:55 is 13:55
    "x,192.168.10.50,22,192.168.10.8,51000,6,3/7/2017 1:55,40000,3,BENIGN\n"       # 3: F2 reversed
    "x,192.168.10.9,5353,192.168.10.3,53,17,3/7/2017 1:55,10000,1,BENIGN\n"        # 4: F3 ...
    "x,192.168.10.9,5353,192.168.10.3,53,17,3/7/2017 1:55,10000,1,PortScan\n"      # 5: ... conflict
    "x,10.9.9.9,1234,10.9.9.10,80,6,3/7/2017 1:56,10,1,BENIGN\n"                   # 6: no such flow
    "x,192.168.10.5,50000,205.174.165.73,80,6,3/7/2017 3:10,70000,5,DDoS\n"        # 7: F1's tuple, time outside
    ",,,,,,,,,\n"                                                                 # 8: blank
) + CIC_HEADER                                                                     # 9: header repeated


def test_cicflowmeter_flow_by_flow(tmp_path: Path, capture: Path, flows: Path) -> None:
    report = import_labels([write(tmp_path / "Monday.csv", CIC)], "cicflowmeter", tmp_path / "rules.csv", HALIFAX,
                           flows=flows)
    assert labels_by_flow(capture, tmp_path / "rules.csv") == {
        "F1": ("malicious", "DDoS"), "F2": ("normal", None), "F3": UNLABELED, "F4": UNLABELED, "F5": UNLABELED}
    records, matched_flows = report.match["records"], report.match["flows"]
    assert records["labeled_total"] == 6
    assert records["labeled_matched"] == 4
    assert records["labeled_unmatched_no_flow_with_5tuple"] == 1
    assert records["labeled_unmatched_time_outside"] == 1
    assert records["labeled_reversed_direction"] == 1
    assert records["labeled_matched_pm_reading"] == 4 and "labeled_matched_am_reading" not in records
    assert records["labeled_5tuple_reused_told_apart_by_time"] == 1        # F1's record did not take F5
    assert matched_flows == {"total": 5, "matched_no_record": 2, "matched_no_record_5tuple_known_at_other_times": 1,
                             "matched_one_record": 2,
                             "matched_several_records_agreeing": 0, "conflict": 1,
                             "labels_by_rules": {"malicious": 1, "normal": 1, "unlabeled": 3}, "rules_disagree": 0}
    examples = report.match["examples"]
    assert examples["flow_conflict"][0]["records"] == ["Monday.csv:4", "Monday.csv:5"]
    assert examples["labeled_no_flow_with_5tuple"][0]["record"] == "Monday.csv:6"
    assert examples["labeled_time_outside"][0]["flows_with_5tuple"] == 2
    assert report.files[0].skipped == {"blank_row": 1, "repeated_header": 1}
    assert len(report.conflicts) == 2                                     # its am and its pm window
    on_disk = json.loads((tmp_path / "rules.match.json").read_text())
    assert on_disk["match"]["flows"] == matched_flows and on_disk["params"]["tz"] == "America/Halifax"
    text = report.format()
    assert report.match["time_outside_shift_h"] == {"-1.0": 1} and "time outside:" not in text   # one record
    assert "matched a flow: 4 of 6" in text and "conflict 1" in text and "pm 4" in text


def test_cicflowmeter_wrong_zone_or_clock_lands_nothing_and_says_so(tmp_path: Path, flows: Path) -> None:
    csv_path = write(tmp_path / "Monday.csv", CIC)
    # UTC instead of UTC-3: the flows start 3 h after the records; a 24-hour reading of 1:55: 12 h.
    for options, shift in ((ImportOptions(), "+3.0"), (ImportOptions(tz="America/Halifax", clock="24"), "+12.0")):
        report = import_labels([csv_path], "cicflowmeter", tmp_path / "rules.csv", options, flows=flows)
        assert report.match["records"]["labeled_matched"] == 0
        assert report.match["records"]["labeled_unmatched_time_outside"] == 5
        assert report.match["flows"]["labels_by_rules"] == {"unlabeled": 5}
        assert next(iter(report.match["time_outside_shift_h"].items())) == (shift, 4)   # F1, F2, F3 twice
        assert f"4 of 5 such records miss their nearest flow by {shift} h - check --tz" in report.format()


def test_cicflowmeter_seconds_ampm_cp1252_and_2018_headers(tmp_path: Path, capture: Path) -> None:
    text = ("Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Label\n"
            "192.168.10.5,50000,205.174.165.73,80,6,03/07/2017 01:55:10 PM,70000,Web Attack \u2013 Brute Force\n"
            "192.168.10.8,51000,192.168.10.50,22,6,03/07/2017 13:55:15,-5,Benign\n")
    report = import_labels([write(tmp_path / "w.csv", text, "cp1252")], "cicflowmeter", tmp_path / "r.csv", HALIFAX)
    assert labels_by_flow(capture, tmp_path / "r.csv") == {
        "F1": ("malicious", "Web Attack \u2013 Brute Force"), "F2": ("normal", None),
        "F3": UNLABELED, "F4": UNLABELED, "F5": UNLABELED}
    assert report.files[0].skipped == {"negative_duration_taken_as_0": 1}
    assert report.match is None and "no flows table given" in report.format()


def test_cicflowmeter_errors_name_file_and_line(tmp_path: Path) -> None:
    bad_time = write(tmp_path / "t.csv", CIC_HEADER + "x,1.2.3.4,1,5.6.7.8,2,6,yesterday,1,1,BENIGN\n")
    with pytest.raises(GroundTruthFormatError, match=r"t\.csv:2: column 'Timestamp': 'yesterday'"):
        import_labels([bad_time], "cicflowmeter", tmp_path / "r.csv")
    no_ip = write(tmp_path / "n.csv", "Dst Port,Protocol,Timestamp,Label\n80,6,3/7/2017 1:55,Benign\n")
    with pytest.raises(GroundTruthFormatError, match=r"n\.csv:1: no 'Source IP' / 'Src IP' column"):
        import_labels([no_ip], "cicflowmeter", tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()


def test_a_bad_file_does_not_stop_the_others(tmp_path: Path, capture: Path) -> None:
    good = write(tmp_path / "good.csv", CIC)
    bad = write(tmp_path / "bad.csv", "not,a,flow,csv\n1,2,3,4\n")
    report = import_labels([str(tmp_path / "*.csv")], "cicflowmeter", tmp_path / "rules.csv", HALIFAX)
    assert [f.path for f in report.files] == [str(good)]
    assert [f["path"] for f in report.failed] == [str(bad)]
    assert "bad.csv:1: no 'Source IP'" in report.failed[0]["error"]
    assert labels_by_flow(capture, tmp_path / "rules.csv")["F1"] == ("malicious", "DDoS")


# --- binetflow ------------------------------------------------------------------------------------
BINETFLOW = (
    "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label\n"
    "2017/07/03 13:55:10.000000,0.070,tcp,192.168.10.5,50000,   ->,205.174.165.73,80,FSPA_FSPA,0,0,8,500,250,"
    "flow=From-Botnet-V42-TCP-CC6-Plain-HTTP\n"
    "2017/07/03 13:55:15.000100,0.040,tcp,192.168.10.50,22,   <-,192.168.10.8,51000,SPA_SPA,0,0,5,300,100,"
    "flow=From-Normal-V42-Jist\n"
    "2017/07/03 13:55:30.000000,0.010,udp,192.168.10.9,5353,  <->,192.168.10.3,53,CON,0,0,2,120,60,"
    "flow=From-Normal-V42-UDP-DNS\n"
    "2017/07/03 13:55:30.000000,0.010,udp,192.168.10.9,5353,  <->,192.168.10.3,53,CON,0,0,2,120,60,"
    "flow=From-Botnet-V42-UDP-DNS\n"
    "2017/07/03 13:55:30.000000,0.010,udp,192.168.10.12,40000,  <->,8.8.8.8,53,CON,0,0,2,120,60,"
    "flow=Background-UDP-Established\n"
    "2017/07/03 13:55:12.000000,0.000,icmp,192.168.10.5,0x0008,   ->,192.168.10.1,0x0000,ECO,0,,1,98,98,"
    "flow=Background\n"
    "2017/07/03 13:56:00.000000,0.000,tcp,10.9.9.9,1234,   ->,10.9.9.10,0x0050,S_,0,,1,60,60,flow=From-Normal-V42\n"
)


def test_binetflow_flow_by_flow(tmp_path: Path, capture: Path, flows: Path) -> None:
    # The F3 rows are 10 s off the capture (as CTU-13 clocks can be): --time-slack 15 brings them in.
    options = ImportOptions(tz="America/Halifax", time_slack_s=15.0)
    report = import_labels([write(tmp_path / "capture.binetflow", BINETFLOW)], "binetflow", tmp_path / "rules.csv",
                           options, flows=flows)
    assert labels_by_flow(capture, tmp_path / "rules.csv") == {
        "F1": ("malicious", "From-Botnet-V42-TCP-CC6-Plain-HTTP"), "F2": ("normal", None), "F3": UNLABELED,
        "F4": UNLABELED, "F5": UNLABELED}
    records = report.match["records"]
    assert (records["labeled_total"], records["labeled_matched"], records["unlabeled_total"],
            records["unlabeled_matched"]) == (5, 4, 1, 1)
    assert records["labeled_unmatched_no_flow_with_5tuple"] == 1 and records["labeled_reversed_direction"] == 1
    assert report.match["flows"]["conflict"] == 1 and report.match["flows"]["rules_disagree"] == 0
    assert report.files[0].skipped == {"not_tcp_udp": 1}

    strict = import_labels([tmp_path / "capture.binetflow"], "binetflow", tmp_path / "strict.csv", HALIFAX,
                           flows=flows)
    assert strict.match["records"]["labeled_unmatched_time_outside"] == 2           # F3's two rows
    assert labels_by_flow(capture, tmp_path / "strict.csv")["F3"] == UNLABELED


# --- zeek -----------------------------------------------------------------------------------------
ZEEK_FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
               "conn_state"]
ZEEK_ROWS = [  # offset s, uid, tuple, duration, label, detailed label
    (0.0, "C1", F1, "0.07", "Malicious", "C&C"),
    (5.0, "C2", (F2[2], F2[3], F2[0], F2[1], 6), "0.04", "Benign", "-"),
    (10.0, "C3", F3, "-", "Benign", "-"),
    (10.0, "C4", F3, "0.01", "Malicious", "PartOfAHorizontalPortScan"),
    (60.0, "C5", ("10.9.9.9", 1234, "10.9.9.10", 80, 6), "-", "Benign", "-"),
    (400.0, "C6", F1, "0.02", "Malicious", "PartOfAHorizontalPortScan"),
    (12.0, "C7", ("192.168.10.5", 8, "192.168.10.1", 0, 1), "-", "Benign", "-"),
]
ZEEK_EXPECTED = {"F1": ("malicious", "C&C"), "F2": ("normal", None), "F3": UNLABELED, "F4": UNLABELED,
                 "F5": ("malicious", "PartOfAHorizontalPortScan")}


def _zeek_cells(offset: float, uid: str, flow: tuple, duration: str) -> list[str]:
    proto = {6: "tcp", 17: "udp", 1: "icmp"}[flow[4]]
    return [f"{T0_S + offset:.6f}", uid, flow[0], str(flow[1]), flow[2], str(flow[3]), proto, "-", duration, "SF"]


def test_zeek_iot23_labeled_tsv(tmp_path: Path, capture: Path, flows: Path) -> None:
    lines = ["#separator \\x09", "#set_separator\t,", "#unset_field\t-", "#path\tconn",
             "#fields\t" + "\t".join(ZEEK_FIELDS) + "\ttunnel_parents   label   detailed-label",
             "#types\t" + "\t".join(["time", "string"] + ["x"] * 8) + "\tset[string]   string   string"]
    for offset, uid, flow, duration, label, detail in ZEEK_ROWS:
        # IoT-23 separates its last three columns with three spaces.
        lines.append("\t".join(_zeek_cells(offset, uid, flow, duration)) + f"\t-   {label}   {detail}")
    lines.append("#close\t2018-05-09-12-00-00")
    path = write(tmp_path / "conn.log.labeled", "\n".join(lines) + "\n")
    report = import_labels([path], "zeek", tmp_path / "rules.csv", flows=flows)
    assert labels_by_flow(capture, tmp_path / "rules.csv") == ZEEK_EXPECTED
    records = report.match["records"]
    assert (records["labeled_total"], records["labeled_matched"], records["labeled_reversed_direction"]) == (6, 5, 1)
    assert records["labeled_unmatched_no_flow_with_5tuple"] == 1
    assert records["labeled_5tuple_reused_told_apart_by_time"] == 2                 # C1 and C6
    assert report.match["flows"]["conflict"] == 1 and report.files[0].skipped == {"not_tcp_udp": 1}


def test_zeek_json_with_labels_joined_on_uid(tmp_path: Path, capture: Path, flows: Path) -> None:
    log_lines, label_lines = [], ["uid,label,detailed-label"]
    for offset, uid, flow, duration, label, detail in ZEEK_ROWS:
        obj = dict(zip(ZEEK_FIELDS, _zeek_cells(offset, uid, flow, duration)))
        obj.update({"ts": T0_S + offset, "id.orig_p": flow[1], "id.resp_p": flow[3]})
        if duration == "-":
            del obj["duration"]
        log_lines.append(json.dumps(obj))
        label_lines.append(f"{uid},{label},{detail}")
    label_lines.append("C99,Malicious,Okiru")  # a uid the log does not have
    conn = write(tmp_path / "conn.log", "\n".join(log_lines) + "\n")
    uid_labels = write(tmp_path / "labels.csv", "\n".join(label_lines) + "\n")
    report = import_labels([conn], "zeek", tmp_path / "rules.csv", ImportOptions(uid_labels=str(uid_labels)),
                           flows=flows)
    assert labels_by_flow(capture, tmp_path / "rules.csv") == ZEEK_EXPECTED
    assert report.files[0].notes == [f"1 uid(s) of {uid_labels} not in this conn.log"]
    with pytest.raises(GroundTruthFormatError, match=r"conn\.log: no 'label' field .*--uid-labels"):
        import_labels([conn], "zeek", tmp_path / "r2.csv")


# --- suricata -------------------------------------------------------------------------------------
def _alert(flow: tuple, offset: float, flow_id: int, signature: str, severity: int, *, start: float | None = None,
           cid: str | None = None) -> str:
    def iso(seconds_after_t0: float) -> str:
        # Local time with its offset, as Suricata writes it (13:55:10-0300 is T0).
        total = 13 * 3600 + 55 * 60 + 10 + seconds_after_t0
        h, rest = divmod(total, 3600)
        m, s = divmod(rest, 60)
        return f"2017-07-03T{int(h):02d}:{int(m):02d}:{s:09.6f}-0300"

    event = {"timestamp": iso(offset), "flow_id": flow_id, "event_type": "alert", "src_ip": flow[0],
             "src_port": flow[1], "dest_ip": flow[2], "dest_port": flow[3], "proto": "TCP" if flow[4] == 6 else "UDP",
             "community_id": cid or community_id(flow[0], flow[2], flow[1], flow[3], flow[4]), "alert": {"signature": signature, "severity": severity}}
    if start is not None:
        event["flow"] = {"start": iso(start)}
    return json.dumps(event)


def test_suricata_alerts_by_community_id(tmp_path: Path, capture: Path, flows: Path) -> None:
    reversed_f2 = (F2[2], F2[3], F2[0], F2[1], 6)
    eve = "\n".join([
        _alert(F1, 0.03, 111, "ET SCAN Suspicious User-Agent", 2, start=0.0),
        _alert(F1, 0.04, 111, "ET TROJAN Tinba Checkin", 1, start=0.0),       # most severe of the flow: family
        _alert(reversed_f2, 5.04, 222, "ET POLICY SSH banner", 1, cid="1:AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        _alert(F3, 10.01, 333, "ET INFO DNS query", 3, start=10.0),          # below --min-severity 2
        json.dumps({"timestamp": "2017-07-03T13:55:30.000000-0300", "event_type": "flow", "flow_id": 444}),
        _alert(("10.9.9.9", 1234, "10.9.9.10", 80, 6), 50.0, 555, "ET SCAN nmap", 1),
    ]) + "\n"
    options = ImportOptions(min_severity=2, default_label="normal")
    report = import_labels([write(tmp_path / "eve.json", eve)], "suricata", tmp_path / "rules.csv", options,
                           flows=flows)
    assert labels_by_flow(capture, tmp_path / "rules.csv") == {
        "F1": ("malicious", "ET TROJAN Tinba Checkin"), "F2": ("malicious", "ET POLICY SSH banner"),
        "F3": ("normal", None), "F4": ("normal", None), "F5": ("normal", None)}
    assert report.files[0].skipped == {"below_min_severity": 1, "event_type_flow": 1}
    assert report.files[0].notes[0].startswith("1 alert flow(s) with a community_id that is not")
    records = report.match["records"]
    assert (records["labeled_total"], records["labeled_matched"], records["labeled_reversed_direction"]) == (3, 2, 1)
    assert report.match["flows"]["labels_by_rules"] == {"malicious": 2, "normal": 3}
    assert report.match["flows"]["rules_disagree"] == 0


# --- folders --------------------------------------------------------------------------------------
@pytest.fixture()
def class_tree(tmp_path: Path) -> Path:
    src = tmp_path / "USTC"
    write_capture(src / "Benign" / "Facetime.pcap", ("F4",))
    write_capture(src / "Malware" / "Tinba" / "tinba[1].pcap", ("F1",))
    (src / "Malware" / "README.txt").write_text("not a capture")
    return src


def _labels_by_file(src: Path, rules: Path, tmp_path: Path) -> dict[str, set[tuple]]:
    import pyarrow.parquet as pq

    ingest([src], tmp_path / "folder-flows.parquet", labeler=Labeler.from_rules_csv(rules), quiet=True)
    rows = pq.read_table(tmp_path / "folder-flows.parquet", columns=["source_file", "label", "family"]).to_pylist()
    out: dict[str, set[tuple]] = {}
    for row in rows:
        out.setdefault(Path(row["source_file"]).name, set()).add((row["label"], row["family"]))
    return out


def test_folders_class_level_and_well_known_names(tmp_path: Path, class_tree: Path) -> None:
    report = import_labels([class_tree], "folders", tmp_path / "rules.csv")
    assert _labels_by_file(class_tree, tmp_path / "rules.csv", tmp_path) == {
        "Facetime.pcap": {("normal", "Benign")}, "tinba[1].pcap": {("malicious", "Malware")}}
    level2 = import_labels([class_tree], "folders", tmp_path / "rules2.csv", ImportOptions(class_level=2),
                           flows=tmp_path / "folder-flows.parquet")
    assert _labels_by_file(class_tree, tmp_path / "rules2.csv", tmp_path) == {
        "Facetime.pcap": {UNLABELED}, "tinba[1].pcap": {("malicious", "Tinba")}}   # label from 'Malware' above
    assert level2.files[0].skipped == {"no_class_in_path": 1}
    assert report.match is None and level2.match["flows"]["rules_disagree"] == 0
    assert level2.match["records"]["labeled_unmatched_no_flow_from_file"] == 0
    assert "labelled records that matched a flow: 1 of 1 (100.0%)" in level2.format()


def test_folders_regex_and_class_map(tmp_path: Path, class_tree: Path) -> None:
    write_capture(class_tree / "Games" / "WorldOfWarcraft.pcap", ("F2",))
    with pytest.raises(GroundTruthFormatError, match=r"no label for class 'Games' \(e\.g\. Games/WorldOfWarcraft"):
        import_labels([class_tree], "folders", tmp_path / "rules.csv")
    class_map = write(tmp_path / "map.csv", "class,label\ngames,normal\nTinba,malicious\nFacetime,normal\n")
    options = ImportOptions(class_regex=r"(?P<class>[^/]+)/[^/]+$", class_map=str(class_map))
    import_labels([class_tree], "folders", tmp_path / "rules.csv", options)
    assert _labels_by_file(class_tree, tmp_path / "rules.csv", tmp_path) == {
        "Facetime.pcap": {("normal", "Benign")}, "tinba[1].pcap": {("malicious", "Tinba")},
        "WorldOfWarcraft.pcap": {("normal", "Games")}}


def test_options_are_validated_in_one_place(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"The 'tz' parameter must be an IANA time zone .* Got 'Mars/Base'"):
        ImportOptions(tz="Mars/Base")
    with pytest.raises(ParameterError, match=r"The 'time_slack_s' parameter must be a number in \[0.0, inf\)"):
        ImportOptions(time_slack_s=-1)
    with pytest.raises(ParameterError, match=r"The 'class_regex' parameter must be a regular expression. Got '\('"):
        ImportOptions(class_regex="(")
    with pytest.raises(ParameterError, match="'class_level' and 'class_regex' parameters cannot be combined"):
        ImportOptions(class_level=1, class_regex="x")
    with pytest.raises(ParameterError, match=r"The 'format' parameter must be one of"):
        import_labels([tmp_path], "argus", tmp_path / "r.csv")


def test_a_record_spanning_two_flows_labels_both(tmp_path: Path, capture: Path, flows: Path) -> None:
    # One long Zeek connection that pcapvision cut in two (F1, then F5 on the same 5-tuple).
    lines = ["#separator \\x09", "#fields\t" + "\t".join(ZEEK_FIELDS) + "\tlabel\tdetailed-label",
             "\t".join(_zeek_cells(0.0, "C1", F1, "450.0")) + "\tMalicious\tOkiru"]
    path = write(tmp_path / "conn.log", "\n".join(lines) + "\n")
    report = import_labels([path], "zeek", tmp_path / "rules.csv", flows=flows)
    labels = labels_by_flow(capture, tmp_path / "rules.csv")
    assert labels["F1"] == labels["F5"] == ("malicious", "Okiru")
    assert report.match["records"]["labeled_matched_several_flows"] == 1
    assert report.match["examples"]["labeled_matched_several_flows"][0]["flows"] == 2
