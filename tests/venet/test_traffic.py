"""Real IP traffic between two namespaces, each with a TAP, frames pumped in-process.

Plain frames and frames with virtio-net headers and TCP offloads (64 KiB
segments cross as one frame); ping, a TCP transfer checked by SHA-256, a
9000-byte MTU carrying 9000-byte packets unfragmented, and malformed frames
dropped and counted while the interface stays up.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pytest
from venetrig import Pump, ping, require_root_support, sha256, tcp_transfer

from ira.runtime.netns import NetNs, list_netns
from ira.runtime.tap import TCP_OFFLOADS, Offload, Tap, TapConfig
from ira.venet.vnethdr import Drop
from ira.wire.venet import GSO_ECN, VNET_HDR_BYTES, GsoType, HdrFlags

pytestmark = pytest.mark.root

ADDR_A, ADDR_B = "192.0.2.1", "192.0.2.2"
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


@dataclass
class Pair:
    """Two namespaces, each with a TAP named ira0, not yet joined."""

    ns_a: NetNs
    ns_b: NetNs
    tap_a: Tap
    tap_b: Tap


class MakePair(Protocol):
    def __call__(self, *, vnet_hdr: bool = False, mtu: int = 1500) -> Pair: ...


@pytest.fixture
def make_pair() -> Iterator[MakePair]:
    """A factory of ``Pair``s; everything it made is gone after the test, pass or fail."""
    require_root_support(ping=True)
    made: list[tuple[NetNs, NetNs, Tap, Tap]] = []

    def make(*, vnet_hdr: bool = False, mtu: int = 1500) -> Pair:
        offloads = TCP_OFFLOADS if vnet_hdr else Offload.NONE
        ns_a, ns_b = NetNs(), NetNs()
        ns_a.create()
        try:
            ns_b.create()
        except BaseException:
            ns_a.delete()
            raise
        taps: list[Tap] = []
        try:
            for ns, addr, mac in ((ns_a, ADDR_A, MAC_A), (ns_b, ADDR_B, MAC_B)):
                config = TapConfig(
                    name="ira0",
                    netns=ns,
                    mtu=mtu,
                    addresses=(f"{addr}/24",),
                    mac=mac,
                    vnet_hdr=vnet_hdr,
                    offloads=offloads,
                )
                taps.append(Tap(config))
        except BaseException:
            for tap in taps:
                tap.close()
            ns_a.delete()
            ns_b.delete()
            raise
        made.append((ns_a, ns_b, taps[0], taps[1]))
        return Pair(ns_a, ns_b, taps[0], taps[1])

    try:
        yield make
    finally:
        names = []
        for ns_a, ns_b, tap_a, tap_b in made:
            names += [ns_a.name, ns_b.name]
            tap_a.close()
            tap_b.close()
            ns_a.delete()
            ns_b.delete()
        assert not set(names) & set(list_netns()), "a namespace was left behind"


@pytest.mark.parametrize("vnet_hdr", [False, True], ids=["plain", "vnet-hdr"])
def test_ping_and_tcp_cross_the_pump(make_pair: MakePair, vnet_hdr: bool) -> None:
    pair = make_pair(vnet_hdr=vnet_hdr)
    payload = os.urandom(8 << 20)
    with Pump(pair.tap_a, pair.tap_b) as pump:
        out = ping(pair.ns_a, ADDR_B, count=5)
        assert "time=" in out
        count, digest = tcp_transfer(pair.ns_a, pair.ns_b, ADDR_B, payload)
    assert (count, digest) == (len(payload), sha256(payload))
    for tap in (pair.tap_a, pair.tap_b):
        stats = tap.statistics()
        assert stats.dropped == {}
        assert stats.frames_read > 0 and stats.frames_written > 0
    if vnet_hdr:
        # TCP segmentation offload: segments far over the MTU crossed as one frame
        assert pump.longest_frame > 8 * 1514
    else:
        assert pump.longest_frame <= 1514


@pytest.mark.parametrize("vnet_hdr", [False, True], ids=["plain", "vnet-hdr"])
def test_mtu_9000_carries_9000_byte_packets_unfragmented(
    make_pair: MakePair, vnet_hdr: bool
) -> None:
    pair = make_pair(vnet_hdr=vnet_hdr, mtu=9000)
    assert pair.tap_a.mtu == pair.tap_b.mtu == 9000
    with Pump(pair.tap_a, pair.tap_b) as pump:
        # 8972 bytes of ICMP data + 8 ICMP + 20 IP = 9000, with Don't Fragment set
        ping(pair.ns_a, ADDR_B, count=3, size=8972)
        too_big = pair.ns_a.run(
            ["ping", "-n", "-c", "1", "-M", "do", "-s", "8973", ADDR_B], check=False
        )
    assert too_big.returncode != 0  # one byte more does not fit the MTU
    header = VNET_HDR_BYTES if vnet_hdr else 0
    assert pump.longest_frame == header + 14 + 9000


def _frame(hdr: tuple[int, ...], packet_bytes: int = 60) -> bytes:
    eth = bytes.fromhex("02000000000b02000000000a0800")
    return struct.pack("<BBHHHHH", *hdr) + eth + bytes(packet_bytes - len(eth))


NEEDS_CSUM = int(HdrFlags.NEEDS_CSUM)
TCPV4 = int(GsoType.TCPV4)
MALFORMED = [
    (Drop.TRUNCATED, bytes(VNET_HDR_BYTES + 13)),
    (Drop.BAD_FLAGS, _frame((0x04, 0, 0, 0, 0, 0, 0))),
    (Drop.BAD_GSO_TYPE, _frame((NEEDS_CSUM, 2, 54, 1448, 34, 16, 0))),
    (Drop.BAD_GSO_TYPE, _frame((NEEDS_CSUM, int(GsoType.UDP) | GSO_ECN, 42, 1448, 34, 6, 0))),
    (Drop.BAD_GSO, _frame((0, TCPV4, 54, 1448, 34, 16, 0))),
    (Drop.BAD_GSO, _frame((NEEDS_CSUM, TCPV4, 54, 0, 34, 16, 0))),
    (Drop.BAD_HDR_LEN, _frame((0, 0, 61, 0, 0, 0, 0))),
    (Drop.BAD_CSUM, _frame((NEEDS_CSUM, 0, 0, 0, 34, 25, 0))),
    (Drop.OVERSIZE, _frame((0, 0, 0, 0, 0, 0, 0), packet_bytes=1500 + 14 + 4 + 1)),
]


def test_malformed_frames_are_dropped_and_counted_and_the_link_stays_up(
    make_pair: MakePair,
) -> None:
    pair = make_pair(vnet_hdr=True)
    for reason, frame in MALFORMED:
        assert pair.tap_b.write_frame(frame) is False, reason
    dropped = pair.tap_b.statistics().dropped
    expected: dict[Drop, int] = {}
    for reason, _ in MALFORMED:
        expected[reason] = expected.get(reason, 0) + 1
    assert dropped == expected
    assert pair.tap_b.statistics().malformed == len(MALFORMED)
    assert pair.tap_b.statistics().frames_written == 0
    # nothing reached the kernel, and the interface is up and carries traffic
    assert _kernel_rx(pair.ns_b, "ira0")["errors"] == 0
    assert pair.tap_b.is_up
    with Pump(pair.tap_a, pair.tap_b):
        ping(pair.ns_a, ADDR_B, count=3)
    assert pair.tap_b.statistics().malformed == len(MALFORMED)


def test_a_frame_at_the_limits_is_delivered(make_pair: MakePair) -> None:
    """The checks refuse nothing the kernel takes: a plain frame of MTU + VLAN is written."""
    pair = make_pair(vnet_hdr=True)
    before = _kernel_rx(pair.ns_b, "ira0")["packets"]
    frame = _frame((0, 0, 0, 0, 0, 0, 0), packet_bytes=1500 + 14 + 4)
    assert pair.tap_b.write_frame(frame)
    partial = _frame((NEEDS_CSUM, 0, 60, 0, 34, 24, 0))  # checksum in the last two bytes
    assert pair.tap_b.write_frame(partial)
    assert _kernel_rx(pair.ns_b, "ira0")["packets"] == before + 2
    assert pair.tap_b.statistics().dropped == {}


def test_carrier_and_link_state(make_pair: MakePair) -> None:
    pair = make_pair()
    tap = pair.tap_b
    tap.set_carrier(False)
    assert "NO-CARRIER" in _link(pair.ns_b, "ira0")
    tap.set_carrier(True)
    assert "NO-CARRIER" not in _link(pair.ns_b, "ira0")
    tap.set_up(False)
    assert not tap.is_up
    assert tap.write_frame(_frame((0,) * 7)[VNET_HDR_BYTES:]) is False
    assert tap.statistics().dropped == {Drop.INTERFACE_DOWN: 1}
    tap.set_up(True)
    assert tap.is_up
    with Pump(pair.tap_a, pair.tap_b):
        ping(pair.ns_a, ADDR_B, count=2)


def _link(ns: NetNs, name: str) -> str:
    return ns.run(["ip", "link", "show", name]).stdout.decode()


def _kernel_rx(ns: NetNs, name: str) -> dict[str, int]:
    """The interface's receive counters, as the kernel keeps them."""
    base = f"/sys/class/net/{name}/statistics"
    out = ns.run(["cat", f"{base}/rx_packets", f"{base}/rx_errors"]).stdout.split()
    return {"packets": int(out[0]), "errors": int(out[1])}
