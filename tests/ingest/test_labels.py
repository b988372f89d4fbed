"""Label rules: parsing, each condition, first-match-wins, the 5-tuple index, errors."""

from __future__ import annotations

import fnmatch
import ipaddress
import pickle
import random
from pathlib import Path

import pyarrow as pa
import pytest

from pcapvision.errors import InputNotFoundError, ParameterError
from pcapvision.ingest.labels import Labeler, LabelRulesError, parse_time_ns

SCHEMA = pa.schema([
    ("src_ip", pa.string()), ("dst_ip", pa.string()), ("src_port", pa.uint16()), ("dst_port", pa.uint16()),
    ("protocol", pa.uint8()), ("first_seen_ns", pa.int64()), ("tls_sni", pa.string()),
    ("label", pa.string()), ("family", pa.string()), ("label_source", pa.string()),
])
T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z


def flows(*rows: tuple) -> pa.RecordBatch:
    """rows: (src_ip, dst_ip, src_port, dst_port, protocol, first_seen_ns, sni)."""
    cols = list(zip(*rows)) if rows else [[]] * 7
    arrays = [pa.array(list(c), t) for c, t in zip(cols, SCHEMA.types[:7])]
    arrays += [pa.nulls(len(rows), pa.string())] * 3
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def write_rules(tmp_path: Path, text: str, name: str = "rules.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def labelled(labeler: Labeler, batch: pa.RecordBatch, source_file: str = "cap.pcap") -> list[tuple]:
    out = labeler.apply(batch, source_file)
    return list(zip(out.column("label").to_pylist(), out.column("family").to_pylist(),
                    out.column("label_source").to_pylist()))


BATCH = flows(
    ("10.0.0.1", "93.184.216.34", 50000, 443, 6, T0, "www.Example.com"),
    ("10.0.0.2", "8.8.8.8", 53000, 53, 17, T0 + 5 * 10**9, None),
    ("2001:db8::1", "2001:db8:1::2", 40000, 80, 6, T0 + 10 * 10**9, None),
    ("192.168.1.5", "10.0.0.9", 1234, 22, 6, T0 + 20 * 10**9, None),
)


def test_from_label_labels_every_flow() -> None:
    rows = labelled(Labeler.from_label("malicious", family="c2-beacon"), BATCH)
    assert rows == [("malicious", "c2-beacon", "--label")] * 4


def test_from_label_rejects_empty_name() -> None:
    with pytest.raises(ParameterError, match="'label' parameter"):
        Labeler.from_label("  ")


def test_each_condition_and_first_match_wins(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, (
        "label,family,rule_id,src_ip,dst_ip,ip,src_port,dst_port,port,protocol,sni,time_from,time_to,file\n"
        "web,https,,,,,,,,tcp,*.example.com,,,\n"          # line 2: row 0 by SNI glob (case-insensitive)
        "dns,,dns-rule,,8.8.8.0/24,,,,53,udp,,,,\n"        # line 3: row 1 by CIDR + port either end
        "v6,,,2001:db8::/32,,,,80,,,,,,\n"                 # line 4: row 2 by IPv6 CIDR
        "never,,,,,,,,,,,,,other*.pcap\n"                  # line 5: file glob does not match
        "ssh,,,,,10.0.0.9,,,,6,,2023-11-14T22:13:30,1700000030,\n"  # line 6: row 3, ip either end + time
        "late,,,,,,,,,,,,,\n"                              # line 7: would match everything, never reached
    ))
    rows = labelled(Labeler.from_rules_csv(rules), BATCH)
    assert rows == [
        ("web", "https", "rules.csv:2"),
        ("dns", None, "dns-rule"),
        ("v6", None, "rules.csv:4"),
        ("ssh", None, "rules.csv:6"),
    ]


def test_file_glob_matches_path_or_name(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "label,file\ninfected,*infected*.pcap\nbenign,captures/clean/*\n")
    labeler = Labeler.from_rules_csv(rules)
    assert labelled(labeler, BATCH, "/data/x/2024-infected-host.pcap")[0][0] == "infected"
    assert labelled(labeler, BATCH, "captures/clean/a.pcapng")[0][0] == "benign"
    assert labelled(labeler, BATCH, "captures/other/a.pcapng")[0][0] is None


def test_port_range_and_protocol_number(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "label,src_port,protocol\nephemeral,50000-53000,6\nanything-udp,,17\n")
    rows = labelled(Labeler.from_rules_csv(rules), BATCH)
    assert [r[0] for r in rows] == ["ephemeral", "anything-udp", None, None]


def test_time_range_is_half_open(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, f"label,time_from,time_to\nfirst,{T0 // 10**9},{T0 // 10**9 + 5}\n")
    rows = labelled(Labeler.from_rules_csv(rules), BATCH)
    assert [r[0] for r in rows] == ["first", None, None, None]


def test_default_label_and_drop(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "label,dst_port\nweb,443\n")
    rows = labelled(Labeler.from_rules_csv(rules, default_label="normal", default_family="bg"), BATCH)
    assert rows == [("web", None, "rules.csv:2")] + [("normal", "bg", "--default-label")] * 3
    dropped = Labeler.from_rules_csv(rules, unlabeled="drop").apply(BATCH, "cap.pcap")
    assert dropped.num_rows == 1
    assert dropped.column("src_ip").to_pylist() == ["10.0.0.1"]
    kept = Labeler.from_rules_csv(rules, unlabeled="keep").apply(BATCH, "cap.pcap")
    assert kept.column("label").to_pylist() == ["web", None, None, None]


def test_default_family_needs_default_label(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "label\nx\n")
    with pytest.raises(ParameterError, match="default_label"):
        Labeler.from_rules_csv(rules, default_family="bg")


def test_exact_rules_respect_rule_order(tmp_path: Path) -> None:
    # The 5-tuple index must not let a later exact rule beat an earlier scanned rule, nor the reverse.
    rules = write_rules(tmp_path, (
        "label,src_ip,dst_ip,src_port,dst_port,protocol,sni\n"
        "exact-sni,10.0.0.1,93.184.216.34,50000,443,tcp,nomatch.org\n"  # exact key, SNI fails
        "scanned,10.0.0.0/8,,,,,\n"
        "exact-late,10.0.0.1,93.184.216.34,50000,443,tcp,\n"             # shadowed by 'scanned'
        "exact-first,::ffff:192.168.1.5,10.0.0.9,1234,22,6,\n"           # IPv4-mapped text, exact key
    ))
    rows = labelled(Labeler.from_rules_csv(rules), BATCH)
    assert [r[0] for r in rows] == ["scanned", "scanned", None, "exact-first"]


def test_5tuple_rule_matches_either_direction(tmp_path: Path) -> None:
    """A rule written client -> server labels the flow even when the capture saw the server first
    (no SYN: the initiator is whoever sent first); rules short of an exact 5-tuple stay directional."""
    rules = write_rules(tmp_path, "label,src_ip,dst_ip,src_port,dst_port,protocol\n"
                                  "c2s,10.0.0.1,93.184.216.34,50000,443,tcp\n"
                                  "partial,10.0.0.2,8.8.8.8,53000,53,\n")
    server_first = flows(("93.184.216.34", "10.0.0.1", 443, 50000, 6, T0, None),
                         ("10.0.0.1", "93.184.216.34", 50000, 443, 6, T0, None),
                         ("10.0.0.1", "93.184.216.34", 50000, 443, 17, T0, None),  # other protocol
                         ("8.8.8.8", "10.0.0.2", 53, 53000, 17, T0, None),
                         ("10.0.0.2", "8.8.8.8", 53000, 53, 17, T0, None))
    assert [r[0] for r in labelled(Labeler.from_rules_csv(rules), server_first)] == \
        ["c2s", "c2s", None, None, "partial"]


def _reference_label(rules: list[dict], row: tuple, source_file: str) -> str | None:
    """Row-by-row, rule-by-rule matcher: the semantics of docs/contracts.md written plainly."""
    src, dst, sport, dport, proto, first_seen, sni = row

    def in_net(ip: str, net: str) -> bool:
        a = ipaddress.ip_address(ip)
        n = ipaddress.ip_network(net, strict=False)
        return a.version == n.version and a in n

    for rule in rules:
        src, dst, sport, dport = row[:4]
        exact = all(rule[c] for c in ("src_ip", "dst_ip", "src_port", "dst_port", "protocol"))
        if exact and (dst, src, dport, sport) == (rule["src_ip"], rule["dst_ip"], int(rule["src_port"]),
                                                  int(rule["dst_port"])):
            src, dst, sport, dport = dst, src, dport, sport  # an exact 5-tuple matches either direction
        if rule["src_ip"] and not in_net(src, rule["src_ip"]):
            continue
        if rule["dst_ip"] and not in_net(dst, rule["dst_ip"]):
            continue
        if rule["ip"] and not (in_net(src, rule["ip"]) or in_net(dst, rule["ip"])):
            continue
        if rule["src_port"] and sport != int(rule["src_port"]):
            continue
        if rule["dst_port"] and dport != int(rule["dst_port"]):
            continue
        if rule["protocol"] and proto != {"tcp": 6, "udp": 17}[rule["protocol"]]:
            continue
        if rule["sni"] and (sni is None or not fnmatch.fnmatchcase(sni.lower(), rule["sni"])):
            continue
        if rule["file"] and not fnmatch.fnmatchcase(source_file, rule["file"]):
            continue
        return rule["label"]
    return None


def test_vectorised_matching_equals_reference(tmp_path: Path) -> None:
    rng = random.Random(7)
    hosts = [f"10.0.{i}.{j}" for i in range(3) for j in range(1, 5)] + ["2001:db8::1", "2001:db8::2"]
    rows = []
    for i in range(400):
        src, dst = rng.sample(hosts, 2)
        if (":" in src) != (":" in dst):
            dst = src.replace("1", "2") if ":" in src else "10.0.0.1"
        rows.append((src, dst, rng.choice([1000, 2000, 3000]), rng.choice([53, 80, 443]), rng.choice([6, 17]),
                     T0 + i, rng.choice([None, "a.example.com", "b.test.org"])))
    rows += [(dst, src, dport, sport, proto, T0 + 1000 + i, sni)  # the same conversations seen server-first
             for i, (src, dst, sport, dport, proto, _, sni) in enumerate(rows[:100])]
    columns = ["label", "src_ip", "dst_ip", "ip", "src_port", "dst_port", "protocol", "sni", "file"]
    rules = []
    for r in range(120):
        row = rng.choice(rows)
        exact = rng.random() < 0.5
        rule = {c: "" for c in columns}
        rule["label"] = f"r{r}"
        if exact:  # a 5-tuple rule, sometimes with an extra condition
            rule.update(src_ip=row[0], dst_ip=row[1], src_port=str(row[2]), dst_port=str(row[3]),
                        protocol={6: "tcp", 17: "udp"}[row[4]])
            if rng.random() < 0.3:
                rule["sni"] = rng.choice(["*.example.com", "*.org"])
        else:
            for c in rng.sample(["ip", "src_ip", "dst_port", "protocol", "sni", "file", "src_port"], rng.randint(1, 3)):
                rule[c] = {
                    "ip": rng.choice(["10.0.1.0/24", "10.0.0.0/16", "2001:db8::/64", row[0]]),
                    "src_ip": rng.choice(["10.0.2.0/24", row[0]]),
                    "dst_port": str(rng.choice([53, 80, 443])), "src_port": str(rng.choice([1000, 2000])),
                    "protocol": rng.choice(["tcp", "udp"]),
                    "sni": rng.choice(["*.example.com", "b.*"]), "file": rng.choice(["*.pcap", "x*"]),
                }[c]
        rules.append(rule)
    text = ",".join(columns) + "\n" + "".join(",".join(r[c] for c in columns) + "\n" for r in rules)
    labeler = Labeler.from_rules_csv(write_rules(tmp_path, text))
    got = [lab for lab, _, _ in labelled(labeler, flows(*rows), "cap.pcap")]
    expected = [_reference_label(rules, row, "cap.pcap") for row in rows]
    assert got == expected
    assert sum(e is not None for e in expected) > 200  # the random rules do exercise matching


def test_thousands_of_exact_rules_each_label_their_own_flow(tmp_path: Path) -> None:
    # Speed of the exact-rule index is measured in bench/labels_import.py, not asserted here.
    n = 20_000
    rows = [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "192.0.2.1", 1024 + i % 60000, 443, 6, T0 + i, None)
            for i in range(n)]
    lines = ["label,rule_id,file,src_ip,dst_ip,src_port,dst_port,protocol"]
    lines += [f"c{i % 7},flow{i},cap.pcap,{r[0]},{r[1]},{r[2]},{r[3]},tcp" for i, r in enumerate(rows)]
    rules = write_rules(tmp_path, "\n".join(lines) + "\n")
    labeler = Labeler.from_rules_csv(rules)
    out = labeler.apply(flows(*rows), "cap.pcap")
    assert out.column("label").to_pylist() == [f"c{i % 7}" for i in range(n)]
    assert out.column("label_source").to_pylist() == [f"flow{i}" for i in range(n)]


def test_labeler_pickles(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "label,ip\nx,10.0.0.0/8\n")
    labeler = pickle.loads(pickle.dumps(Labeler.from_rules_csv(rules)))
    assert [r[0] for r in labelled(labeler, BATCH)] == ["x", "x", None, "x"]
    assert labeler.to_dict()["rules"] == 1


def test_empty_batch(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "label,ip\nx,10.0.0.0/8\n")
    assert Labeler.from_rules_csv(rules).apply(flows(), "cap.pcap").num_rows == 0


@pytest.mark.parametrize("text, message", [
    ("", r"rules.csv:1: empty rules file"),
    ("family\nx\n", r"rules.csv:1: the header has no 'label' column"),
    ("label,colour\nx,red\n", r"rules.csv:1: column 2 'colour' is not a rule column"),
    ("label,label\nx,y\n", r"rules.csv:1: column 'label' appears twice"),
    ("label,ip\nx,10.0.0.1\n,10.0.0.2\n", r"rules.csv:3: column 'label': is empty"),
    ("label,ip\nx,10.0.0.300\n", r"rules.csv:2: column 'ip': '10.0.0.300' is not an IP address or CIDR"),
    ("label,src_port\nx,http\n", r"rules.csv:2: column 'src_port': 'http' is not a port"),
    ("label,port\nx,70000\n", r"rules.csv:2: column 'port': '70000' is not a port or a port range within"),
    ("label,protocol\nx,icmpv9\n", r"rules.csv:2: column 'protocol': 'icmpv9' is not tcp, udp"),
    ("label,time_from\nx,yesterday\n", r"rules.csv:2: column 'time_from': 'yesterday' is not epoch seconds"),
    ("label,time_from,time_to\nx,20,10\n", r"rules.csv:2: column 'time_to': must be later than time_from"),
    ("label,ip\nx,10.0.0.1,extra\n", r"rules.csv:2: 3 cells, the header has 2"),
])
def test_bad_rules_file_is_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    rules = write_rules(tmp_path, text)
    with pytest.raises(LabelRulesError, match=message) as info:
        Labeler.from_rules_csv(rules)
    assert "\n" not in str(info.value)
    assert str(rules) in str(info.value)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="label rules file not found"):
        Labeler.from_rules_csv(tmp_path / "nope.csv")


def test_blank_lines_and_bom_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rules.csv"
    path.write_bytes("\ufefflabel,port\n\nweb,443\n".encode("utf-8"))
    rows = labelled(Labeler.from_rules_csv(path), BATCH)
    assert rows[0] == ("web", None, "rules.csv:3")


def test_parse_time_ns() -> None:
    assert parse_time_ns("1700000000") == T0
    assert parse_time_ns("1700000000.25") == T0 + 250_000_000
    assert parse_time_ns("2023-11-14T22:13:20") == T0
    assert parse_time_ns("2023-11-14T23:13:20+01:00") == T0
    assert parse_time_ns("2023-11-14T22:13:20Z") == T0
    with pytest.raises(ValueError):
        parse_time_ns("nan")
