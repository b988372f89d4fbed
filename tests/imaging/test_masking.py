"""--mask-tls-sni: SNI and certificate names are zeroed, nothing else is."""

from __future__ import annotations

import numpy as np
import pytest

from pcapvision.imaging import get_representation, mask_tls_names, render_flows
from pcapvision.imaging.masking import certificate_name_spans
from tests.imaging.helpers import client_hello, make_flow, make_flows_table, self_signed_der, server_flight

SNI = "secret.example.com"
CN = "cn-name.example.org"
SANS = ["alt.example.net", "www.example.net"]
NAMES = [SNI, CN, *SANS]


@pytest.fixture(scope="module")
def tls_flow():
    hello = client_hello(SNI)
    server = server_flight([self_signed_der(CN, SANS)])
    payload = hello + server
    assert len(payload) < 784  # the whole handshake is inside the payload image
    return make_flow(0, payload=payload, src2dst_payload=hello, dst2src_payload=server, tls_sni=SNI,
                     tls_version="TLS 1.2")


def image_bytes(table):
    return table.column("image").to_pylist()[0]


def test_names_are_zeroed_and_nothing_else(tls_flow):
    flows = make_flows_table([tls_flow])
    plain, _ = render_flows(flows, "payload")
    masked, summary = render_flows(flows, "payload", mask_tls_sni=True)
    before, after = image_bytes(plain), image_bytes(masked)
    for name in NAMES:
        assert name.encode() in before  # the test would notice a mask that does nothing
        assert name.encode() not in after
    changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    assert all(after[i] == 0 for i in changed)
    # Exactly the name bytes changed (the CN appears twice: subject and issuer).
    assert len(changed) == len(SNI) + 2 * len(CN) + sum(map(len, SANS))
    m = summary.masking
    assert m["flows_checked"] == 1 and m["flows_masked"] == 1 and m["flows_with_sni_masked"] == 1
    assert m["bytes_zeroed"] == len(changed) and m["certificate_names_found"] == 3
    assert summary.mask_tls_sni is True


def test_truncated_certificate_and_other_occurrences(tls_flow):
    payload = tls_flow["payload"]
    cut = payload.index(CN.encode()) + 5  # cut inside the first CN value, before the SAN
    http = b"GET / HTTP/1.1\r\nHost: SECRET.Example.COM\r\n\r\n"
    row = dict(tls_flow, payload=payload[:cut] + http, dst2src_payload=b"")
    masked, stats = mask_tls_names(make_flows_table([row]), "payload")
    out = masked.to_pylist()[0]
    assert out[cut - 5 : cut] == bytes(5)  # the clipped CN span
    assert b"SECRET.Example.COM" not in out and SNI.encode() not in out  # case-insensitive search
    assert out[:10] == row["payload"][:10] and len(out) == len(row["payload"])
    assert stats.flows_masked == 1


def test_certificate_name_spans_finds_cn_and_san():
    der = self_signed_der(CN, SANS)
    found = sorted(der[a:b].decode() for a, b in certificate_name_spans(der))
    assert found == sorted([CN, CN, *SANS])


def test_non_tls_flows_are_untouched_and_mask_applies_to_byte_distribution(tls_flow):
    other = make_flow(1, payload=b"cn-name.example.org is just text here")  # not TLS: left alone
    flows = make_flows_table([tls_flow, other])
    masked, stats = mask_tls_names(flows, "payload")
    assert masked.to_pylist()[1] == other["payload"] and stats.flows_checked == 1
    plain, _ = render_flows(flows, "byte-distribution", dedup=False)
    hidden, _ = render_flows(flows, "byte-distribution", dedup=False, mask_tls_sni=True)
    assert image_bytes(plain) != image_bytes(hidden)
    assert plain.column("image").to_pylist()[1] == hidden.column("image").to_pylist()[1]


def test_flowpic_masking_has_no_effect_and_says_so(tls_flow):
    flows = make_flows_table([tls_flow])
    plain, _ = render_flows(flows, "flowpic")
    masked, summary = render_flows(flows, "flowpic", mask_tls_sni=True)
    assert image_bytes(plain) == image_bytes(masked)
    assert "no effect" in summary.masking["note"]
    assert get_representation("flowpic").needs_payload is False
