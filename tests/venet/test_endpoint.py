"""In-process frame endpoints: a TAP's interface without root."""

from __future__ import annotations

import select
import threading

import pytest
from venetrig import Pump

from ira.errors import ConfigError, TransportError
from ira.runtime.endpoint import FrameEndpoint
from ira.runtime.tap import Tap
from ira.venet.port import FramePort
from ira.venet.vnethdr import Drop
from ira.wire.venet import PLAIN_HEADER, GsoType, HdrFlags, VnetHdr, pack_header

ETH = bytes.fromhex("02000000000b02000000000a0800")


def frame(n: int, size: int = 64) -> bytes:
    return (ETH + n.to_bytes(4, "big") + bytes(size))[:size]


def readable(port: FramePort, timeout_s: float = 0.0) -> bool:
    return bool(select.select([port], [], [], timeout_s)[0])


def test_frames_cross_in_order_and_fileno_follows_the_queue() -> None:
    a, b = FrameEndpoint.pair()
    with a, b:
        assert b.read_frame() is None and not readable(b)
        for n in range(10):
            assert a.write_frame(frame(n))
        assert readable(b) and not readable(a)
        assert [b.read_frame() for _ in range(10)] == [frame(n) for n in range(10)]
        assert b.read_frame() is None and not readable(b)
        assert b.write_frame(bytearray(frame(99)))
        assert a.read_frame() == frame(99)
        sa, sb = a.statistics(), b.statistics()
        assert (sa.frames_written, sa.bytes_written, sa.frames_read) == (10, 640, 1)
        assert (sb.frames_read, sb.bytes_read, sb.frames_written) == (10, 640, 1)
        assert sa.dropped == sb.dropped == {}


def test_a_full_queue_drops_and_counts() -> None:
    a, b = FrameEndpoint.pair(capacity_frames=3)
    for n in range(5):
        a.write_frame(frame(n))
    assert a.statistics().dropped == {Drop.QUEUE_FULL: 2}
    assert a.statistics().dropped_total == 2 and a.statistics().malformed == 0
    assert [b.read_frame() for _ in range(4)] == [frame(0), frame(1), frame(2), None]


def test_malformed_frames_are_dropped_and_counted() -> None:
    a, b = FrameEndpoint.pair(vnet_hdr=True, mtu=1500)
    assert a.vnet_hdr and a.mtu == 1500
    assert not a.write_frame(PLAIN_HEADER + ETH[:13])
    bad_gso = pack_header(VnetHdr(gso_type=int(GsoType.TCPV4), gso_size=1448)) + frame(2)
    assert not a.write_frame(bad_gso)
    assert not a.write_frame(PLAIN_HEADER + frame(3, 1519))
    assert a.write_frame(PLAIN_HEADER + frame(4, 1518))
    csum = pack_header(VnetHdr(flags=int(HdrFlags.NEEDS_CSUM), csum_start=34, csum_offset=16))
    assert a.write_frame(csum + frame(5))
    assert b.read_frame() == PLAIN_HEADER + frame(4, 1518)
    assert b.read_frame() == csum + frame(5)
    stats = a.statistics()
    assert stats.malformed == 3 and stats.frames_written == 2
    assert stats.dropped == {Drop.TRUNCATED: 1, Drop.BAD_GSO: 1, Drop.OVERSIZE: 1}
    a.set_mtu(9000)
    assert a.write_frame(PLAIN_HEADER + frame(6, 9018))
    with pytest.raises(ConfigError):
        a.set_mtu(65536)


def test_carrier_off_drops_what_the_peer_sends_towards_it() -> None:
    a, b = FrameEndpoint.pair()
    a.set_carrier(False)
    assert not b.write_frame(frame(1))
    assert a.write_frame(frame(2))  # frames into the stack still arrive, as on a TAP
    assert b.read_frame() == frame(2)
    assert b.statistics().dropped == {Drop.NO_CARRIER: 1}
    a.set_carrier(True)
    assert b.write_frame(frame(3))
    assert a.read_frame() == frame(3)


def test_closing_one_end() -> None:
    a, b = FrameEndpoint.pair()
    a.write_frame(frame(1))
    b.close()
    b.close()  # idempotent
    assert b.closed
    assert not a.write_frame(frame(2))
    assert a.statistics().dropped == {Drop.PEER_CLOSED: 1}
    for call in (b.read_frame, b.fileno, lambda: b.write_frame(frame(3))):
        with pytest.raises(TransportError, match="closed"):
            call()
    a.close()


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="MTU"):
        FrameEndpoint.pair(mtu=67)
    with pytest.raises(ConfigError, match="capacity"):
        FrameEndpoint.pair(capacity_frames=0)


def test_two_threads_exchange_many_frames() -> None:
    """A writer thread, a pumping thread between two pairs, a reader: all frames, in order.

    The writer waits while its queue is full; the pump never finds the far queue full.
    """
    count = 5000
    a, b = FrameEndpoint.pair(names=("stack-a", "venet-a"), capacity_frames=64)
    c, d = FrameEndpoint.pair(names=("venet-b", "stack-b"), capacity_frames=count)
    received: list[bytes] = []

    def write() -> None:
        n = 0
        while n < count:
            if a.write_frame(frame(n)):
                n += 1
            else:
                select.select([], [], [], 0.001)  # full: let the pump catch up

    with Pump(b, c):
        writer = threading.Thread(target=write)
        writer.start()
        while len(received) < count:
            assert readable(d, 5.0), f"stalled after {len(received)} frames"
            while (f := d.read_frame()) is not None:
                received.append(f)
        writer.join()
    assert received == [frame(n) for n in range(count)]
    assert c.statistics().dropped == {}


def test_endpoints_and_taps_offer_the_same_interface() -> None:
    members = {"name", "vnet_hdr", "mtu", "fileno", "read_frame", "write_frame", "set_mtu"}
    members |= {"set_carrier", "statistics", "close", "__enter__", "__exit__"}
    for cls in (FrameEndpoint, Tap):
        assert members <= set(dir(cls)), cls
