"""Link frames (ira.wire.link): golden bytes, and the fast codecs against the construct spec."""

from __future__ import annotations

import os
import zlib
from typing import Any

import construct as cs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.errors import RemoteProtocolError
from ira.wire.link import (
    ACK_FLAG_PROBE,
    ACK_FLAG_STALE_ECHO,
    CRC_BYTES,
    MAGIC,
    MAX_SACK_BLOCKS,
    Ack,
    AckBody,
    BadCrc,
    Data,
    DataBody,
    Frame,
    FrameBody,
    FrameType,
    Hello,
    HelloBody,
    HelloRefused,
    LinkFrame,
    Refusal,
    check_crc,
    decode,
    decode_body,
    encode,
    seal,
)
from ira.wire.link2 import DATA2_MAX_WINDOW, Data2

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
EXAMPLES = max(300, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))
FAST = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)

# --- strategies, derived from the schemas so that every field is covered --------------------


def _uints(schema: cs.Struct, skip: set[str]) -> dict[str, st.SearchStrategy[int]]:
    """An integer strategy for every fixed-size integer field of ``schema`` not in ``skip``."""
    return {
        sc.name: st.integers(0, (1 << (8 * sc.sizeof())) - 1)
        for sc in schema.subcons
        if sc.name and sc.name not in skip
    }


u32 = st.integers(0, 0xFFFFFFFF)
hellos = st.builds(Hello, ack=st.booleans(), **_uints(HelloBody, {"magic"}))
datas = st.builds(
    Data,
    channel=st.integers(0, 3),
    payload=st.binary(max_size=300),
    **_uints(DataBody, {"flags", "payload"}),
)
acks = st.builds(
    Ack,
    probe=st.booleans(),
    stale_echo=st.booleans(),
    blocks=st.lists(st.tuples(u32, u32), max_size=MAX_SACK_BLOCKS).map(tuple),
    **_uints(AckBody, {"flags", "count", "blocks"}),
)
refusals = st.builds(
    HelloRefused,
    version_min=st.integers(0, 255),
    version_max=st.integers(0, 255),
    epoch=st.integers(0, (1 << 64) - 1),
    peer_epoch=st.integers(0, (1 << 64) - 1),
    reason=st.sampled_from([int(r) for r in Refusal]),
)


@st.composite
def data2s(draw: st.DrawFn) -> Data2:
    seq_bytes, ack_bytes = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return Data2(
        channel=draw(st.integers(0, 3)),
        tag=draw(st.integers(0, 0xFFFF)),
        seq=draw(st.integers(0, (1 << (8 * seq_bytes)) - 1)),
        seq_bytes=seq_bytes,
        ack=draw(st.integers(0, (1 << (8 * ack_bytes)) - 1)),
        ack_bytes=ack_bytes,
        window=draw(st.none() | st.integers(0, DATA2_MAX_WINDOW)),
        tx=draw(st.integers(0, 0xFFFF)),
        echo=draw(st.none() | st.integers(0, 0xFFFF)),
        payload=draw(st.binary(max_size=300)),
    )


frames = st.one_of(hellos, datas, acks, refusals, data2s())


# --- the mapping between decoded frames and the schema's containers ----------------------------


def _plain(container: Any) -> dict[str, Any]:
    return {k: v for k, v in container.items() if not k.startswith("_")}


def to_schema(frame: LinkFrame) -> dict[str, Any]:
    """The ``FrameBody`` value of a decoded frame."""
    fields = frame._asdict()
    match frame:
        case Hello():
            kind = FrameType.HELLO_ACK if fields.pop("ack") else FrameType.HELLO
            body = {"magic": MAGIC, **fields}
        case Data():
            kind = FrameType.DATA
            body = {"flags": fields.pop("channel"), **fields}
        case Ack():
            kind = FrameType.ACK
            flags = ACK_FLAG_PROBE if fields.pop("probe") else 0
            flags |= ACK_FLAG_STALE_ECHO if fields.pop("stale_echo") else 0
            blocks = [{"start": s, "end": e} for s, e in fields.pop("blocks")]
            body = {"flags": flags, **fields, "blocks": blocks}
        case HelloRefused():
            kind = FrameType.HELLO_REFUSED
            body = {"magic": MAGIC, **fields}
        case Data2():
            kind = FrameType.DATA2
            flags = fields.pop("channel") | (fields.pop("seq_bytes") - 1) << 2
            flags |= (fields.pop("ack_bytes") - 1) << 4
            flags |= 0x40 if frame.window is not None else 0
            flags |= 0x80 if frame.echo is not None else 0
            body = {"flags": flags, **fields}
    return {"type": kind, "body": body}


def from_schema(parsed: Any) -> LinkFrame:
    """A decoded frame from a parsed ``FrameBody`` container."""
    kind = FrameType(parsed.type)
    body = _plain(parsed.body)
    if kind in (FrameType.HELLO, FrameType.HELLO_ACK):
        del body["magic"]
        return Hello(ack=kind is FrameType.HELLO_ACK, **body)
    if kind is FrameType.DATA:
        return Data(channel=body.pop("flags"), **body)
    if kind is FrameType.HELLO_REFUSED:
        del body["magic"]
        return HelloRefused(**body)
    if kind is FrameType.DATA2:
        flags = body.pop("flags")
        return Data2(
            channel=flags & 3,
            seq_bytes=(flags >> 2 & 3) + 1,
            ack_bytes=(flags >> 4 & 3) + 1,
            **body,
        )
    del body["count"]
    blocks = tuple((b.start, b.end) for b in body.pop("blocks"))
    flags = body.pop("flags")
    return Ack(
        probe=bool(flags & ACK_FLAG_PROBE),
        stale_echo=bool(flags & ACK_FLAG_STALE_ECHO),
        blocks=blocks,
        **body,
    )


COMPILED_BODY = FrameBody.compile()


def build_frame(frame: LinkFrame) -> bytes:
    return bytes(Frame.build({"fields": {"value": to_schema(frame)}}))


# --- golden vectors -------------------------------------------------------------------------


def hexbytes(*parts: str) -> bytes:
    return bytes.fromhex(" ".join(parts))


GOLDEN: list[tuple[str, LinkFrame, bytes]] = [
    (
        "HELLO",
        Hello(
            ack=False,
            version_min=1,
            version_max=1,
            epoch=0x0123456789ABCDEF,
            peer_epoch=0,
            features=1,
            max_frame_bytes=1500,
            window_bytes=1 << 20,
            keepalive_ms=250,
        ),
        hexbytes(
            "01",  # type HELLO
            "49 52 41 4c",  # magic "IRAL"
            "01 01",  # versions 1..1
            "ef cd ab 89 67 45 23 01",  # epoch
            "00 00 00 00 00 00 00 00",  # peer epoch: not known yet
            "01 00 00 00",  # features: SACK
            "dc 05 00 00",  # max frame 1500
            "00 00 10 00",  # window 1 MiB
            "fa 00",  # keepalive 250 ms
            "b4 9a 8c 44",  # CRC-32
        ),
    ),
    (
        "HELLO_ACK",
        Hello(
            ack=True,
            version_min=1,
            version_max=2,
            epoch=0xFEDCBA9876543210,
            peer_epoch=0x0123456789ABCDEF,
            features=1,
            max_frame_bytes=65536,
            window_bytes=4096,
            keepalive_ms=1000,
        ),
        hexbytes(
            "02",  # type HELLO_ACK
            "49 52 41 4c",  # magic
            "01 02",  # versions 1..2
            "10 32 54 76 98 ba dc fe",  # epoch
            "ef cd ab 89 67 45 23 01",  # peer epoch: the HELLO's
            "01 00 00 00",  # features
            "00 00 01 00",  # max frame 65536
            "00 10 00 00",  # window 4096
            "e8 03",  # keepalive 1000 ms
            "31 f0 30 20",  # CRC-32
        ),
    ),
    (
        "DATA",
        Data(
            channel=1,
            tag=0xBEEF,
            seq=0x01020304,
            ack=0x0A0B0C0D,
            window=0x1000,
            tx=7,
            echo=3,
            payload=b"\x02hi",
        ),
        hexbytes(
            "03",  # type DATA
            "01",  # flags: channel BULK
            "ef be",  # session tag
            "04 03 02 01",  # seq
            "0d 0c 0b 0a",  # cumulative ack
            "00 10",  # window, 256-byte units
            "07 00",  # tx
            "03 00",  # echo
            "02 68 69",  # payload: one message "hi" with its length prefix
            "4c d8 c2 54",  # CRC-32
        ),
    ),
    (
        "HELLO_REFUSED",
        HelloRefused(
            version_min=2,
            version_max=3,
            epoch=0xFEDCBA9876543210,
            peer_epoch=0x0123456789ABCDEF,
            reason=Refusal.VERSION,
        ),
        hexbytes(
            "05",  # type HELLO_REFUSED
            "49 52 41 4c",  # magic "IRAL"
            "02 03",  # this end speaks versions 2..3
            "10 32 54 76 98 ba dc fe",  # epoch
            "ef cd ab 89 67 45 23 01",  # the epoch of the HELLO refused
            "01",  # reason: VERSION
            "d5 2a ea 8c",  # CRC-32
        ),
    ),
    (
        "ACK",
        Ack(probe=False, tag=0xBEEF, ack=0x0A0B0C0D, window=0x0100, echo=9, held=3, blocks=()),
        hexbytes(
            "04",  # type ACK
            "00",  # flags
            "ef be",  # session tag
            "0d 0c 0b 0a",  # cumulative ack
            "00 01",  # window
            "09 00",  # echo
            "03 00 00 00 00 00 00 00",  # held: transmissions 9 and 8 arrived
            "00",  # no SACK blocks
            "22 47 66 45",  # CRC-32
        ),
    ),
    (
        "ACK with SACK",
        Ack(
            probe=True,
            tag=0x1234,
            ack=100,
            window=4,
            echo=9,
            held=1 << 63 | 1,
            blocks=((200, 300), (400, 1000)),
        ),
        hexbytes(
            "04",  # type ACK
            "01",  # flags: probe (answer at once)
            "34 12",  # session tag
            "64 00 00 00",  # cumulative ack 100
            "04 00",  # window
            "09 00",  # echo
            "01 00 00 00 00 00 00 80",  # held: transmissions 9 and 9 - 63
            "02",  # two SACK blocks
            "c8 00 00 00  2c 01 00 00",  # 200..300
            "90 01 00 00  e8 03 00 00",  # 400..1000
            "3c 75 d4 e8",  # CRC-32
        ),
    ),
]


@pytest.mark.parametrize(("name", "frame", "wire"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_bytes(name: str, frame: LinkFrame, wire: bytes) -> None:
    assert encode(frame) == wire
    assert decode(wire) == frame
    assert build_frame(frame) == wire
    assert from_schema(Frame.parse(wire).fields.value) == frame
    assert from_schema(FrameBody.parse(wire[:-CRC_BYTES])) == frame
    # the CRC is the standard CRC-32 of the body, little-endian
    assert wire[-CRC_BYTES:] == zlib.crc32(wire[:-CRC_BYTES]).to_bytes(4, "little")


# --- fast codecs against the construct schemas ------------------------------------------------


@FAST
@given(frames)
def test_fast_encoder_matches_schema_build(frame: LinkFrame) -> None:
    wire = encode(frame)
    assert build_frame(frame) == wire
    assert bytes(FrameBody.build(to_schema(frame))) == wire[:-CRC_BYTES]


@FAST
@given(frames)
def test_fast_decoder_matches_schema_parse(frame: LinkFrame) -> None:
    wire = encode(frame)
    assert decode(wire) == frame
    assert from_schema(FrameBody.parse(wire[:-CRC_BYTES])) == frame


@FAST
@given(frames)
def test_whole_frame_schema_parses_every_frame(frame: LinkFrame) -> None:
    parsed = Frame.parse(encode(frame))
    assert from_schema(parsed.fields.value) == frame


@pytest.mark.parametrize(("name", "frame", "wire"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_whole_frame_schema_checks_the_crc(name: str, frame: LinkFrame, wire: bytes) -> None:
    damaged = wire[:-1] + bytes([wire[-1] ^ 0x01])
    with pytest.raises(cs.ChecksumError):
        Frame.parse(damaged)


def _body(name: str) -> bytes:
    return next(w for n, _, w in GOLDEN if n == name)[:-CRC_BYTES]


def _ack_count_offset() -> int:
    offset = 1  # the type byte
    for sc in AckBody.subcons:
        if sc.name == "count":
            return offset
        offset += sc.sizeof()
    raise AssertionError("AckBody has no count")


ACK_COUNT_AT = _ack_count_offset()


@FAST
@given(
    st.one_of(
        st.binary(max_size=80),
        st.tuples(frames, st.integers(0, 80), st.binary(max_size=8)).map(
            lambda t: encode(t[0])[: -CRC_BYTES - t[1]] + t[2]
        ),
    )
)
def test_fast_decoder_accepts_exactly_what_the_schema_accepts(body: bytes) -> None:
    """Any body: both refuse it, or both read the same frame."""
    try:
        parsed = FrameBody.parse(body)
    except cs.ConstructError:
        parsed = None
    try:
        fast = decode_body(body)
    except RemoteProtocolError:
        fast = None
    if parsed is None:
        assert fast is None, f"decoded {fast!r} from a body the schema refuses"
    else:
        assert fast == from_schema(parsed)


def _with(name: str, offset: int, value: int, extra: bytes = b"") -> bytes:
    body = bytearray(_body(name))
    body[offset] = value
    return bytes(body) + extra


@pytest.mark.parametrize(
    ("name", "offset", "value", "extra"),
    [
        ("DATA", 1, 0x80, b""),
        ("ACK", 1, 0x04, b""),
        ("ACK", ACK_COUNT_AT, MAX_SACK_BLOCKS + 1, bytes(8 * (MAX_SACK_BLOCKS + 1))),
        ("HELLO", 0, FrameType.HELLO, b"trailing"),
        ("HELLO_REFUSED", 23, 0, b""),
        ("HELLO_REFUSED", 23, max(Refusal) + 1, b""),
    ],
    ids=[
        "DATA flags",
        "ACK flags",
        "SACK count",
        "HELLO trailing bytes",
        "refusal without reason",
        "unknown refusal",
    ],
)
def test_schema_refuses_what_the_decoder_refuses(
    name: str, offset: int, value: int, extra: bytes
) -> None:
    body = _with(name, offset, value, extra)
    with pytest.raises(RemoteProtocolError):
        decode_body(body)
    with pytest.raises(cs.ConstructError):
        FrameBody.parse(body)


def test_frame_compiles_but_its_trailer_stays_interpreted() -> None:
    """``Frame.compile()`` succeeds, but RawCopy (around OffsettedEnd) and Checksum
    (with its crc32 lambda) have no compiled form: the compiled Frame calls the
    interpreted instances for them.  Only ``FrameBody`` becomes compiled code."""
    compiled = Frame.compile()
    linked = [line for line in compiled.source.splitlines() if "linkedinstances[" in line]
    assert any("RawCopy" in line for line in linked)
    assert any("Checksum" in line for line in linked)
    for _, frame, wire in GOLDEN:
        assert compiled.parse(wire) == Frame.parse(wire)
        assert compiled.build({"fields": {"value": to_schema(frame)}}) == wire


@FAST
@given(frames)
def test_compiled_body_schema_parses_like_the_interpreted_one(frame: LinkFrame) -> None:
    body = encode(frame)[:-CRC_BYTES]
    assert COMPILED_BODY.parse(body) == FrameBody.parse(body)


@pytest.mark.parametrize(("name", "frame", "wire"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_compiled_body_schema_builds_like_the_interpreted_one(
    name: str, frame: LinkFrame, wire: bytes
) -> None:
    assert bytes(COMPILED_BODY.build(to_schema(frame))) == wire[:-CRC_BYTES]


# --- the CRC ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "frame", "wire"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_every_single_bit_flip_is_a_bad_crc(name: str, frame: LinkFrame, wire: bytes) -> None:
    for bit in range(len(wire) * 8):
        damaged = bytearray(wire)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadCrc):
            decode(damaged)


@FAST
@given(frames, st.data())
def test_bursts_up_to_32_bits_are_bad_crcs(frame: LinkFrame, data: st.DataObject) -> None:
    wire = encode(frame)
    start = data.draw(st.integers(0, len(wire) * 8 - 1))
    length = data.draw(st.integers(1, min(32, len(wire) * 8 - start)))
    pattern = data.draw(st.integers(0, (1 << length) - 1)) | 1 | (1 << (length - 1))
    value = int.from_bytes(wire, "little") ^ (pattern << start)
    with pytest.raises(BadCrc):
        decode(value.to_bytes(len(wire), "little"))


@pytest.mark.parametrize("size", range(5))
def test_frames_too_short_to_carry_a_crc(size: int) -> None:
    with pytest.raises(BadCrc):
        check_crc(bytes(size))


def test_bad_crc_is_a_remote_protocol_error() -> None:
    assert issubclass(BadCrc, RemoteProtocolError)


# --- malformed bodies (valid CRC) --------------------------------------------------------------


@pytest.mark.parametrize("name", ["HELLO", "HELLO_ACK", "ACK", "ACK with SACK"])
def test_truncated_or_extended_fixed_bodies_are_refused(name: str) -> None:
    body = _body(name)
    for cut in range(1, len(body)):
        with pytest.raises(RemoteProtocolError):
            decode(seal(body[:cut]))
    for extra in (b"\x00", b"\x00" * 8, b"\xff" * 40):
        with pytest.raises(RemoteProtocolError):
            decode(seal(body + extra))


def test_truncated_data_header_is_refused_and_extra_bytes_are_payload() -> None:
    body = _body("DATA")
    header = len(body) - 3
    for cut in range(1, header):
        with pytest.raises(RemoteProtocolError):
            decode(seal(body[:cut]))
    assert decode(seal(body[:header])) == GOLDEN[2][1]._replace(payload=b"")
    extended = decode(seal(body + b"more"))
    assert isinstance(extended, Data)
    assert extended.payload == b"\x02himore"


def test_sack_count_must_match_the_blocks() -> None:
    body = bytearray(_body("ACK with SACK"))
    count_at = len(body) - 2 * 8 - 1
    assert body[count_at] == 2
    for count in (0, 1, 3, MAX_SACK_BLOCKS, MAX_SACK_BLOCKS + 1, 255):
        body[count_at] = count
        with pytest.raises(RemoteProtocolError):
            decode(seal(bytes(body)))


def test_more_than_max_sack_blocks_is_refused() -> None:
    body = bytearray(_body("ACK"))
    body[-1] = MAX_SACK_BLOCKS + 1
    body += bytes(8 * (MAX_SACK_BLOCKS + 1))
    with pytest.raises(RemoteProtocolError):
        decode(seal(bytes(body)))


def test_encoder_refuses_too_many_sack_blocks() -> None:
    frame = Ack(
        probe=False,
        tag=0,
        ack=0,
        window=0,
        echo=0,
        held=0,
        blocks=((0, 1),) * (MAX_SACK_BLOCKS + 1),
    )
    with pytest.raises(ValueError, match="SACK"):
        encode(frame)


@pytest.mark.parametrize("kind", [0, 7, 0x7F, 0x80, 0xFF])
def test_unknown_frame_type(kind: int) -> None:
    with pytest.raises(RemoteProtocolError, match="unknown frame type"):
        decode(seal(bytes([kind]) + bytes(40)))


def test_empty_body() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_body(b"")


def test_hello_with_another_magic() -> None:
    body = _body("HELLO").replace(MAGIC, b"IRAX")
    with pytest.raises(RemoteProtocolError, match="magic"):
        decode(seal(body))


@pytest.mark.parametrize("flags", [0x04, 0x80, 0xFF])
def test_data_with_unknown_flags(flags: int) -> None:
    body = bytearray(_body("DATA"))
    body[1] = flags
    with pytest.raises(RemoteProtocolError, match="flags"):
        decode(seal(bytes(body)))


@pytest.mark.parametrize("flags", [0x04, 0x80, 0xFF])
def test_ack_with_unknown_flags(flags: int) -> None:
    body = bytearray(_body("ACK"))
    body[1] = flags
    with pytest.raises(RemoteProtocolError, match="flags"):
        decode(seal(bytes(body)))


@given(st.binary(max_size=4096))
def test_fast_crc_is_crcmods_crc32(data: bytes) -> None:
    from ira.wire.link import crc32, reference_crc32

    assert crc32(data) == reference_crc32(data)
    assert crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value
