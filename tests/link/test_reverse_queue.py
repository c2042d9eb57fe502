"""A small flow one way while a bulk flow's queue builds the other way.

The board's side of a venet TCP transfer: its frames are small TCP ACKs, and the
link ACKs that answer them ride in the host's bulk frames, behind the queue those
build on a 115200-baud line.  That queue grows from nothing to half a second
faster than a round-trip estimate of idle small frames follows it, so the small
flow's retransmission timer fires before the ACKs arrive.  Timelines on the
simulated line with a fake clock; nothing looks inside a core.
"""

from __future__ import annotations

import random

import pytest

from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import Channel
from ira.link.simulate import LineFaults, LinkPair

BULK = Channel.BULK
LINE_BYTES_PER_S = 11520.0
SERIAL_115200 = LineFaults(latency_s=0.001, bytes_per_s=LINE_BYTES_PER_S, max_read=64)


def ramp(version: int, seed: int) -> LinkPair:
    """Idle small round trips (B's estimate: milliseconds), then A queues 150 KB of
    bulk while B sends a 60-byte message every 0.1 s for 6 s."""
    config = LinkConfig(version_max=version)
    a = Link(config, rng=random.Random(2 * seed + 1), now=0.0)
    b = Link(config, rng=random.Random(2 * seed + 2), now=0.0)
    pair = LinkPair(a, b, SERIAL_115200, random.Random(seed))
    for _ in range(20):
        b.send_message(bytes(40), BULK)
        pair.run_for(0.05)
        a.send_message(bytes(40), BULK)
        pair.run_for(0.05)
    srtt = b.statistics().srtt_s
    assert srtt is not None and srtt < 0.05
    for _ in range(100):
        a.send_message(bytes(1500), BULK)
    for _ in range(60):
        b.send_message(bytes(60), BULK)
        pair.run_for(0.1)
    return pair


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_a_queue_growing_the_other_way_costs_the_small_flow_a_timeout_or_two(
    version: int, seed: int
) -> None:
    """The first timeout is spurious and found so (the ACK of the first transmission
    arrives and echoes it): its round trip becomes the estimate's floor at once, and
    the timer stays backed off until a round trip is measured (Karn), instead of
    firing again at every small frame (24 to 34 times in these 6 s before)."""
    pair = ramp(version, seed)
    b = pair.b.statistics()
    assert b.retransmission_timeouts <= 3
    assert b.spurious_timeouts >= 1
    assert b.segments_retransmitted <= 4
    srtt = b.srtt_s
    assert srtt is not None and srtt > 0.2  # the queue is in the estimate now


@pytest.mark.parametrize("version", [1, 2])
def test_acks_carried_past_the_window_do_not_grow_the_queue(version: int) -> None:
    """A due ACK may take one segment past A's congestion window, not one more for
    every ACK while the last one is still in the pipe: the round trip B measures
    stays near what A's window and one segment take on the line (it was 1.3 s)."""
    pair = ramp(version, 0)
    a, b = pair.a.statistics(), pair.b.statistics()
    assert a.cwnd_bytes is not None and a.segment_bytes is not None and b.srtt_s is not None
    window_s = (a.cwnd_bytes + a.segment_bytes) / LINE_BYTES_PER_S
    assert b.srtt_s <= window_s + 0.1, (b.srtt_s, window_s)
