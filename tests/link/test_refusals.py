"""What a link end does with a peer's bad input: refuse, count, answer, reset; never raise.

A hand-written peer (frames built with the wire codecs) drives one ``Link`` core
with explicit time; the assertions are on the core's events, its statistics and
the frames it sends back.
"""

from __future__ import annotations

import random

import pytest

from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import (
    Channel,
    HandshakeRefused,
    LinkEvent,
    MessageReceived,
    SessionLost,
    SessionStarted,
)
from ira.link.framing import StreamDeframer, encode_frames
from ira.link.refusals import RefusalSummary, refusal_totals
from ira.wire.link import (
    VERSION_MAX,
    VERSION_MIN,
    Ack,
    Data,
    Hello,
    HelloRefused,
    LinkFrame,
    Refusal,
    decode,
    encode,
)
from ira.wire.link2 import Data2

PEER_EPOCH = 0x77


def new_link(config: LinkConfig | None = None, *, seed: int = 1) -> Link:
    return Link(config or LinkConfig(), rng=random.Random(seed), now=0.0)


def hello(
    *, epoch: int = PEER_EPOCH, ack: bool = False, peer_epoch: int = 0, **fields: int
) -> bytes:
    values = {
        "version_min": VERSION_MIN,
        "version_max": VERSION_MAX,
        "features": 1,
        "max_frame_bytes": 1500,
        "window_bytes": 1 << 16,
        "keepalive_ms": 250,
    }
    values.update(fields)
    return encode(Hello(ack=ack, epoch=epoch, peer_epoch=peer_epoch, **values))


def feed(link: Link, *frames: bytes, now: float = 0.0) -> None:
    link.receive_data(encode_frames(list(frames)), now=now)


def drain(link: Link) -> list[LinkEvent]:
    events = []
    while (event := link.next_event()) is not None:
        events.append(event)
    return events


def sent(link: Link, now: float) -> list[LinkFrame]:
    chunks = link.data_to_send(now=now)
    return [decode(f) for f in StreamDeframer(1 << 20).feed(b"".join(chunks))]


def session(link: Link) -> int:
    """Start a session with the hand-written peer; return the session's tag."""
    feed(link, hello())
    assert any(isinstance(e, SessionStarted) for e in drain(link))
    return (link.statistics().local_epoch ^ PEER_EPOCH) & 0xFFFF


def data(tag: int, seq: int, payload: bytes, *, tx: int, channel: int = 0) -> bytes:
    return encode(Data(channel, tag, seq, 0, 64, tx, 0, payload))


# --- the handshake -----------------------------------------------------------------------------


def test_a_hello_offering_only_unknown_versions_is_answered_with_our_range_and_a_reason() -> None:
    link = new_link()
    feed(link, hello(version_min=VERSION_MAX + 1, version_max=VERSION_MAX + 3))
    (refused,) = drain(link)
    assert isinstance(refused, HandshakeRefused)
    assert (refused.by_peer, refused.reason) == (False, Refusal.VERSION)
    assert f"{VERSION_MAX + 1}..{VERSION_MAX + 3}" in refused.detail
    assert "install matching ira releases" in refused.detail
    answers = [f for f in sent(link, 0.0) if isinstance(f, HelloRefused)]
    epoch = link.statistics().local_epoch
    assert answers == [HelloRefused(VERSION_MIN, VERSION_MAX, epoch, PEER_EPOCH, Refusal.VERSION)]
    st = link.statistics()
    assert (st.state, st.hellos_refused, st.sessions) == ("handshake", 1, 0)
    # nothing closed: a peer that comes back with a version we speak gets a session
    feed(link, hello(epoch=0x99), now=1.0)
    assert [type(e) for e in drain(link)] == [SessionStarted]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"max_frame_bytes": 63}, Refusal.MAX_FRAME_BYTES),
        ({"window_bytes": 1023}, Refusal.WINDOW_BYTES),
        ({"keepalive_ms": 0}, Refusal.KEEPALIVE_MS),
        ({"epoch": 0}, Refusal.EPOCH),
    ],
    ids=["frame below 64", "window below 1 KiB", "keepalive 0", "epoch 0"],
)
@pytest.mark.parametrize("ack", [False, True], ids=["HELLO", "HELLO_ACK"])
def test_a_hello_with_a_field_out_of_range_is_refused_with_the_reason(
    fields: dict[str, int], reason: Refusal, ack: bool
) -> None:
    link = new_link()
    mine = link.statistics().local_epoch
    values = {"epoch": PEER_EPOCH, **fields}
    feed(link, hello(ack=ack, peer_epoch=mine if ack else 0, **values))
    (refused,) = drain(link)
    assert isinstance(refused, HandshakeRefused)
    assert (refused.by_peer, refused.reason) == (False, reason)
    assert refused.detail  # a line an operator can act on
    answers = [f for f in sent(link, 0.0) if isinstance(f, HelloRefused)]
    assert [(a.peer_epoch, a.reason) for a in answers] == [(values["epoch"], reason)]
    st = link.statistics()
    assert (st.state, st.sessions, st.hellos_refused) == ("handshake", 0, 1)


def test_a_refusal_of_our_hello_is_reported_and_the_handshake_goes_on_with_backoff() -> None:
    link = new_link(LinkConfig(hello_interval_s=0.1))
    assert [type(f) for f in sent(link, 0.0)] == [Hello]
    mine = link.statistics().local_epoch
    feed(link, encode(HelloRefused(7, 9, PEER_EPOCH, mine, Refusal.VERSION)), now=0.01)
    (refused,) = drain(link)
    assert isinstance(refused, HandshakeRefused)
    assert (refused.by_peer, refused.peer_version_min, refused.peer_version_max) == (True, 7, 9)
    assert "7..9" in refused.detail
    assert link.statistics().refused_by_peer == 1
    # the next HELLOs follow the backoff: 0.1 s, then 0.2 s later
    assert sent(link, 0.05) == []
    assert [type(f) for f in sent(link, 0.1)] == [Hello]
    assert sent(link, 0.25) == []
    assert [type(f) for f in sent(link, 0.31)] == [Hello]
    # a refusal of another epoch's HELLO (an earlier incarnation of ours) is stale
    feed(link, encode(HelloRefused(7, 9, PEER_EPOCH, mine ^ 2, Refusal.VERSION)), now=0.4)
    assert drain(link) == []
    assert link.statistics().drop_stale == 1


# --- within a session --------------------------------------------------------------------------


def test_a_message_length_prefix_past_five_bytes_resets_the_session_and_never_raises() -> None:
    link = new_link()
    old_epoch = link.statistics().local_epoch
    tag = session(link)
    link.send_message(b"queued")
    feed(link, data(tag, 0, bytes.fromhex("80 80 80 80 80 80 01"), tx=1), now=0.1)
    (lost,) = drain(link)
    assert isinstance(lost, SessionLost)
    assert "length prefix" in lost.reason
    assert lost.discarded_messages == 1
    st = link.statistics()
    assert (st.state, st.session_resets) == ("handshake", 1)
    assert st.local_epoch != old_epoch  # the peer sees this end restart
    # a new HELLO goes out at once, and a new session starts
    (offer,) = sent(link, 0.1)
    assert isinstance(offer, Hello) and not offer.ack and offer.epoch == st.local_epoch
    feed(link, hello(epoch=0x99), now=0.2)
    assert [type(e) for e in drain(link)] == [SessionStarted]


def test_data_on_an_unknown_channel_is_acknowledged_discarded_and_counted() -> None:
    link = new_link()
    tag = session(link)
    feed(
        link,
        data(tag, 0, b"\x03abc", tx=1, channel=2),
        data(tag, 4, b"\x02hi", tx=2, channel=Channel.CONTROL),
        now=0.1,
    )
    assert drain(link) == [MessageReceived(Channel.CONTROL, b"hi")]
    acks = [f for f in sent(link, 0.1) if isinstance(f, Ack)]
    assert acks and acks[-1].ack == 7  # both segments are behind the cumulative ack
    st = link.statistics()
    assert (st.drop_unknown_channel, st.state) == (1, "up")


def test_the_transmission_number_skips_zero_when_it_wraps() -> None:
    """65,536 transmissions and more: none carries tx 0, the "none yet" of ``echo``."""
    config = LinkConfig(max_frame_bytes=64, min_segment_bytes=1)
    a, b = new_link(config, seed=1), new_link(config, seed=2)
    deframer_a, deframer_b = StreamDeframer(1 << 16), StreamDeframer(1 << 16)
    # one message a frame: 64 bytes less header and CRC, less the length prefix
    count, size = 0x10000 + 8000, 64 - 22 - 4 - 1
    now, txs, delivered = 0.0, [], 0
    for i in range(count):
        a.send_message(b"%0*d" % (size, i))
    while delivered < count and now < 600:
        now += 0.001
        for out in a.data_to_send(now=now):
            for frame in deframer_a.feed(out):
                decoded = decode(frame)
                if isinstance(decoded, Data | Data2):
                    txs.append(decoded.tx)
            b.receive_data(out, now=now)
        for out in b.data_to_send(now=now):
            deframer_b.feed(out)
            a.receive_data(out, now=now)
        delivered += sum(isinstance(e, MessageReceived) for e in drain(b))
        drain(a)
        for link in (a, b):
            due = link.next_deadline()
            if due is not None and due <= now:
                link.handle_timeout(now=now)
    assert delivered == count
    assert len(txs) > 0x10000
    assert 0 not in txs
    assert a.statistics().retransmission_timeouts == 0


# --- the summary -------------------------------------------------------------------------------


def test_the_summary_says_what_was_refused_since_the_last_line_largest_first() -> None:
    summary = RefusalSummary("/dev/ttyUSB0", now=0.0)
    assert summary.due == 10.0
    totals = refusal_totals({"drop_bad_crc": 1100, "drop_unknown_channel": 104, "frames": 9})
    assert summary.report(totals, now=10.0) == (
        "refused 1,204 frames from /dev/ttyUSB0 in the last 10 s: 1,100 bad CRC, "
        "104 unknown channel"
    )
    assert summary.due == 20.0
    # nothing new: no line
    assert summary.report(totals, now=20.0) is None
    more = refusal_totals(
        {"drop_bad_crc": 1101, "drop_unknown_channel": 104},
        {"refused_malformed": 3, "refused": 3, "calls": 7},
    )
    assert summary.report(more, now=30.0) == (
        "refused 4 frames and messages from /dev/ttyUSB0 in the last 10 s: 3 bus malformed, "
        "1 bad CRC"
    )
