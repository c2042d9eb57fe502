"""ira.venet.delta: header compression between two ends of one direction (sans-I/O)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netframes import ETH, arp, tcp4, udp6

from ira.errors import RemoteProtocolError
from ira.venet.delta import REFRESH_FRAMES, DeltaDecoder, DeltaEncoder, header_bytes, with_buffers
from ira.wire.framedelta import MAX_CONTEXTS, MIN_PREFIX, Kind, decode, num_buffers


def send(enc: DeltaEncoder, dec: DeltaDecoder, frame: bytes) -> tuple[bytes, bytes]:
    encoded = enc.encode(frame)
    enc.commit(encoded)
    return encoded.data, dec.decode(encoded.data)


def test_header_lengths() -> None:
    assert header_bytes(tcp4(1, 0, 0)) == 12 + 14 + 20 + 32
    assert header_bytes(udp6(1, b"q")) == 12 + 14 + 40 + 8
    assert header_bytes(arp()) == MIN_PREFIX
    later_fragment = bytearray(tcp4(1, 0, 0))
    later_fragment[12 + 14 + 6 : 12 + 14 + 8] = b"\x00\x10"  # offset 16 * 8
    assert header_bytes(bytes(later_fragment)) == 12 + 14 + 20
    assert header_bytes(tcp4(1, 0, 0)[:40]) == MIN_PREFIX  # no whole IP header
    assert header_bytes(tcp4(1, 0, 0)[:20]) == 20  # never past the frame


def test_a_tcp_stream_carries_its_headers_in_a_third_of_the_bytes() -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    sizes = []
    for i in range(200):
        segment = tcp4(40000, 1448 * i, 1000 + i // 4, random.Random(i).randbytes(1448), ipid=i)
        data, out = send(enc, dec, segment)
        assert out == segment
        sizes.append(len(data) - 1448)
    assert sizes[0] == 78 + 2  # SET: head, prefix, the frame as it is
    deltas = [s for s in sizes if s < 78]
    assert len(deltas) == 200 - -(-200 // REFRESH_FRAMES)  # SET again every 64 frames
    assert max(deltas) <= 26, sizes
    assert enc.counts.frames[Kind.SET] == 4 and enc.counts.frames[Kind.DELTA] == 196
    assert enc.counts.bytes_saved == sum(78 + 1448 - (s + 1448) for s in sizes)


def test_flows_keep_their_own_contexts_and_the_least_recent_gives_way() -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    flows = range(MAX_CONTEXTS + 4)
    for round_ in range(3):
        for sport in flows:
            frame = tcp4(sport, 100 * round_, round_, b"x")
            data, out = send(enc, dec, frame)
            assert out == frame
            # 20 flows through 16 contexts in turn: each is evicted before it comes back
            assert decode(data).kind == Kind.SET
    # the last 16 flows are in the contexts: a frame of one of them goes as a DELTA
    data, out = send(enc, dec, tcp4(flows[-1], 999, 9, b"x"))
    assert decode(data).kind == Kind.DELTA and out == tcp4(flows[-1], 999, 9, b"x")


def test_frames_too_short_for_a_context_go_raw() -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    short = bytes(12) + ETH + b"\x08"
    data, out = send(enc, dec, short)
    assert data == b"\x00" + short and out == short


def test_num_buffers_is_not_part_of_the_delta() -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    with_nb = bytearray(tcp4(1, 0, 0))
    with_nb[10:12] = b"\x05\x00"
    data, out = send(enc, dec, bytes(with_nb))
    assert out == tcp4(1, 0, 0)
    spread = with_buffers(data, 3)
    assert num_buffers(spread) == 3 and num_buffers(data) == 1
    assert DeltaDecoder().decode(spread) == tcp4(1, 0, 0)


def test_encoding_again_before_the_commit_changes_nothing() -> None:
    """A frame that waits for room is encoded again: only the committed one counts."""
    enc, dec = DeltaEncoder(), DeltaDecoder()
    send(enc, dec, tcp4(1, 0, 0))
    first = enc.encode(tcp4(1, 1448, 1))
    enc.encode(tcp4(2, 0, 0))  # another flow's frame, not committed
    again = enc.encode(tcp4(1, 1448, 1))
    assert again == first
    enc.commit(again)
    assert dec.decode(again.data) == tcp4(1, 1448, 1)


def test_a_broken_frame_empties_its_context_until_the_next_set() -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    lost = 0
    for i in range(2 * REFRESH_FRAMES):
        frame = tcp4(7, 1448 * i, i, b"y" * 10)
        encoded = enc.encode(frame)
        enc.commit(encoded)
        data = encoded.data
        if i == 10:
            data = data[:4]  # cut inside its mask
        try:
            assert dec.decode(data) == frame
        except RemoteProtocolError:
            lost += 1
    # frame 10 and the DELTAs after it, up to the refresh at frame 64
    assert lost == REFRESH_FRAMES - 10


def test_a_delta_on_an_empty_or_other_context_is_refused() -> None:
    enc = DeltaEncoder()
    enc.commit(enc.encode(tcp4(1, 0, 0)))
    delta = enc.encode(tcp4(1, 1448, 1))
    assert decode(delta.data).kind == Kind.DELTA
    with pytest.raises(RemoteProtocolError, match="which is empty"):
        DeltaDecoder().decode(delta.data)
    dec = DeltaDecoder()
    dec.decode(DeltaEncoder().encode(udp6(1, b"q")).data)  # context 0 holds 74 bytes
    with pytest.raises(RemoteProtocolError, match="which is of 74 bytes"):
        dec.decode(delta.data)


def test_reset_empties_the_contexts_on_both_ends() -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    send(enc, dec, tcp4(1, 0, 0))
    enc.reset()
    dec.reset()
    data, out = send(enc, dec, tcp4(1, 1448, 1))
    assert decode(data).kind == Kind.SET and out == tcp4(1, 1448, 1)


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[bytes, bool]]:
    """Frames of up to 20 flows of several kinds, each committed or only encoded."""
    frames = []
    for _ in range(draw(st.integers(1, 120))):
        flow = draw(st.integers(0, 19))
        size = draw(st.integers(0, 80))
        kind = flow % 3
        if kind == 0:
            frame = tcp4(flow, draw(st.integers(0, 1 << 32)), draw(st.integers(0, 9)), bytes(size))
        elif kind == 1:
            frame = udp6(flow, draw(st.binary(max_size=size)))
        else:
            frame = arp()[: MIN_PREFIX - 2 + size]
        frames.append((frame, draw(st.booleans()) or draw(st.booleans())))
    return frames


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 8))
def test_every_committed_frame_comes_out_as_it_went_in(
    frames: list[tuple[bytes, bool]], refresh: int
) -> None:
    enc, dec = DeltaEncoder(refresh_frames=refresh), DeltaDecoder()
    for frame, committed in frames:
        encoded = enc.encode(frame)
        if committed:
            enc.commit(encoded)
            assert dec.decode(encoded.data) == frame
