"""Packet-level distortions applied to real packets, re-ingested with the real reassembler."""

from __future__ import annotations

import numpy as np

from tests.robustness.pcaps import tls_flow_packets


class _Draws:
    """A stand-in generator whose random() returns the given values in turn."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def _image(packets, tmp_path, name):
    from pcapvision.ingest import read_flows
    from pcapvision.robustness.packet_distortions import write_capture
    from pcapvision.robustness.traffic_distortions import render_for_model

    path = write_capture([packets], tmp_path / f"{name}.pcap")
    x, _ = render_for_model(read_flows(path), "payload", {"column": "payload"})
    return x[0]


def test_a_dropped_data_segment_does_change_the_payload_image(tmp_path):
    from pcapvision.robustness.packet_distortions import drop, duplicate

    packets = [(float(p.time), p) for p in tls_flow_packets(real_hello=True)]
    clean = _image(packets, tmp_path, "clean")
    # data segments in order: ClientHello, ServerHello, client application data; only the ServerHello
    # is lost, and its retransmission 200 ms later arrives after the client's next record
    dropped = drop(packets, 0.5, _Draws([0.9, 0.0, 0.9]))
    assert [round(t - packets[0][0], 3) for t, _ in dropped][-4:] != [round(t - packets[0][0], 3) for t, _ in packets][-4:]
    assert not np.array_equal(_image(dropped, tmp_path, "dropped"), clean)
    # a duplicated segment is removed by reassembly: the image stays the same (measured, not assumed)
    duplicated = duplicate(packets, 0.5, _Draws([0.0] + [0.9] * (len(packets) - 1)))
    assert len(duplicated) == len(packets) + 1
    assert np.array_equal(_image(duplicated, tmp_path, "duplicated"), clean)


def test_packet_level_sweep_rows(tiny_model, tmp_path):
    from pcapvision.ingest import read_flows
    from pcapvision.robustness.packet_distortions import PACKET_DISTORTIONS, packet_level_sweep
    from tests.robustness.pcaps import write_tls_capture

    path = tmp_path / "cap.pcap"
    write_tls_capture(path, [42000, 42001, 42002])
    rows = read_flows(path).to_pylist()
    result = packet_level_sweep(tiny_model, rows, {r["flow_id"]: 0 for r in rows}, "payload", {"column": "payload"},
                                workdir=tmp_path)
    table = result["rows"]
    assert len(table) == 1 + 5 * len(PACKET_DISTORTIONS) and table[0]["fraction_images_changed"] == 0.0
    assert all(0.0 <= r["fraction_images_changed"] <= 1.0 and r["n_flows"] == 3 for r in table)
