"""Community ID v1 against the spec's published baseline (corelight/community-id-spec/baseline)."""

from __future__ import annotations

import ipaddress

import pytest

from pcapvision.errors import ParameterError
from pcapvision.ingest.community_id import community_id, community_id_packed

# (proto, saddr, daddr, sport, dport, seed 0, seed 1): the TCP, UDP, SCTP and port-less (RSVP)
# rows of baseline_deflt.json and baseline_seed1.json, each in both directions.
BASELINE = [
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (46, "10.1.12.1", "10.1.12.2", None, None,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
    (46, "10.1.12.2", "10.1.12.1", None, None,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
]


@pytest.mark.parametrize(("proto", "saddr", "daddr", "sport", "dport", "seed0", "seed1"), BASELINE)
def test_spec_baseline(proto, saddr, daddr, sport, dport, seed0, seed1) -> None:
    assert community_id(saddr, daddr, sport, dport, proto) == seed0
    assert community_id(saddr, daddr, sport, dport, proto, seed=1) == seed1


@pytest.mark.parametrize(("proto", "saddr", "daddr", "sport", "dport", "seed0", "seed1"), BASELINE)
def test_packed_form_including_ipv4_mapped(proto, saddr, daddr, sport, dport, seed0, seed1) -> None:
    def mapped(text: str) -> bytes:
        ip = ipaddress.ip_address(text)
        return (bytes(10) + b"\xff\xff" + ip.packed) if ip.version == 4 else ip.packed

    assert community_id_packed(mapped(saddr), mapped(daddr), sport or 0, dport or 0, proto) == seed0
    assert community_id_packed(mapped(saddr), mapped(daddr), sport or 0, dport or 0, proto, seed=1) == seed1


def test_same_address_ordered_by_port() -> None:
    assert community_id("10.0.0.1", "10.0.0.1", 80, 1234, 6) == community_id("10.0.0.1", "10.0.0.1", 1234, 80, 6)
    assert community_id("10.0.0.1", "10.0.0.1", 80, 1234, 6) != community_id("10.0.0.1", "10.0.0.1", 81, 1234, 6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": 1}, "must not be ICMP"),
        ({"src_ip": "not-an-ip"}, "The 'src_ip' parameter must be an IP address"),
        ({"dst_ip": "::1"}, "same IP version"),
        ({"src_port": 70000}, "The 'src_port' parameter must be an int in [0, 65535]"),
        ({"seed": -1}, "The 'seed' parameter must be an int in [0, 65535]"),
    ],
)
def test_bad_input_raises_parameter_error(kwargs, message) -> None:
    args = {"src_ip": "1.2.3.4", "dst_ip": "5.6.7.8", "src_port": 1, "dst_port": 2, "protocol": 6} | kwargs
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        community_id(**args)
