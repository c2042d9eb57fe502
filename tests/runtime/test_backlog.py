"""What a link holds unacknowledged, for a device that paces itself by the line
(ira.runtime.backlog)."""

from __future__ import annotations

import random

from ira.link.config import LinkConfig
from ira.link.core import Channel, Link
from ira.link.simulate import LineFaults, LinkPair
from ira.runtime.backlog import LinkBacklog


def _pair(bytes_per_s: float = 11_520.0) -> tuple[LinkPair, LinkBacklog]:
    rng = random.Random(7)
    a = Link(LinkConfig(), rng=random.Random(1), now=0.0)
    b = Link(LinkConfig(), rng=random.Random(2), now=0.0)
    pair = LinkPair(a, b, LineFaults(bytes_per_s=bytes_per_s, latency_s=0.002), rng)
    assert pair.run_until(
        lambda: a.peer_epoch is not None and b.peer_epoch is not None, timeout_s=5
    )
    return pair, LinkBacklog(a, clock=lambda: pair.now)


def test_bytes_handed_stay_unacknowledged_until_the_peer_has_them() -> None:
    pair, backlog = _pair()
    assert backlog.unacked_bytes() == 0 and backlog.acked_bytes() == 0
    for size in (1500, 1500, 40):
        pair.a.send_message(bytes(size), Channel.BULK)
        backlog.handed(size)
    assert backlog.unacked_bytes() == 3040
    # the line takes ~0.26 s for them: half-way, most are still out
    pair.run_for(0.1)
    assert backlog.unacked_bytes() >= 1540
    assert pair.run_until(lambda: backlog.unacked_bytes() == 0, timeout_s=5)
    assert backlog.acked_bytes() == 3040
    assert backlog.now() == pair.now


def test_a_waiter_is_called_once_when_something_is_acknowledged() -> None:
    pair, backlog = _pair()
    calls: list[int] = []

    def waiter() -> None:
        calls.append(backlog.unacked_bytes())

    backlog.when_acknowledged(waiter)
    backlog.when_acknowledged(waiter)  # asked twice: still once
    backlog.poll()
    assert calls == []  # nothing acknowledged yet
    for _ in range(3):
        pair.a.send_message(bytes(1000), Channel.BULK)
        backlog.handed(1000)
    while not calls:
        assert pair.step()
        backlog.poll()
    assert len(calls) == 1 and calls[0] < 3000
    assert pair.run_until(lambda: backlog.unacked_bytes() == 0, timeout_s=5)
    backlog.poll()
    assert len(calls) == 1  # called once: asked for again only after


def test_messages_lost_with_a_session_are_no_longer_counted() -> None:
    pair, backlog = _pair()
    pair.outage(pair.now, pair.now + 1e9)  # the line goes dead
    for _ in range(4):
        pair.a.send_message(bytes(500), Channel.BULK)
        backlog.handed(500)
    pair.run_for(0.05)
    assert backlog.unacked_bytes() == 2000
    pair.a.reset_session("test", now=pair.now)  # the session goes, its messages with it
    assert backlog.unacked_bytes() == 0
