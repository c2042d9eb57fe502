"""CoDel's drops in the flow queue, its times scaled to the line (ira.venet.codel)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from test_flowqueue import FULL, ipv4

from ira.venet.codel import CoDelParams
from ira.venet.flowqueue import FlowQueue


def test_the_times_follow_the_line() -> None:
    fast = CoDelParams.for_line(125_000_000.0, FULL)  # 1 Gbit/s: RFC 8289's defaults
    assert (fast.target_s, fast.interval_s) == (0.005, 0.1)
    slow = CoDelParams.for_line(11_520.0, FULL)  # 115200 baud: one full frame's time
    assert slow.target_s == pytest.approx(FULL / 11_520.0)
    assert slow.interval_s == pytest.approx(8 * slow.target_s)
    with pytest.raises(ValueError):
        CoDelParams.for_line(0.0, FULL)


def _standing_queue(q: FlowQueue, *, frames: int, every_s: float, until: float) -> list[float]:
    """A bulk flow that keeps ``frames`` queued; one frame leaves every ``every_s``;
    the times CoDel dropped at."""
    t, drops = 0.0, []
    for _ in range(frames):
        q.push(ipv4(6, 1, 1, size=1500), now=t)
    while t < until:
        t += every_s
        before = q.codel_dropped
        assert q.pop(now=t) is not None
        if q.codel_dropped != before:
            drops.append(t)
        q.push(ipv4(6, 1, 1, size=1500), now=t)
    return drops


def test_a_standing_queue_of_a_bulk_flow_is_dropped_from_ever_more_often() -> None:
    q = FlowQueue(quantum=FULL)
    q.set_line_rate(11_520.0)
    params = q.codel
    assert params is not None
    drops = _standing_queue(q, frames=12, every_s=FULL / 11_520.0, until=30.0)
    # nothing before the sojourn time stayed above target for a whole interval
    assert drops and drops[0] >= params.interval_s
    # then the next drop interval / sqrt(count) after the last (RFC 8289's control law)
    gaps = [b - a for a, b in pairwise(drops)]
    assert gaps[0] <= params.interval_s + FULL / 11_520.0
    assert min(gaps[-3:]) < gaps[0]
    # one frame in for each one out: what CoDel dropped is what the queue lost
    assert len(q) + q.codel_dropped == 12


def test_no_drops_while_the_line_rate_is_unknown_or_the_queue_is_short() -> None:
    q = FlowQueue(quantum=FULL)
    assert not _standing_queue(q, frames=12, every_s=0.133, until=10.0)
    # a flow that never holds more than one full frame waits long, and loses nothing
    q = FlowQueue(quantum=FULL)
    q.set_line_rate(11_520.0)
    assert not _standing_queue(q, frames=1, every_s=1.0, until=30.0)


def test_a_queue_that_drains_below_target_stops_being_dropped_from() -> None:
    q = FlowQueue(quantum=FULL)
    q.set_line_rate(11_520.0)
    frame_s = FULL / 11_520.0
    drops = _standing_queue(q, frames=12, every_s=frame_s, until=10.0)
    assert drops
    dropped = q.codel_dropped
    t = 10.0
    while len(q):  # the sender backed off: the queue drains
        t += frame_s
        q.pop(now=t)
    for _ in range(20):  # a frame at a time, each sent as it comes
        t += frame_s
        q.push(ipv4(6, 1, 1, size=1500), now=t)
        assert q.pop(now=t + 0.01) is not None
    assert q.codel_dropped - dropped <= len(drops)  # no new dropping state
    assert q.pop(now=t) is None


def test_codel_drops_only_from_the_flow_that_keeps_a_queue() -> None:
    q = FlowQueue(quantum=FULL)
    q.set_line_rate(11_520.0)
    frame_s = FULL / 11_520.0
    ping = ipv4(1, 0, 0, size=98)
    t, pings, out = 0.0, 0, []
    for _ in range(12):
        q.push(ipv4(6, 1, 1, size=1500), now=t)
    for i in range(150):
        t += frame_s
        if i % 4 == 0:
            q.push(ping, now=t)
            pings += 1
        out.append(q.pop(now=t))
        q.push(ipv4(6, 1, 1, size=1500), now=t)
    while (f := q.pop(now=t)) is not None:
        out.append(f)
    assert q.codel_dropped > 0
    assert out.count(ping) == pings  # every ping came out: CoDel dropped bulk frames only
