"""Frames on a slow line: how messages are cut into DATA frames and how ACKs travel.

Two ``Link`` cores over the simulated 115200-baud line, a fake clock, and the frames
each end wrote, decoded from the line.  The assertions count frames; none reads a
clock or looks inside a core.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import Channel, LinkEvent, MessageReceived, SessionStarted
from ira.link.framing import StreamDeframer
from ira.link.sender import FINISH_SHARE
from ira.link.simulate import LineFaults, LinkPair
from ira.wire.link import VERSION_MAX, Ack, Data, check_crc, decode_body
from ira.wire.link2 import Data2

BULK = Channel.BULK
SERIAL_115200 = LineFaults(latency_s=0.001, bytes_per_s=11520.0, max_read=64)
#: a 1,500-byte-MTU Ethernet frame and the bus bytes around it, as venet sends it
FRAME_MESSAGE_BYTES = 1540
#: a ring update queued right behind it
RING_UPDATE_BYTES = 40


@dataclass
class Tap:
    """The frames one end wrote to its line, decoded."""

    deframer: StreamDeframer = field(default_factory=lambda: StreamDeframer(1 << 20))
    #: DATA frames (DATA2 in a session of version 2)
    data: list[Data | Data2] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    #: the bytes as written
    chunks: list[bytes] = field(default_factory=list)

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        for raw in self.deframer.feed(chunk):
            frame = decode_body(check_crc(raw))
            if isinstance(frame, Data | Data2):
                self.data.append(frame)
            elif isinstance(frame, Ack):
                self.acks.append(frame)

    def clear(self) -> None:
        self.data.clear()
        self.acks.clear()
        self.chunks.clear()


def tapping(write: Callable[[bytes, float], None], tap: Tap) -> Callable[[bytes, float], None]:
    def tapped(data: bytes, now: float) -> None:
        tap.feed(data)
        write(data, now)

    return tapped


def tapped_pair(seed: int = 0, version: int = VERSION_MAX) -> tuple[LinkPair, Tap, Tap]:
    """Two ends over 115200-baud lines, with what each writes decoded (a -> b, b -> a)."""
    config = LinkConfig(version_max=version)
    a = Link(config, rng=random.Random(2 * seed + 1), now=0.0)
    b = Link(config, rng=random.Random(2 * seed + 2), now=0.0)
    pair = LinkPair(a, b, SERIAL_115200, random.Random(seed))
    taps = Tap(), Tap()
    for line, tap in zip((pair.ab, pair.ba), taps, strict=True):
        line.write = tapping(line.write, tap)  # type: ignore[method-assign,assignment]
    started = pair.run_until(
        lambda: (
            any(isinstance(e, SessionStarted) for e in pair.events_a)
            and any(isinstance(e, SessionStarted) for e in pair.events_b)
        ),
        timeout_s=5.0,
    )
    assert started
    return pair, taps[0], taps[1]


def bulk_received(events: list[LinkEvent]) -> int:
    return sum(1 for e in events if isinstance(e, MessageReceived) and e.channel is BULK)


def learn_the_line(pair: LinkPair) -> int:
    """Send a backlog so that A measures the line rate; returns A's latency cap in bytes."""
    for _ in range(30):
        pair.a.send_message(bytes(1500), BULK)
    assert pair.run_until(lambda: bulk_received(pair.events_b) == 30, timeout_s=30.0)
    pair.run_for(0.5)
    cap = pair.a.statistics().segment_bytes
    assert cap is not None
    return cap


def test_a_message_that_arrives_alone_and_what_is_queued_behind_it_go_in_one_frame() -> None:
    pair, ab, _ = tapped_pair()
    cap = learn_the_line(pair)
    # 0.1 s of 115200 baud: less than one Ethernet frame, but within half again of it
    assert cap < FRAME_MESSAGE_BYTES + 2 <= cap * (1 + FINISH_SHARE)
    ab.clear()
    before = bulk_received(pair.events_b)
    for _ in range(20):
        pair.a.send_message(bytes(FRAME_MESSAGE_BYTES), BULK)
        pair.a.send_message(bytes(RING_UPDATE_BYTES), BULK)
        pair.run_for(0.3)  # the line drains: the next message arrives alone
    assert bulk_received(pair.events_b) == before + 40
    assert len(ab.data) == 20, [len(d.payload) for d in ab.data]
    assert pair.a.statistics().segments_retransmitted == 0


def test_a_long_message_is_still_cut_near_the_latency_cap() -> None:
    pair, ab, _ = tapped_pair()
    cap = learn_the_line(pair)
    ab.clear()
    before = bulk_received(pair.events_b)
    pair.a.send_message(bytes(20_000), BULK)
    assert pair.run_until(lambda: bulk_received(pair.events_b) == before + 1, timeout_s=30.0)
    sizes = [len(d.payload) for d in ab.data]
    assert sum(sizes) == 20_003  # the message and its length prefix
    # no frame longer than half again the cap; the ones before the last end at the cap
    assert max(sizes) <= cap * (1 + FINISH_SHARE)
    assert len(sizes) <= 20_003 // cap + 1


def test_back_to_back_messages_each_fill_one_frame() -> None:
    pair, ab, _ = tapped_pair()
    learn_the_line(pair)
    ab.clear()
    before = bulk_received(pair.events_b)
    for _ in range(40):
        pair.a.send_message(bytes(1500), BULK)
    assert pair.run_until(lambda: bulk_received(pair.events_b) == before + 40, timeout_s=30.0)
    # cut to the cap alone, 40 messages of 1,502 stream bytes would take 53 frames
    assert len(ab.data) == 40


def test_a_due_ack_rides_in_data_the_congestion_window_holds_back() -> None:
    """A streams bulk data (always more queued than its congestion window lets go);
    B answers every second message a little later (as a process behind it would).
    A owes B an ACK for each answer: it rides in a DATA frame past A's congestion
    window instead of costing an ACK frame of its own."""
    pair, ab, _ = tapped_pair()
    learn_the_line(pair)
    for _ in range(200):
        pair.a.send_message(bytes(1500), BULK)
    pair.run_for(1.0)
    ab.clear()
    before = bulk_received(pair.events_a)
    seen = bulk_received(pair.events_b)
    for _ in range(500):  # 10 s: ~75 messages each way, A's queue never runs dry
        pair.run_for(0.02)
        now_seen = bulk_received(pair.events_b)
        for _ in range(now_seen // 2 - seen // 2):
            pair.b.send_message(bytes(60), BULK)
        seen = now_seen
    answers = bulk_received(pair.events_a) - before
    assert answers >= 30
    assert len(ab.acks) <= 2, (len(ab.acks), answers)


def test_a_duplicate_is_acknowledged_after_the_ack_delay_not_at_once() -> None:
    """The sender resent a frame whose ACK it has not heard yet (its timer fired while
    the ACK queued behind our own frames): an ACK frame more, at once, would only queue
    behind that one; the delayed ACK goes if nothing else carries the news."""
    pair, ab, _ = tapped_pair()
    ab.clear()
    pair.a.send_message(b"once", BULK)
    assert pair.run_until(lambda: bulk_received(pair.events_b) == 1, timeout_s=5.0)
    pair.run_for(1.0)  # acknowledged; A has nothing in flight
    raw = list(ab.chunks)
    b, now = pair.b, pair.now
    delay = b.config.ack_delay_s
    for chunk in raw:  # the line delivers the same frame again
        b.receive_data(chunk, now=now)
    assert b.statistics().drop_duplicate == 1
    assert b.data_to_send(now=now) == []
    deadline = b.next_deadline()
    assert deadline is not None and deadline <= now + delay
    b.handle_timeout(now=now + delay)
    assert len(b.data_to_send(now=now + delay)) == 1  # one ACK
    assert bulk_received(pair.events_b) == 1


def test_each_end_counts_the_ack_frames_it_wrote() -> None:
    pair, ab, ba = tapped_pair()
    for i in range(40):
        pair.a.send_message(bytes(1500), BULK)
        if i % 3 == 0:
            pair.b.send_message(bytes(60), BULK)
    assert pair.run_until(lambda: bulk_received(pair.events_b) == 40, timeout_s=30.0)
    pair.run_for(1.0)  # keepalives too
    for link, tap in ((pair.a, ab), (pair.b, ba)):
        stats = link.statistics()
        assert stats.ack_frames_sent == len(tap.acks) > 0
        assert stats.segments_sent == len(tap.data)


@pytest.mark.parametrize("version", [1, 2])
def test_an_end_with_a_flow_of_its_own_holds_a_lone_ack_for_its_next_frame(
    version: int,
) -> None:
    """A streams bulk; B answers every message 10 ms after it arrived (a TCP ACK from
    the stack above).  In version 2, B, its previous answer still in flight, holds
    the ACK of a lone segment up to ACK_HOLD_S: the answer carries it.  Version 1
    acknowledges within 5 ms, in an ACK frame of its own, then sends the answer."""
    pair, _, ba = tapped_pair(version=version)
    learn_the_line(pair)
    for _ in range(60):
        pair.a.send_message(bytes(1500), BULK)
    ba.clear()
    seen = bulk_received(pair.events_b)
    answer_at: list[float] = []
    end = pair.now + 4.0
    while pair.now < end:
        pair.run_for(0.002)
        now_seen = bulk_received(pair.events_b)
        answer_at += [pair.now + 0.010] * (now_seen - seen)
        seen = now_seen
        while answer_at and answer_at[0] <= pair.now:
            answer_at.pop(0)
            pair.b.send_message(bytes(60), BULK)
    answers = len(ba.data)
    assert answers >= 20
    if version == 1:
        assert len(ba.acks) >= answers * 0.8, (len(ba.acks), answers)
    else:
        assert len(ba.acks) <= answers * 0.2, (len(ba.acks), answers)
