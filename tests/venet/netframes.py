"""Ethernet frames with a virtio-net header, as the tests of venet build them."""

from __future__ import annotations

import struct

from ira.wire.venet import HEADER

ETH = bytes.fromhex("020000000002" "020000000001")  # fmt: skip
#: the virtio-net header of a segment whose TCP checksum is left partial
PARTIAL = HEADER.pack(1, 0, 66, 0, 34, 16, 0)


def tcp4(sport: int, seq: int, ts: int, payload: bytes = bytes(1448), ipid: int = 0) -> bytes:
    """A TCP/IPv4 segment with timestamps (66 bytes of headers), checksum partial."""
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 52 + len(payload), ipid, 0x4000, 64, 6,
                     (0x1234 + ipid) & 0xFFFF) + bytes((10, 0, 0, 1, 10, 0, 0, 2))  # fmt: skip
    tcp = struct.pack(
        "!HHIIBBHHH", sport, 5201, seq & 0xFFFFFFFF, 7777, 8 << 4, 0x10, 502, 0x6C1F, 0
    )
    options = bytes((1, 1, 8, 10)) + struct.pack("!II", ts, 424242)
    return PARTIAL + ETH + b"\x08\x00" + ip + tcp + options + payload


def udp6(sport: int, payload: bytes) -> bytes:
    ip = struct.pack(
        "!IHBB16s16s", 6 << 28, 8 + len(payload), 17, 64, bytes(15) + b"\1", bytes(15) + b"\2"
    )
    return (
        bytes(12)
        + ETH
        + b"\x86\xdd"
        + ip
        + struct.pack("!HHHH", sport, 53, 8 + len(payload), 0)
        + payload
    )


def arp() -> bytes:
    return bytes(12) + b"\xff" * 6 + ETH[6:] + b"\x08\x06" + bytes(28)
