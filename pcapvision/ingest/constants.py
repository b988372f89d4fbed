"""Constants shared across ingest: link types, VLAN ethertypes, the IPv4-mapped prefix, reader names."""

from __future__ import annotations

# Link types (https://www.tcpdump.org/linktypes.html) that the decoders understand.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12  # DLT_RAW on most BSDs, seen in some pcap files
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
RAW_LINKTYPES = frozenset({LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6})
SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2} | RAW_LINKTYPES
)

# Ethertypes of 802.1Q / 802.1ad / QinQ tags, skipped (the outermost tag's VLAN id is kept).
VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)

# Addresses are 16 bytes: IPv4 ones are stored IPv4-mapped (::ffff:a.b.c.d), this prefix + 4 bytes.
IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

# Packet readers: "auto" is the fast path with dpkt for the frames it does not handle.
READERS = ("auto", "dpkt", "scapy")
