"""Flow queueing of frames toward the peer and the in-flight limit (ira.venet.flowqueue)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ira.venet.flowqueue import FlowQueue, InflightLimit, flow_key
from ira.wire.venet import VNET_HDR_BYTES

MACS = bytes.fromhex("020000000042020000000001")
FULL = VNET_HDR_BYTES + 18 + 1500


def ipv4(proto: int, sport: int, dport: int, size: int = 100, *, src: int = 1) -> bytes:
    """A frame: virtio-net header, Ethernet, IPv4 (no options), ports, padding."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, proto, 0, bytes((10, 0, 0, src)),
                         bytes((10, 0, 0, 9)))  # fmt: skip
    body = struct.pack("!HH", sport, dport)
    frame = bytes(VNET_HDR_BYTES) + MACS + b"\x08\x00" + header + body
    return frame + bytes(max(0, size - len(frame)))


def test_flows_are_told_apart_by_protocol_addresses_and_ports() -> None:
    a = ipv4(6, 40000, 5201)
    assert flow_key(a) == flow_key(ipv4(6, 40000, 5201, size=1500))
    others = [ipv4(6, 40001, 5201), ipv4(17, 40000, 5201), ipv4(6, 40000, 5201, src=2)]
    assert len({flow_key(a), *(flow_key(o) for o in others)}) == 4
    # not IP, or too short to tell: one flow per Ethernet type and addresses
    arp = bytes(VNET_HDR_BYTES) + MACS + b"\x08\x06" + bytes(28)
    assert flow_key(arp) == flow_key(arp + bytes(10)) != flow_key(a)
    assert flow_key(b"\x00" * 5) == b""


def test_a_sparse_flow_overtakes_a_backlog() -> None:
    q = FlowQueue(quantum=FULL)
    bulk = [ipv4(6, 40000, 5201, size=1500) + bytes([i]) for i in range(50)]
    for f in bulk:
        q.push(f, now=0.0)
    assert q.pop(now=0.0) == bulk[0]
    ping = ipv4(1, 0, 0, size=98)
    q.push(ping, now=0.0)
    # the bulk flow finishes its turn (one quantum: one more frame), then the new flow
    assert [q.pop(now=0.0), q.pop(now=0.0)] == [bulk[1], ping]
    assert [q.pop(now=0.0) for _ in range(48)] == bulk[2:]
    assert q.pop(now=0.0) is None and len(q) == 0 and q.bytes == 0


def test_busy_flows_take_turns_by_bytes() -> None:
    q = FlowQueue(quantum=FULL)
    big = [ipv4(6, 1, 1, size=1500) for _ in range(20)]
    small = [ipv4(6, 2, 2, size=300) for _ in range(100)]
    for f in big:
        q.push(f, now=0.0)
    for f in small:
        q.push(f, now=0.0)
    got = [q.pop(now=0.0) for _ in range(40)]
    sent = {1: 0, 2: 0}
    for f in got:
        assert f is not None
        sent[f[VNET_HDR_BYTES + 14 + 20 + 1]] += len(f)
    # deficit round robin: each flow about the same bytes, whatever its frame size
    assert abs(sent[1] - sent[2]) <= 2 * FULL


def test_a_full_queue_drops_from_the_fattest_flow_and_counts() -> None:
    q = FlowQueue(quantum=FULL, limit_frames=10)
    for _ in range(10):
        q.push(ipv4(6, 1, 1, size=1500), now=0.0)
    ping = ipv4(1, 0, 0, size=98)
    q.push(ping, now=0.0)
    assert len(q) == 10 and q.dropped == 1
    assert q.pop(now=0.0) is not None  # the bulk flow's head went first (it was served before)
    frames = [q.pop(now=0.0) for _ in range(9)]
    assert ping in frames and q.pop(now=0.0) is None


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(60, 2000)), max_size=200))
def test_every_frame_comes_out_once_in_order_within_its_flow(pushes: list[tuple[int, int]]) -> None:
    q = FlowQueue(quantum=FULL)
    sent: dict[bytes, list[bytes]] = {}
    for i, (flow, size) in enumerate(pushes):
        f = ipv4(17, flow, flow, size=size) + i.to_bytes(4, "big")
        q.push(f, now=0.0)
        sent.setdefault(flow_key(f), []).append(f)
    got: dict[bytes, list[bytes]] = {}
    while (f := q.pop(now=0.0)) is not None:
        got.setdefault(flow_key(f), []).append(f)
    assert got == sent and q.dropped == 0


def test_the_limit_is_the_cap_until_a_rate_is_measured_then_follows_it() -> None:
    lim = InflightLimit(frame=FULL, cap=256 * 1024, target_s=0.05)
    assert lim.limit == 256 * 1024 and lim.rate is None
    # a 115200-baud line: a 1,526-byte frame comes back every 0.133 s
    t = 0.0
    for _ in range(5):
        t += 0.1325
        lim.returned(1526, 3000, now=t)
    assert lim.rate == pytest.approx(11_517, rel=0.01)
    # the frame on the line and one more: 0.05 s of the rate is less than a frame
    assert lim.limit == 2 * FULL
    # a fast line: 64 KiB every 2 ms
    for _ in range(20):
        t += 0.002
        lim.returned(65536, 200_000, now=t)
    assert lim.limit == 256 * 1024


def test_idle_time_is_not_taken_for_a_slow_link() -> None:
    lim = InflightLimit(frame=FULL, cap=10**6, target_s=0.05)
    lim.returned(1500, 1500, now=0.0)
    lim.returned(60_000, 0, now=0.02)  # 3 MB/s, then nothing is out
    lim.returned(1500, 1500, now=10.0)  # ten seconds later: a new busy period starts here
    lim.returned(60_000, 0, now=10.02)
    assert lim.rate == pytest.approx(3_000_000)
    assert lim.limit == FULL + 150_000  # the frame on the line and 0.05 s of the rate


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        InflightLimit(frame=0, cap=10)
    with pytest.raises(ValueError):
        InflightLimit(frame=20, cap=10)
    with pytest.raises(ValueError):
        FlowQueue(quantum=0)


def test_a_return_that_came_late_does_not_make_a_slow_line_look_fast() -> None:
    lim = InflightLimit(frame=FULL, cap=256 * 1024, target_s=0.05)
    t = 0.0
    lim.returned(FULL, 2 * FULL, now=t)  # the first return starts a measurement
    # the next frame's return came late, just before the one after it
    for step in (0.255, 0.011, 0.133, 0.133, 0.133):
        t += step
        lim.returned(FULL, 2 * FULL, now=t)
    # each measurement spans two frames' returns at least: at most ~2x the line's rate,
    # and the limit stays the frame on the line and one more
    assert lim.rate is not None and lim.rate < 2 * 11_520
    assert lim.limit == 2 * FULL
