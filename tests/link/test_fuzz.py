"""Fuzzing the frame decoder and the link core with hostile input (hypothesis).

The rule, as in h11's fuzzer: whatever bytes arrive, only events come out
(a peer that breaks the protocol gets a refusal or a session reset, never an
exception out of the core); and a peer cannot make us hold more than the
receive window allows.  ``IRA_FUZZ_EXAMPLES`` raises the example counts
(``make fuzz``).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.errors import RemoteProtocolError
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import (
    AuthRefused,
    Channel,
    HandshakeRefused,
    LinkDown,
    LinkEvent,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.link.framing import StreamDeframer, encode_frames, encode_varint
from ira.wire.link import (
    CRC_BYTES,
    MAX_SACK_BLOCKS,
    VERSION_MAX,
    VERSION_MIN,
    Ack,
    AckBody,
    Data,
    DataBody,
    Hello,
    HelloRefused,
    LinkFrame,
    decode,
    encode,
    seal,
)
from ira.wire.link2 import Data2

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
FUZZ_EXAMPLES = max(2000, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
)

EVENT_TYPES = (
    SessionStarted,
    MessageReceived,
    LinkDown,
    LinkUp,
    PeerRestarted,
    SessionLost,
    HandshakeRefused,
    AuthRefused,
)
PEER_EPOCH = 0x5EED_F00D_0000_0001
#: what the scripted peer advertises
PEER_MAX_FRAME = 1500
PEER_WINDOW = 1 << 16
WINDOW = 4096
MAX_MESSAGE = 1024


def config(packet: bool) -> LinkConfig:
    return LinkConfig(packet=packet, window_bytes=WINDOW, max_message_bytes=MAX_MESSAGE)


def _local_epoch() -> int:
    return Link(config(True), rng=random.Random(1), now=0.0).statistics().local_epoch


LOCAL_EPOCH = _local_epoch()
TAG = (LOCAL_EPOCH ^ PEER_EPOCH) & 0xFFFF


def peer_hello(*, ack: bool = False, epoch: int = PEER_EPOCH) -> bytes:
    return encode(
        Hello(
            ack=ack,
            version_min=VERSION_MIN,
            version_max=VERSION_MAX,
            epoch=epoch,
            peer_epoch=LOCAL_EPOCH if ack else 0,
            features=1,
            max_frame_bytes=PEER_MAX_FRAME,
            window_bytes=PEER_WINDOW,
            keepalive_ms=250,
        )
    )


def carry(link: Link, frame: bytes) -> bytes:
    return frame if link.config.packet else encode_frames([frame])


def drain(link: Link) -> list[LinkEvent]:
    events = []
    while (event := link.next_event()) is not None:
        assert isinstance(event, EVENT_TYPES), event
        events.append(event)
    return events


STATES = ("handshake", "up", "sending", "down", "closed", "closed early")


def link_in(state: str, packet: bool) -> Link:
    """A link in ``state``, its session (if any) with the scripted peer, at t=1."""
    link = Link(config(packet), rng=random.Random(1), now=0.0)
    assert link.statistics().local_epoch == LOCAL_EPOCH
    link.data_to_send(now=0.0)
    if state == "closed early":
        link.close()
    if state in ("handshake", "closed early"):
        return link
    link.receive_data(carry(link, peer_hello()), now=0.0)
    assert [type(e) for e in drain(link)] == [SessionStarted]
    if state == "sending":
        for i in range(20):
            link.send_message(bytes([i]) * (50 * i), Channel(i % 2))
    link.data_to_send(now=0.5)
    if state == "down":
        link.handle_timeout(now=0.5 + link.config.dead_interval_s)
        assert [type(e) for e in drain(link)] == [LinkDown]
    if state == "closed":
        link.close()
    return link


def feed(link: Link, chunks: list[bytes], now: float) -> list[LinkEvent]:
    """Give ``link`` every chunk (it never raises); return its events."""
    events: list[LinkEvent] = []
    for i, chunk in enumerate(chunks):
        link.receive_data(chunk, now=now + i * 0.001)
        events += drain(link)
    return events + drain(link)


def still_serves(link: Link, now: float) -> None:
    """After hostile input the link still answers every verb, writes valid frames,
    and never asks a driver to wake it up in the past (which would spin the driver)."""
    for t in (now, now + 0.3, now + 3.0, now + 30.0):
        link.handle_timeout(now=t)
        out = link.data_to_send(now=t)
        frames = out if link.config.packet else StreamDeframer(1 << 24).feed(b"".join(out))
        for frame in frames:
            decode(frame)  # whatever came in, what goes out is valid
        drain(link)
        deadline = link.next_deadline()
        assert deadline is None or deadline > t, (link.statistics().state, deadline, t)
    st = link.statistics()
    assert min(v for v in dataclasses.asdict(st).values() if isinstance(v, int)) >= 0


# --- strategies ------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)

#: sequence numbers near the interesting places: the start, the window edge, the wrap
seqs = st.one_of(
    st.integers(0, 3 * WINDOW),
    st.integers(0, 64).map(lambda n: (-n) & 0xFFFFFFFF),
    st.sampled_from([WINDOW - 1, WINDOW, WINDOW + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]),
    u32,
)


def _stream(messages: list[bytes]) -> bytes:
    return b"".join(encode_varint(len(m)) + m for m in messages)


payloads = st.one_of(
    st.binary(max_size=300),
    st.lists(st.binary(max_size=40), max_size=20).map(_stream),
    st.integers(0, 300).map(bytes),  # empty messages, one byte each
    st.integers(MAX_MESSAGE, 1 << 32).map(lambda n: encode_varint(n)),  # oversize prefix
    st.just(b"\xff" * 6),  # a length prefix longer than five bytes
)


def _extra_fields(schema: object, skip: set[str]) -> dict[str, st.SearchStrategy[int]]:
    """A strategy for every fixed-size integer field not named in ``skip``."""
    return {
        sc.name: st.integers(0, (1 << (8 * sc.sizeof())) - 1)
        for sc in schema.subcons  # type: ignore[attr-defined]
        if sc.name and sc.name not in skip
    }


tags = st.one_of(st.just(TAG), st.just(TAG), u16)
datas = st.builds(
    Data,
    channel=st.integers(0, 3),
    tag=tags,
    seq=seqs,
    ack=seqs,
    window=st.one_of(st.just(0), st.just(0xFFFF), u16),
    payload=payloads,
    **_extra_fields(DataBody, {"flags", "tag", "seq", "ack", "window", "payload"}),
)
acks = st.builds(
    Ack,
    probe=st.booleans(),
    tag=tags,
    ack=seqs,
    window=st.one_of(st.just(0), st.just(0xFFFF), u16),
    blocks=st.lists(st.tuples(seqs, seqs), max_size=MAX_SACK_BLOCKS).map(tuple),
    **_extra_fields(AckBody, {"flags", "tag", "ack", "window", "count", "blocks"}),
)
hellos = st.builds(
    Hello,
    ack=st.booleans(),
    version_min=st.one_of(st.just(VERSION_MIN), u8),
    version_max=st.one_of(st.just(VERSION_MAX), u8),
    epoch=st.one_of(st.just(PEER_EPOCH), u64),
    peer_epoch=st.one_of(st.just(LOCAL_EPOCH), st.just(0), u64),
    features=u32,
    max_frame_bytes=st.one_of(st.sampled_from([0, 63, 64, 1500, 1 << 24]), u32),
    window_bytes=st.one_of(st.sampled_from([0, 1023, 1024, 1 << 20]), u32),
    keepalive_ms=u16,
)
link_frames: st.SearchStrategy[LinkFrame] = st.one_of(datas, datas, acks, acks, hellos)


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[LinkFrame] = link_frames) -> bytes:
    """A valid frame, maybe damaged, maybe resealed with a valid CRC."""
    raw = bytearray(encode(draw(frames)))
    body = raw[:-CRC_BYTES]
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(("flip", "truncate", "extend", "splice", "none")))
        if op == "flip" and body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate" and body:
            del body[draw(st.integers(0, len(body) - 1)) :]
        elif op == "extend":
            body += draw(st.binary(min_size=1, max_size=16))
        elif op == "splice" and body:
            i = draw(st.integers(0, len(body)))
            body[i:i] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()) or bytes(body) != bytes(raw[:-CRC_BYTES]):
        return seal(bytes(body)) if draw(st.integers(0, 4)) else bytes(body) + bytes(4)
    return bytes(raw)


# --- the frame decoder -------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=120))
def test_fuzz_decoder_random_bytes(data: bytes) -> None:
    try:
        frame = decode(data)
    except RemoteProtocolError:
        return
    assert encode(frame) == data  # what decodes is canonical


@FUZZ
@given(mutated())
def test_fuzz_decoder_mutated_frames(data: bytes) -> None:
    try:
        frame = decode(data)
    except RemoteProtocolError:
        return
    assert isinstance(frame, Hello | Data | Ack | HelloRefused | Data2)
    assert encode(frame) == data


# --- the link core ---------------------------------------------------------------------------


def _chunks_for(packet: bool) -> Callable[[list[bytes]], list[bytes]]:
    """Frames as the transport delivers them: one per packet, or a cut-up COBS stream."""
    if packet:
        return lambda frames: frames
    return lambda frames: [encode_frames([f]) for f in frames]


@FUZZ
@given(
    state=st.sampled_from(STATES),
    packet=st.booleans(),
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=200), st.binary(max_size=200).map(lambda b: encode_frames([b]))
        ),
        max_size=6,
    ),
)
def test_fuzz_link_random_bytes_in_every_state(
    state: str, packet: bool, chunks: list[bytes]
) -> None:
    link = link_in(state, packet)
    feed(link, chunks, now=1.0)
    still_serves(link, now=1.1)


@FUZZ
@given(
    state=st.sampled_from(STATES),
    packet=st.booleans(),
    frames=st.lists(st.one_of(mutated(), link_frames.map(encode)), min_size=1, max_size=8),
    data=st.data(),
)
def test_fuzz_link_hostile_frames_in_every_state(
    state: str, packet: bool, frames: list[bytes], data: st.DataObject
) -> None:
    """Valid-CRC frames with hostile fields: huge sequence numbers and windows, bad
    channels, SACK ranges anywhere, strange HELLOs; some damaged on the way."""
    link = link_in(state, packet)
    chunks = _chunks_for(packet)(frames)
    if not packet and chunks:
        # a stream transport cuts anywhere
        stream = b"".join(chunks)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        chunks = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    events = feed(link, chunks, now=1.0)
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    if state.startswith("closed"):
        assert events == []
    still_serves(link, now=1.1)


# --- the window bound --------------------------------------------------------------------------


def stream_bytes(events: list[LinkEvent]) -> int:
    """Channel-stream bytes of the delivered messages (length prefixes included)."""
    return sum(
        len(encode_varint(len(e.payload))) + len(e.payload)
        for e in events
        if isinstance(e, MessageReceived)
    )


#: what the receiver may hold beyond its window: the one partly reassembled message
SLACK = MAX_MESSAGE + 5


#: channel streams that are cheap for the peer and dear for us: runs of tiny messages
message_runs = st.one_of(
    payloads,
    st.integers(0, 2500).map(bytes),  # empty messages
    st.integers(0, 1200).map(lambda n: b"\x01x" * n),  # one-byte messages
)
#: where a segment starts: a step from the end of the last one, or anywhere
placements = st.one_of(
    st.tuples(st.just("step"), st.sampled_from([0, 0, 0, -1, 1, -100, 100])),
    st.tuples(st.just("step"), st.integers(-300, 300)),
    st.tuples(st.just("at"), seqs),
)


@FUZZ
@given(
    segments=st.lists(st.tuples(placements, st.integers(0, 1), message_runs), max_size=25),
    packet=st.booleans(),
)
def test_fuzz_peer_cannot_make_us_hold_more_than_the_window(
    segments: list[tuple[tuple[str, int], int, bytes]], packet: bool
) -> None:
    """The layer above takes nothing: whatever the peer sends, what we hold stays bounded."""
    link = link_in("up", packet)
    position = 0
    for (how, where), channel, payload in segments:
        seq = position + where if how == "step" else where
        position = seq + len(payload)
        frame = encode(_data(seq=seq & 0xFFFFFFFF, channel=channel, payload=payload))
        link.receive_data(carry(link, frame), now=1.0)
    events = drain(link)
    assert stream_bytes(events) <= WINDOW + SLACK


def _data(**fields: object) -> Data:
    values: dict[str, object] = dict.fromkeys(Data._fields, 0)
    values.update(tag=TAG, window=PEER_WINDOW // 256, payload=b"")
    values.update(fields)
    return Data(**values)  # type: ignore[arg-type]


def send_in_order(link: Link, stream: bytes, segment: int, *, start: int = 0) -> int:
    """Send ``stream`` in order from ``start``; return how far the link took it."""
    seq = start
    for offset in range(0, len(stream), segment):
        piece = stream[offset : offset + segment]
        before = link.statistics().drop_out_of_window
        link.receive_data(carry(link, encode(_data(seq=seq, payload=piece))), now=1.0)
        if link.statistics().drop_out_of_window > before:
            break
        seq += len(piece)
    return seq


@pytest.mark.parametrize("packet", [True, False], ids=["packet", "stream"])
@pytest.mark.parametrize(
    "message",
    [b"x" * 100, b"y", b""],
    ids=["100-byte messages", "1-byte messages", "empty messages"],
)
def test_a_stalled_consumer_closes_the_window(packet: bool, message: bytes) -> None:
    """Messages delivered but not taken count against the window, empty ones too."""
    link = link_in("up", packet)
    one = encode_varint(len(message)) + message
    stream = one * (20 * WINDOW // len(one))
    taken = send_in_order(link, stream, 200)
    st_ = link.statistics()
    assert st_.drop_out_of_window >= 1
    assert taken <= WINDOW + len(one)
    events = drain(link)
    assert stream_bytes(events) <= WINDOW + len(one)
    assert all(e.payload == message for e in events if isinstance(e, MessageReceived))
    # once taken, the window opens again and the rest follows
    more = send_in_order(link, stream[taken:], 200, start=taken)
    assert more > taken


def test_segments_beyond_the_window_are_dropped_and_counted() -> None:
    link = link_in("up", True)
    message = encode_varint(10) + b"0123456789"
    for seq in (WINDOW, WINDOW + 100, 10 * WINDOW, 0x7FFFFFFF):
        link.receive_data(encode(_data(seq=seq, payload=message)), now=1.0)
    assert link.statistics().drop_out_of_window == 4
    # far behind (more than half the sequence space away) is old, not new
    link.receive_data(encode(_data(seq=0x80000000, payload=message)), now=1.0)
    st_ = link.statistics()
    assert st_.drop_out_of_window + st_.drop_duplicate == 5
    assert drain(link) == []
    # the hole at 0 is still open: the segment that fills it is taken
    link.receive_data(encode(_data(seq=0, payload=message)), now=1.0)
    assert [e.payload for e in drain(link) if isinstance(e, MessageReceived)] == [b"0123456789"]


def test_out_of_order_segments_are_held_up_to_the_window_only() -> None:
    link = link_in("up", True)
    piece = bytes(100)  # empty messages: 100 of them per segment
    # everything above a hole at 0..99: held (up to the window) but not delivered
    for seq in range(100, 3 * WINDOW, 100):
        link.receive_data(encode(_data(seq=seq, payload=piece)), now=1.0)
    assert drain(link) == []
    held = link.statistics()
    assert held.drop_out_of_window > 0
    link.receive_data(encode(_data(seq=0, payload=piece)), now=1.0)
    assert stream_bytes(drain(link)) <= WINDOW + len(piece)


def test_a_length_prefix_of_six_bytes_resets_the_session() -> None:
    link = link_in("up", True)
    link.receive_data(encode(_data(payload=b"\x01a" + b"\xff" * 6)), now=1.0)
    events = drain(link)
    assert [type(e) for e in events] == [SessionLost]  # nothing of it acknowledged
    assert link.statistics().state == "handshake"
    # nothing more of the old session goes in: its tag is stale now
    link.receive_data(encode(_data(seq=9, payload=b"\x01b")), now=1.1)
    assert drain(link) == []
    assert link.statistics().drop_stale == 1


def test_oversize_messages_are_skipped_and_counted() -> None:
    link = link_in("up", True)
    big = MAX_MESSAGE + 1
    stream = encode_varint(big) + bytes(big) + encode_varint(2) + b"ok"
    send_in_order(link, stream, 500)
    assert [e.payload for e in drain(link) if isinstance(e, MessageReceived)] == [b"ok"]
    assert link.statistics().drop_oversize_messages == 1


def test_hostile_acks_do_not_disturb_the_sender() -> None:
    """ACKs for data never sent, SACK ranges anywhere, windows of zero: the
    messages still go out, and the session carries on."""
    link = link_in("sending", True)
    rng = random.Random(3)
    for _ in range(200):
        frame = Ack(
            **{
                **dict.fromkeys(Ack._fields, 0),
                "probe": rng.random() < 0.5,
                "tag": TAG,
                "ack": rng.getrandbits(32),
                "window": rng.choice([0, 1, 0xFFFF]),
                "blocks": tuple(
                    sorted((rng.getrandbits(32), rng.getrandbits(32)))  # type: ignore[misc]
                    for _ in range(rng.randint(0, MAX_SACK_BLOCKS))
                ),
            }
        )
        link.receive_data(encode(frame), now=1.0)
    assert link.statistics().state == "up"
    still_serves(link, now=1.0)
