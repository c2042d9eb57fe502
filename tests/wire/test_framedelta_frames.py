"""ira.wire.framedelta: golden vectors, the schema against the fast codec, junk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import MessageSpec
from ira.wire.framedelta import (
    DELTA_FRAME,
    MAX_CONTEXTS,
    MAX_PREFIX,
    MIN_PREFIX,
    SPEC,
    DeltaFrame,
    Kind,
    decode,
    encode,
    num_buffers,
    schema_decode,
)

HEADERS = bytes(12) + bytes.fromhex("020000000002020000000001" "88b5")  # fmt: skip

GOLDEN: list[tuple[DeltaFrame, str]] = [
    (
        DeltaFrame(Kind.RAW, rest=bytes(12) + bytes.fromhex("ffffffffffff0200000000010806")),
        "00" + "00" * 12 + "ffffffffffff0200000000010806",
    ),
    (
        DeltaFrame(Kind.SET, context=3, prefix=26, rest=HEADERS + b"hi"),
        "131a" + HEADERS.hex() + "6869",
    ),
    (
        DeltaFrame(
            Kind.DELTA,
            context=3,
            num_buffers=2,
            prefix=26,
            mask=bytes([0, 0, 0, 0x02]),
            changed=b"\x03",
            rest=b"hi",
        ),
        "63021a0100000002036869",
    ),
    (
        DeltaFrame(Kind.DELTA, context=15, prefix=27, mask=bytes(4), rest=b""),
        "2f1b0000000000",
    ),
]


@pytest.mark.parametrize(("frame", "text"), GOLDEN, ids=lambda c: getattr(c, "kind", ""))
def test_golden_vectors(frame: DeltaFrame, text: str) -> None:
    data = bytes.fromhex(text)
    assert encode(frame) == data
    assert decode(data) == frame == schema_decode(data)
    assert DELTA_FRAME.build(DELTA_FRAME.parse(data)) == data
    assert num_buffers(data) == frame.num_buffers


@pytest.mark.parametrize("spec", SPEC.messages, ids=lambda m: m.name)
def test_spec_examples_are_golden_vectors(spec: MessageSpec) -> None:
    assert any(spec.example == f and encode(f).hex() == t for f, t in GOLDEN)
    assert spec.tag == int(spec.example.kind) << 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (DeltaFrame(Kind.RAW, context=MAX_CONTEXTS, rest=HEADERS), "context 16"),
        (DeltaFrame(Kind.RAW, num_buffers=0, rest=HEADERS), "num_buffers 0"),
        (DeltaFrame(Kind.RAW, prefix=26, rest=HEADERS), "RAW frame has no prefix"),
        (DeltaFrame(Kind.SET, prefix=MIN_PREFIX - 1, rest=HEADERS), "prefix 25"),
        (DeltaFrame(Kind.SET, prefix=MAX_PREFIX + 1, rest=bytes(300)), "prefix 193"),
        (DeltaFrame(Kind.SET, prefix=40, rest=HEADERS), "shorter than its prefix"),
        (DeltaFrame(Kind.DELTA, prefix=26, mask=bytes(3)), "mask of 3 bytes"),
        (DeltaFrame(Kind.DELTA, prefix=26, mask=bytes([0, 0, 0, 4])), "beyond the prefix"),
        (DeltaFrame(Kind.DELTA, prefix=26, mask=bytes([1, 0, 0, 0])), "1 bytes marked, 0"),
    ],
)
def test_frames_breaking_a_rule_are_refused_both_ways(frame: DeltaFrame, why: str) -> None:
    with pytest.raises(LocalProtocolError, match=why):
        encode(frame)


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing
        "80" + HEADERS.hex(),  # reserved bit
        "30" + HEADERS.hex(),  # kind 3
        "40",  # NB without its byte
        "4001" + HEADERS.hex(),  # NB saying one buffer
        "10",  # SET without its prefix
        "101a" + HEADERS[:20].hex(),  # SET shorter than its prefix
        "201a01000000",  # DELTA ends inside its mask
        "201a0203000000ff",  # DELTA ends inside its changed bytes
        "201a0100000004ff",  # a mask bit past the prefix
    ],
)
def test_malformed_frames_are_rejected_by_both_decoders(text: str) -> None:
    data = bytes.fromhex(text)
    with pytest.raises(RemoteProtocolError):
        decode(data)
    with pytest.raises(RemoteProtocolError):
        schema_decode(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_alike_or_are_refused_alike(data: bytes) -> None:
    try:
        fast = decode(data)
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            schema_decode(data)
        return
    assert schema_decode(data) == fast
    assert encode(fast) == data


@st.composite
def delta_frames(draw: st.DrawFn) -> DeltaFrame:
    kind = draw(st.sampled_from(Kind))
    context = draw(st.integers(0, MAX_CONTEXTS - 1))
    buffers = draw(st.integers(1, 255))
    rest = draw(st.binary(max_size=300))
    if kind == Kind.RAW:
        return DeltaFrame(kind, context, buffers, rest=rest)
    prefix = draw(st.integers(MIN_PREFIX, MAX_PREFIX))
    if kind == Kind.SET:
        return DeltaFrame(kind, context, buffers, prefix, rest=bytes(prefix) + rest)
    marked = draw(st.integers(0, (1 << prefix) - 1))
    mask = marked.to_bytes((prefix + 7) // 8, "little")
    changed = draw(st.binary(min_size=marked.bit_count(), max_size=marked.bit_count()))
    return DeltaFrame(kind, context, buffers, prefix, mask, changed, rest)


@settings(max_examples=300, deadline=None)
@given(delta_frames())
def test_every_valid_frame_round_trips_through_both_decoders(frame: DeltaFrame) -> None:
    data = encode(frame)
    assert decode(data) == frame == schema_decode(data)
    assert num_buffers(data) == frame.num_buffers
