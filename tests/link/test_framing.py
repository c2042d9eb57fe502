"""COBS stream framing and LEB128 message lengths (ira.link.framing, DESIGN §3 *Framing*)."""

from __future__ import annotations

import os
import random
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.errors import RemoteProtocolError
from ira.link.events import Channel
from ira.link.framing import (
    DELIMITER,
    MAX_VARINT_BYTES,
    StreamDeframer,
    encode_frames,
    encode_varint,
)
from ira.link.receiver import Receiver

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
EXAMPLES = max(200, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))

MAX_FRAME = 300
#: the longest COBS chunk a frame of MAX_FRAME bytes can need, delimiter excluded
MAX_CHUNK = MAX_FRAME + MAX_FRAME // 254 + 2

FRAMES = [
    b"\x01",
    b"hello, frame",
    bytes(40),  # all zeros: the worst case for COBS code bytes
    bytes(range(256)),  # a 0x00 and a run of 254 non-zero bytes
    bytes([0xFF]) * MAX_FRAME,  # no zeros at all, largest frame: the most COBS overhead
    b"\x00ab\x00\x00cd\x00",
]


def feed_in_pieces(deframer: StreamDeframer, data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``data`` cut at the given offsets; check the buffer bound after every piece."""
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += deframer.feed(data[start:cut])
        start = max(start, cut)
        assert deframer.buffered_bytes <= MAX_CHUNK
    return out


def is_subsequence(needles: list[bytes], haystack: list[bytes]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


# --- encoding -----------------------------------------------------------------------


def test_encoded_stream_is_delimited_and_free_of_zeros_inside_chunks() -> None:
    stream = encode_frames(FRAMES)
    assert stream.startswith(DELIMITER)  # noise before the chunk ends at this delimiter
    assert stream.endswith(DELIMITER)
    chunks = stream[1:-1].split(DELIMITER)
    assert len(chunks) == len(FRAMES)
    for frame, chunk in zip(FRAMES, chunks, strict=True):
        # COBS overhead is bounded: one code byte per 254 data bytes, plus one
        assert len(chunk) <= len(frame) + len(frame) // 254 + 1


def test_golden_cobs_bytes() -> None:
    assert encode_frames([b"\x11\x22\x00\x33"]) == bytes.fromhex("00 03 11 22 02 33 00")
    assert encode_frames([b"\x00"]) == bytes.fromhex("00 01 01 00")
    assert encode_frames([b"a", b"b"]) == bytes.fromhex("00 02 61 00 02 62 00")


# --- deframing ------------------------------------------------------------------------


def test_whole_stream_in_one_piece() -> None:
    d = StreamDeframer(MAX_FRAME)
    assert d.feed(encode_frames(FRAMES)) == FRAMES
    assert d.stats.frames == len(FRAMES)
    assert (d.stats.malformed, d.stats.oversize, d.buffered_bytes) == (0, 0, 0)


def test_one_byte_at_a_time() -> None:
    stream = encode_frames(FRAMES)
    d = StreamDeframer(MAX_FRAME)
    assert feed_in_pieces(d, stream, list(range(len(stream)))) == FRAMES


def test_bytearray_input() -> None:
    assert StreamDeframer(MAX_FRAME).feed(bytearray(encode_frames(FRAMES))) == FRAMES


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=MAX_FRAME), max_size=8),
    data=st.data(),
)
def test_random_cut_points(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frames([f]) for f in frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    d = StreamDeframer(MAX_FRAME)
    assert feed_in_pieces(d, stream, cuts) == frames
    assert d.stats.malformed == d.stats.oversize == 0


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=MAX_FRAME), min_size=1, max_size=5),
    junk=st.lists(st.binary(max_size=2 * MAX_CHUNK), min_size=6, max_size=6),
    data=st.data(),
)
def test_junk_before_between_and_after_frames(
    frames: list[bytes], junk: list[bytes], data: st.DataObject
) -> None:
    """Whatever the line carried around them, every frame comes out, in order.

    Junk is isolated by the delimiters the encoder puts on both sides of each
    chunk; junk that happens to be valid COBS comes out as a bogus frame (the
    CRC check above the deframer drops it), so the real frames are a
    subsequence of the output.
    """
    stream = junk[0]
    for i, frame in enumerate(frames):
        stream += encode_frames([frame]) + junk[i + 1]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    d = StreamDeframer(MAX_FRAME)
    out = feed_in_pieces(d, stream, cuts)
    assert is_subsequence(frames, out)
    assert d.stats.frames == len(out)


def test_invalid_cobs_is_counted_and_skipped() -> None:
    d = StreamDeframer(MAX_FRAME)
    # 0x05 promises four more bytes before the next code byte; only two follow
    stream = b"\x05ab" + encode_frames([b"after"])
    assert d.feed(stream) == [b"after"]
    assert d.stats.malformed == 1


def test_empty_chunks_between_delimiters_are_ignored() -> None:
    d = StreamDeframer(MAX_FRAME)
    assert d.feed(bytes(10) + encode_frames([b"x"]) + bytes(10)) == [b"x"]
    assert (d.stats.frames, d.stats.malformed) == (1, 0)


def test_oversize_chunk_is_dropped_counted_and_the_next_frame_survives() -> None:
    d = StreamDeframer(MAX_FRAME)
    noise = bytes([0x7E]) * (3 * MAX_CHUNK)  # no delimiter for a long time
    stream = noise + encode_frames([b"next"])
    out = feed_in_pieces(d, stream, list(range(0, len(stream), 7)))
    assert out == [b"next"]
    assert d.stats.oversize == 1
    assert d.stats.discarded_bytes == len(noise)


def test_largest_frame_is_not_oversize_and_one_more_byte_is() -> None:
    worst = bytes([0xFF]) * MAX_FRAME  # no zeros: the most COBS overhead
    d = StreamDeframer(MAX_FRAME)
    assert d.feed(encode_frames([worst])) == [worst]
    assert d.stats.oversize == 0
    # a chunk that cannot be a frame of at most MAX_FRAME bytes is cut off
    d.feed(DELIMITER + bytes([0xFF]) * (MAX_CHUNK + 1))
    assert d.stats.oversize == 1
    assert d.feed(encode_frames([b"ok"])) == [b"ok"]


def test_seeded_line_noise_never_grows_the_buffer() -> None:
    rng = random.Random(7)
    d = StreamDeframer(MAX_FRAME)
    for _ in range(200):
        d.feed(rng.randbytes(rng.randrange(1, 2000)))
        assert d.buffered_bytes <= MAX_CHUNK
    # and the stream recovers at the next frame
    assert d.feed(encode_frames([b"alive"]))[-1] == b"alive"


# --- LEB128 message lengths -----------------------------------------------------------------


def leb128_decode(data: bytes) -> tuple[int, int]:
    """Reference decoder: (value, bytes used)."""
    value = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise ValueError("unterminated")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "80 01"),
        (300, "ac 02"),
        (16383, "ff 7f"),
        (16384, "80 80 01"),
        ((1 << 32) - 1, "ff ff ff ff 0f"),
    ],
)
def test_varint_golden(value: int, encoded: str) -> None:
    assert encode_varint(value) == bytes.fromhex(encoded)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, (1 << (7 * MAX_VARINT_BYTES)) - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert len(encoded) <= MAX_VARINT_BYTES
    assert leb128_decode(encoded) == (value, len(encoded))
    assert all(b & 0x80 for b in encoded[:-1]) and not encoded[-1] & 0x80


def reassemble(stream: bytes, cuts: list[int], max_message_bytes: int = 1 << 20) -> list[bytes]:
    """Feed one channel's byte stream to a receiver in order, cut anywhere."""
    receiver = Receiver(1 << 22, max_message_bytes)
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        if cut > start:
            receiver.on_segment(start, Channel.BULK, stream[start:cut])
            start = cut
    out: deque[tuple[Channel, bytes]] = receiver.delivered
    return [m for _, m in out]


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    messages=st.lists(
        st.one_of(st.binary(max_size=300), st.integers(0, 70000).map(bytes)), max_size=6
    ),
    data=st.data(),
)
def test_length_prefixed_messages_round_trip_at_any_cut(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_varint(len(m)) + m for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert reassemble(stream, cuts) == messages


def test_length_prefix_split_byte_by_byte() -> None:
    message = bytes(300)  # a two-byte length prefix
    stream = encode_varint(len(message)) + message
    assert reassemble(stream, list(range(len(stream)))) == [message]


def test_oversize_message_is_skipped_and_the_next_one_delivered() -> None:
    stream = encode_varint(5000) + bytes(5000) + encode_varint(3) + b"abc"
    receiver = Receiver(1 << 20, 1000)
    for offset in range(0, len(stream), 100):
        receiver.on_segment(offset, Channel.CONTROL, stream[offset : offset + 100])
    assert [m for _, m in receiver.delivered] == [b"abc"]
    assert receiver.stats.oversize_messages == 1


def test_length_prefix_longer_than_five_bytes_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        Receiver(1 << 20, 1000).on_segment(0, Channel.CONTROL, b"\x80" * 6 + b"\x01")
