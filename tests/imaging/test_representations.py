"""Golden pixel values, edge cases of the vectorised gathers, and parameters of each representation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from pcapvision.errors import DataContractError, ParameterError
from pcapvision.imaging import REPRESENTATIONS, get_representation
from pcapvision.imaging.representations import gather_prefix
from tests.imaging.helpers import make_flow, make_flows_table


def render(name, rows, **params):
    return get_representation(name, params).render(make_flows_table(rows))


def px(count, total):
    """The documented scaling: round(255 * ln(1 + count) / ln(1 + total))."""
    return int(np.rint(255 * math.log1p(count) / math.log1p(total)))


# --- payload ---------------------------------------------------------------------------------------


def test_payload_golden_pixels():
    long_payload = bytes(range(256)) * 4  # 1024 bytes: only the first 784 are drawn
    images, valid, reason = render("payload", [
        make_flow(0, payload=b"\x01\x02\xff"),
        make_flow(1, payload=long_payload),
        make_flow(2, payload=b""),
        make_flow(3, payload=None),
    ])
    assert images.dtype == np.uint8 and images.shape == (4, 28, 28)
    assert valid.tolist() == [True, True, False, False] and reason == "no payload"
    first = images[0].ravel()
    assert first[:3].tolist() == [1, 2, 255] and not first[3:].any()
    assert images[1].ravel().tolist() == list(long_payload[:784])
    assert images[1][0, 27] == 27 and images[1][1, 0] == 28  # row-major: pixel (r, c) = byte 28r + c
    assert not images[2].any() and not images[3].any()


def test_payload_reads_the_chosen_column():
    images, valid, _ = render("payload", [make_flow(0, payload=b"ab", dst2src_payload=b"\x07\x08")], column="dst2src_payload")
    assert images[0].ravel()[:3].tolist() == [7, 8, 0] and valid.all()


def reference_prefix(values, width):
    out = np.zeros((len(values), width), np.uint8)
    for i, v in enumerate(values):
        v = v or b""
        out[i, : min(len(v), width)] = np.frombuffer(v[:width], np.uint8)
    return out


@pytest.mark.parametrize("array_type", [pa.binary(), pa.large_binary()])
def test_gather_matches_a_per_row_reference_on_random_layouts(array_type):
    rng = np.random.default_rng(7)
    values = [None if rng.random() < 0.1 else rng.integers(0, 256, rng.integers(0, 1600), dtype=np.uint8).tobytes()
              for _ in range(300)]
    values[-1] = b"\xaa" * 5  # a short value in the last bytes of the buffer: the tail path
    arr = pa.array(values, array_type)
    table = pa.table({"payload": arr})
    images, valid, _ = get_representation("payload").render(table)
    assert np.array_equal(images.reshape(300, 784), reference_prefix(values, 784))
    assert valid.tolist() == [bool(v) for v in values]
    # A slice (non-zero array offset) and a multi-chunk column give the same rows.
    sliced, _, _ = get_representation("payload").render(table.slice(37, 100))
    assert np.array_equal(sliced.reshape(100, 784), reference_prefix(values[37:137], 784))
    chunked = pa.table({"payload": pa.chunked_array([arr.slice(0, 150), arr.slice(150)])})
    assert np.array_equal(get_representation("payload").render(chunked).images, images)


def test_gather_prefix_small_buffer_and_width():
    data = np.frombuffer(b"abcdef", np.uint8)
    out = gather_prefix(data, np.array([0, 4, 6]), np.array([4, 2, 0]), 8)
    assert out.tolist() == [list(b"abcd") + [0] * 4, list(b"ef") + [0] * 6, [0] * 8]


# --- byte-distribution ---------------------------------------------------------------------------


def test_byte_distribution_golden_pixels():
    # Buckets: floor(28 * v / 256): 7 -> 0, 9 -> 0, 10 -> 1, 200 -> 21, 255 -> 27.
    images, valid, reason = render("byte-distribution", [
        make_flow(0, payload=b"\x00\x00\x00\x00"),  # 4 pairs (0,0)
        make_flow(1, payload=bytes([7, 7, 7, 200])),  # (0,0) x2, (0,21), (21,0)
        make_flow(2, payload=bytes([9, 10])),  # (0,1), (1,0): the bucket boundary
        make_flow(3, payload=b""),
    ])
    assert valid.tolist() == [True, True, True, False] and reason == "no payload"
    expected = np.zeros((4, 28, 28), np.uint8)
    expected[0, 0, 0] = 255
    expected[1, 0, 0] = px(2, 4)  # 174
    expected[1, 0, 21] = expected[1, 21, 0] = px(1, 4)  # 110
    expected[2, 0, 1] = expected[2, 1, 0] = px(1, 2)  # 161
    assert np.array_equal(images, expected)
    assert (expected[1, 0, 0], expected[1, 0, 21], expected[2, 0, 1]) == (174, 110, 161)


def test_byte_distribution_is_shift_invariant():
    """The same bytes starting at another offset (any rotation) give exactly the same image,
    while the payload image of the same shifted bytes changes almost everywhere."""
    rng = np.random.default_rng(3)
    payload = rng.integers(0, 256, 500, dtype=np.uint8).tobytes() + b"GET /index.html HTTP/1.1\r\n" * 4
    rows = [make_flow(0, payload=payload)]
    for shift in (1, 3, 17, 200):
        rows.append(make_flow(shift, payload=payload[shift:] + payload[:shift]))
    images, valid, _ = render("byte-distribution", rows)
    assert valid.all()
    for i in range(1, len(rows)):
        assert np.array_equal(images[i], images[0])
    assert images[0].any()
    payload_images, _, _ = render("payload", rows)
    assert (payload_images[1].ravel()[: len(payload)] != payload_images[0].ravel()[: len(payload)]).mean() > 0.9


def test_byte_distribution_max_bytes_limits_the_bytes_counted():
    payload = b"\x00" * 10 + b"\xff" * 10
    images, _, _ = render("byte-distribution", [make_flow(0, payload=payload)], max_bytes=10)
    expected = np.zeros((28, 28), np.uint8)
    expected[0, 0] = 255  # only the ten 0x00 bytes are counted
    assert np.array_equal(images[0], expected)


def test_byte_distribution_large_max_bytes_uses_every_byte():
    payload = bytes(range(256)) * 20  # 5120 bytes: past the scaling table's size
    images, _, _ = render("byte-distribution", [make_flow(0, payload=payload)], max_bytes=6000)
    # Every byte pairs with its successor: (b(v), b(v+1)) -- 5120 pairs in total.
    buckets = np.arange(256) * 28 // 256
    counts = np.zeros((28, 28), int)
    for v in range(256):
        counts[buckets[v], buckets[(v + 1) % 256]] += 20
    expected = np.where(counts > 0, np.rint(255 * np.log1p(counts) / math.log1p(5120)), 0).astype(np.uint8)
    assert np.array_equal(images[0], expected)


# --- flowpic -------------------------------------------------------------------------------------


def test_flowpic_golden_pixels_log_axis():
    packets = [(0.0, 0, 100), (5.0, 1, 1400), (5.0, 1, 1400), (5.0, 1, 1400), (20000.0, 0, 10)]
    images, valid, reason = render("flowpic", [make_flow(0, packets=packets), make_flow(1, packets=[])])
    assert valid.tolist() == [True, False] and reason == "no packets"
    # IP sizes 140 and 1440: buckets 140*14//1500 = 1 and 1440*14//1500 = 13.
    # Direction 0 grows down from row 14 (-> row 15); direction 1 grows up from row 13 (-> row 0).
    # t = 5 ms: column floor(28 * ln 6 / ln 10001) = 5; t = 20000 ms is outside the window.
    assert math.floor(28 * math.log1p(5) / math.log1p(10000)) == 5
    expected = np.zeros((2, 28, 28), np.uint8)
    expected[0, 15, 0] = px(1, 4)  # 110
    expected[0, 0, 5] = px(3, 4)  # 220
    assert np.array_equal(images, expected)
    assert (expected[0, 15, 0], expected[0, 0, 5]) == (110, 220)


def test_flowpic_golden_pixels_linear_axis_payload_sizes():
    packets = [(0.0, 0, 0), (5.0, 0, 0), (99.9, 1, 3000), (100.0, 1, 50)]
    images, valid, _ = render("flowpic", [make_flow(0, packets=packets)],
                              time_axis="linear", time_window_ms=100.0, size="payload", max_packets=3)
    # max_packets=3 drops the 4th packet; sizes 0 -> bucket 0 (row 14), 3000 -> last bucket (row 0).
    expected = np.zeros((28, 28), np.uint8)
    expected[14, 0] = px(1, 3)  # t=0 -> column 0
    expected[14, 1] = px(1, 3)  # t=5 -> column floor(28 * 5 / 100) = 1
    expected[0, 27] = px(1, 3)  # t=99.9 -> column 27
    assert valid.all() and np.array_equal(images[0], expected)


def test_flowpic_needs_aligned_packet_lists():
    row = make_flow(0)
    row["packet_direction"] = [0]
    with pytest.raises(DataContractError, match="different numbers of packets"):
        render("flowpic", [row])


def test_flowpic_many_flows_match_one_by_one():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        n = int(rng.integers(0, 80))
        times = np.sort(rng.random(n) * 3000).tolist()
        rows.append(make_flow(i, packets=[(t, int(rng.integers(0, 2)), int(rng.integers(0, 1460))) for t in times]))
    together, _, _ = render("flowpic", rows)
    for i, row in enumerate(rows):
        alone, _, _ = render("flowpic", [row])
        assert np.array_equal(together[i], alone[0])


# --- parameters ------------------------------------------------------------------------------------


def test_registry_and_defaults():
    assert list(REPRESENTATIONS) == ["payload", "byte-distribution", "flowpic", "packets"]
    assert get_representation("payload").params == {"column": "payload"}
    assert get_representation("byte-distribution", {"max_bytes": 100}).params == {"column": "payload", "max_bytes": 100}
    flowpic = get_representation("flowpic")
    assert flowpic.params == {"max_packets": 64, "size": "ip", "size_max": 1500,
                              "time_window_ms": 10000.0, "time_axis": "log"}
    for cls in REPRESENTATIONS.values():
        assert cls.__doc__ and "pixel" in cls.__doc__.lower()


def test_bad_parameters_raise_parameter_errors():
    with pytest.raises(ParameterError, match="The 'representation' parameter must be one of"):
        get_representation("pixels")
    with pytest.raises(ParameterError, match="Unknown parameter"):
        get_representation("payload", {"max_bytes": 10})
    with pytest.raises(ParameterError, match=r"The 'max_bytes' parameter must be an int >= 2\. Got 1 instead\."):
        get_representation("byte-distribution", {"max_bytes": 1})
    with pytest.raises(ParameterError, match="The 'time_axis' parameter must be one of"):
        get_representation("flowpic", {"time_axis": "sqrt"})
    cls = REPRESENTATIONS["flowpic"]
    assert cls.parse_params({"max_packets": "32", "time_window_ms": "2.5"}) == {"max_packets": 32, "time_window_ms": 2.5}
    with pytest.raises(ParameterError, match="The 'max_packets' parameter must be an int. Got 'x' instead."):
        cls.parse_params({"max_packets": "x"})


@pytest.mark.parametrize("name, missing", [("payload", "payload"), ("byte-distribution", "payload"),
                                           ("flowpic", "packet_ip_bytes")])
def test_missing_columns_raise_data_contract_error(name, missing):
    table = make_flows_table([make_flow(0)]).drop_columns([missing])
    with pytest.raises(DataContractError, match=missing):
        get_representation(name).render(table)


# --- properties ----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=1000)), min_size=1, max_size=12), st.integers(0, 11))
def test_payload_equals_reference_for_any_values(values, start):
    arr = pa.array(values, pa.binary()).slice(min(start, len(values) - 1))
    images, valid, _ = get_representation("payload").render(pa.table({"payload": arr}))
    expected = reference_prefix(arr.to_pylist(), 784)
    assert np.array_equal(images.reshape(len(arr), 784), expected)
    assert valid.tolist() == [bool(v) for v in arr.to_pylist()]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=784), st.integers(0, 783))
def test_byte_distribution_rotation_invariance_property(payload, shift):
    shift %= len(payload)
    rows = [make_flow(0, payload=payload), make_flow(1, payload=payload[shift:] + payload[:shift])]
    images, _, _ = render("byte-distribution", rows)
    assert np.array_equal(images[0], images[1]) and images[0].any()


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_blocks_do_not_change_the_result(name, monkeypatch):
    rng = np.random.default_rng(9)
    rows = [make_flow(i, payload=rng.integers(0, 256, int(rng.integers(0, 900)), dtype=np.uint8).tobytes(),
                      packets=[(float(t), int(t) % 2, int(t) * 7 % 1500) for t in np.sort(rng.random(5) * 900)])
            for i in range(37)]
    table = make_flows_table(rows)
    whole = get_representation(name).render(table)
    monkeypatch.setattr(REPRESENTATIONS[name], "block_rows", 5)  # 8 blocks, the last one short
    blocked = get_representation(name).render(table)
    assert np.array_equal(whole.images, blocked.images) and np.array_equal(whole.valid, blocked.valid)
    assert whole.images.any()
