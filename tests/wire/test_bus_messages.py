"""ira.wire.bus: golden vectors, truncation/junk, compiled parity, round-trip and fuzz."""

from __future__ import annotations

import os
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import MessageDef, MessageSpec, bus
from ira.wire.bus import (
    MAX_ATTR_KEY_BYTES,
    MAX_ATTR_VALUE_BYTES,
    MAX_ATTRS,
    MAX_BATCH_UPDATES,
    MAX_CALL_PAYLOAD_BYTES,
    MAX_SPAN_BYTES,
    MAX_SPANS,
    MAX_TYPE_BYTES,
    Attribute,
    BusHello,
    BusLimits,
    BusSynced,
    BusWelcome,
    CallFlags,
    DevAdd,
    DevCall,
    DevCallReply,
    DevClose,
    DevDrop,
    DevOpen,
    DevOpenReply,
    Message,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    ShmFlags,
    SignalNotify,
    SignalState,
    Span,
    Tag,
    WindowBatch,
    WindowUpdate,
    decode,
    decode_uncompiled,
    encode,
    encode_devcall,
    encode_devcall_reply,
    schema_decode,
    schema_encode,
    windows_of,
)

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
FUZZ_EXAMPLES = max(6000, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))

# (message, golden bytes).  Written out by hand from docs/PROTOCOL.md's layouts.
GOLDEN: list[tuple[Message, str]] = [
    (BusHello(version_min=1, version_max=1), "01 49524142 0100 0100"),
    (
        BusWelcome(
            status=0,
            version=1,
            max_call_payload_bytes=65536,
            max_handles=64,
            max_windows=64,
            max_window_bytes=1 << 20,
            max_total_window_bytes=4 << 20,
        ),
        "02 00000000 0100 00000100 4000 4000 00001000 00004000",
    ),
    (BusWelcome(-93, 0, 0, 0, 0, 0, 0), "02 a3ffffff 0000 00000000 0000 0000 00000000 00000000"),
    (BusSynced(device_count=2), "03 02000000"),
    (BusLimits(max_devices=256), "04 0001"),
    (BusLimits(max_devices=0xFFFF), "04 ffff"),
    (
        DevAdd(device_id=1, version=1, type="echo", attrs=(Attribute("board", "bb-1"),)),
        "10 01000000 01000000 04 6563686f 01 05 626f617264 0400 62622d31",
    ),
    (DevAdd(device_id=0x01020304, version=7, type="x"), "10 04030201 07000000 01 78 00"),
    (DevDrop(device_id=1), "11 01000000"),
    (DevOpen(call_id=7, device_id=1, version=1), "20 07000000 01000000 01000000"),
    (DevOpenReply(call_id=7, status=0, handle=0x9E3779B1), "21 07000000 00000000 b179379e"),
    (DevOpenReply(call_id=7, status=-19, handle=0), "21 07000000 edffffff 00000000"),
    (DevClose(handle=0x9E3779B1), "22 b179379e"),
    (
        DevCall(call_id=8, handle=0x9E3779B1, func=0, flags=0, payload=b"ping"),
        "30 08000000 b179379e 00000000 00000000 04000000 70696e67",
    ),
    (
        DevCall(call_id=9, handle=1, func=3, flags=int(CallFlags.NO_REPLY), payload=b""),
        "30 09000000 01000000 03000000 01000000 00000000",
    ),
    (DevCallReply(call_id=8, status=0, payload=b"ping"), "31 08000000 00000000 04000000 70696e67"),
    (DevCallReply(call_id=8, status=-38, payload=b""), "31 08000000 daffffff 00000000"),
    (
        ShmAttach(
            call_id=9,
            handle=0x9E3779B1,
            shm_id=0,
            window=1,
            size_bytes=4096,
            device_offset=2048,
            device_length=2048,
            flags=int(ShmFlags.SIGNAL),
        ),
        "40 09000000 b179379e 00000000 01000000 00100000 00080000 00080000 01000000",
    ),
    (ShmAttachReply(call_id=9, status=0, signal=0x3C6EF372), "41 09000000 00000000 72f36e3c"),
    (ShmDetach(call_id=10, handle=0x9E3779B1, window=1), "42 0a000000 b179379e 01000000"),
    (ShmDetachReply(call_id=10, status=0), "43 0a000000 00000000"),
    (
        WindowUpdate(window=1, spans=(Span(0, b"\x01\x02\x03\x04"),)),
        "50 01000000 01 00000000 0400 01020304",
    ),
    (
        WindowUpdate(window=2, spans=(Span(16, b"a"), Span(0x10000, b"bc"))),
        "50 02000000 02 10000000 0100 61 00000100 0200 6263",
    ),
    (
        WindowUpdate(window=3, spans=(Span(8, b"\xff"),), more=True),
        "50 03000000 81 08000000 0100 ff",
    ),
    (
        WindowBatch(
            (
                WindowUpdate(window=2, spans=(Span(0, b"\x45\x00"),)),
                WindowUpdate(window=1, spans=(Span(4098, b"\x01"),)),
            )
        ),
        "51 02 02000000 01 00000000 0200 4500 01000000 01 02100000 0100 01",
    ),
    (
        WindowBatch(
            (
                WindowUpdate(window=3, spans=(Span(8, b"\xff"),), more=True),
                WindowUpdate(window=3, spans=(Span(16, b"a"), Span(0x10000, b"bc"))),
                WindowUpdate(window=7, spans=(Span(0, b"z"),)),
            )
        ),
        "51 03 03000000 81 08000000 0100 ff 03000000 02 10000000 0100 61 00000100 0200 6263"
        " 07000000 01 00000000 0100 7a",
    ),
    (SignalNotify(signal=0x3C6EF372), "60 72f36e3c"),
    (SignalState(signal=0x3C6EF372, enabled=True, signals_seen=1), "61 72f36e3c 01 01000000"),
    (SignalState(signal=5, enabled=False, signals_seen=0xFFFFFFFF), "61 05000000 00 ffffffff"),
]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _ids(case: tuple[Message, str]) -> str:
    return type(case[0]).__name__


@pytest.mark.parametrize("case", GOLDEN, ids=_ids)
def test_golden_encode_and_decode(case: tuple[Message, str]) -> None:
    msg, text = case
    data = _hex(text)
    assert encode(msg) == data
    assert decode(data) == msg
    assert decode_uncompiled(data) == msg


def test_every_tag_has_a_golden_vector_and_a_spec_entry() -> None:
    tags = {_hex(text)[0] for _, text in GOLDEN}
    assert tags == {int(t) for t in Tag}
    assert [m.tag for m in bus.SPEC.messages] == sorted(int(t) for t in Tag)


@pytest.mark.parametrize("spec", bus.SPEC.messages, ids=lambda m: m.name)
def test_spec_examples_are_golden_vectors(spec: MessageSpec) -> None:
    data = encode(spec.example)  # type: ignore[arg-type]
    assert any(msg == spec.example and _hex(text) == data for msg, text in GOLDEN)
    # The documented whole-message schema parses what the codec writes.
    parsed = spec.schema.parse(data)
    assert parsed.tag == spec.tag


@pytest.mark.parametrize("case", GOLDEN, ids=_ids)
def test_truncated_messages_are_rejected(case: tuple[Message, str]) -> None:
    data = _hex(case[1])
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode(data[:cut])
        with pytest.raises(RemoteProtocolError):
            decode_uncompiled(data[:cut])


@pytest.mark.parametrize("case", GOLDEN, ids=_ids)
@pytest.mark.parametrize("junk", [b"\x00", b"\xff", b"junk", bytes(64)])
def test_junk_after_a_message_is_rejected(case: tuple[Message, str], junk: bytes) -> None:
    data = _hex(case[1]) + junk
    with pytest.raises(RemoteProtocolError):
        decode(data)
    with pytest.raises(RemoteProtocolError):
        decode_uncompiled(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00", id="tag-0"),
        pytest.param(b"\x05\x00\x00\x00\x00", id="unknown-tag"),
        pytest.param(_hex("04 0000"), id="limits-no-devices"),
        pytest.param(_hex("04 00"), id="limits-truncated"),
        pytest.param(_hex("04 0001 00"), id="limits-trailing"),
        pytest.param(b"\xff", id="tag-ff"),
        pytest.param(_hex("01 49524143 0100 0100"), id="bad-magic"),
        pytest.param(_hex("01 49524142 0200 0100"), id="min-above-max"),
        pytest.param(_hex("30 08000000 01000000 00000000 02000000 00000000"), id="call-flag"),
        pytest.param(_hex("40" + "00000000" * 7 + "02000000"), id="shm-flag"),
        pytest.param(_hex("61 05000000 02 00000000"), id="enabled-2"),
        pytest.param(_hex("10 01000000 01000000 00 00"), id="empty-type"),
        pytest.param(_hex("10 01000000 01000000 02 ff fe 00"), id="bad-utf8"),
        pytest.param(_hex("50 01000000 00"), id="no-spans"),
        pytest.param(_hex("50 01000000 80"), id="more-without-spans"),
        pytest.param(_hex("50 01000000 21 00000000 0100 ff"), id="window-reserved-bit-5"),
        pytest.param(_hex("50 01000000 41 00000000 0100 ff"), id="window-reserved-bit-6"),
        pytest.param(_hex("50 01000000 01 00000000 0000"), id="empty-span"),
        pytest.param(_hex("50 01000000 01 00000000 0110") + bytes(4097), id="span-too-long"),
        pytest.param(_hex("31 08000000 00000000 01000100") + bytes(65537), id="payload-too-long"),
        pytest.param(_hex("51 01 01000000 01 00000000 0100 ff"), id="windows-of-one"),
        pytest.param(_hex("51 00"), id="windows-of-none"),
        pytest.param(_hex("51 11") + _hex("01000000 01 00000000 0100 ff") * 17, id="windows-of-17"),
        pytest.param(
            _hex("51 02 01000000 01 00000000 0100 ff 01000000 00"), id="windows-update-no-spans"
        ),
        pytest.param(
            _hex("51 02 01000000 01 00000000 0100 ff 01000000 41 00000000 0100 ff"),
            id="windows-update-reserved-bit",
        ),
        pytest.param(_hex("51 02 01000000 01 00000000 0100 ff"), id="windows-one-update-short"),
    ],
)
def test_invalid_messages_are_rejected(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data)
    with pytest.raises(RemoteProtocolError):
        decode_uncompiled(data)


@pytest.mark.parametrize(
    "msg",
    [
        DevCall(1, 1, 1, 2, b""),
        DevCall(1, 1, 1, 0, bytes(MAX_CALL_PAYLOAD_BYTES + 1)),
        DevCall(1, 1, -1, 0, b""),
        DevCall(1 << 32, 1, 1, 0, b""),
        DevAdd(1, 1, "", ()),
        DevAdd(1, 1, "t" * (MAX_TYPE_BYTES + 1), ()),
        DevAdd(1, 1, "t", tuple(Attribute(str(i), "") for i in range(MAX_ATTRS + 1))),
        DevAdd(1, 1, "t", (Attribute("k" * (MAX_ATTR_KEY_BYTES + 1), ""),)),
        DevAdd(1, 1, "t", (Attribute("k", "v" * (MAX_ATTR_VALUE_BYTES + 1)),)),
        WindowUpdate(1, ()),
        WindowUpdate(1, (Span(0, b""),)),
        WindowUpdate(1, (Span(0, bytes(MAX_SPAN_BYTES + 1)),)),
        WindowUpdate(1, tuple(Span(i, b"x") for i in range(MAX_SPANS + 1))),
        ShmAttach(1, 1, 1, 1, 1, 0, 0, 4),
        BusHello(2, 1),
        WindowBatch(()),
        WindowBatch((WindowUpdate(1, (Span(0, b"x"),)),)),
        WindowBatch(tuple(WindowUpdate(1, (Span(0, b"x"),)) for _ in range(MAX_BATCH_UPDATES + 1))),
        WindowBatch((WindowUpdate(1, (Span(0, b"x"),)), WindowUpdate(1, ()))),
    ],
    ids=repr,
)
def test_encode_refuses_what_the_wire_cannot_carry(msg: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode(msg)


def test_encode_refuses_a_foreign_object() -> None:
    with pytest.raises(LocalProtocolError):
        encode(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Hypothesis: round trip, parity, fuzz
# ---------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
s32 = st.integers(-(1 << 31), (1 << 31) - 1)
u16 = st.integers(0, 0xFFFF)


def _text(max_bytes: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=max_bytes // 4)


def _batches(
    spans: st.SearchStrategy[list[Span]], min_size: int, max_size: int
) -> st.SearchStrategy[WindowBatch]:
    """WINDOWS messages of ``min_size..max_size`` updates with ``spans`` each."""
    update = st.builds(WindowUpdate, u32, spans.map(tuple), st.booleans())
    return st.builds(WindowBatch, st.lists(update, min_size=min_size, max_size=max_size).map(tuple))


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(BusHello, u16, u16).filter(lambda m: m.version_min <= m.version_max),
    st.builds(BusWelcome, s32, u16, u32, u16, u16, u32, u32),
    st.builds(BusSynced, u32),
    st.builds(
        DevAdd,
        u32,
        u32,
        _text(MAX_TYPE_BYTES, 1),
        st.lists(
            st.builds(Attribute, _text(MAX_ATTR_KEY_BYTES), _text(MAX_ATTR_VALUE_BYTES)),
            max_size=MAX_ATTRS,
        ).map(tuple),
    ),
    st.builds(DevDrop, u32),
    st.builds(DevOpen, u32, u32, u32),
    st.builds(DevOpenReply, u32, s32, u32),
    st.builds(DevClose, u32),
    st.builds(DevCall, u32, u32, u32, st.sampled_from([0, 1]), st.binary(max_size=300)),
    st.builds(DevCallReply, u32, s32, st.binary(max_size=300)),
    st.builds(ShmAttach, u32, u32, u32, u32, u32, u32, u32, st.sampled_from([0, 1])),
    st.builds(ShmAttachReply, u32, s32, u32),
    st.builds(ShmDetach, u32, u32, u32),
    st.builds(ShmDetachReply, u32, s32),
    st.builds(
        WindowUpdate,
        u32,
        st.lists(
            st.builds(Span, u32, st.binary(min_size=1, max_size=64)), min_size=1, max_size=MAX_SPANS
        ).map(tuple),
    ),
    _batches(
        st.lists(st.builds(Span, u32, st.binary(min_size=1, max_size=16)), min_size=1, max_size=4),
        2,
        MAX_BATCH_UPDATES,
    ),
    st.builds(SignalNotify, u32),
    st.builds(SignalState, u32, st.booleans(), u32),
)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert decode_uncompiled(data) == msg
    assert encode(decode(data)) == data


def _outcome(decoder: object, data: bytes) -> object:
    try:
        return decoder(data)  # type: ignore[operator]
    except RemoteProtocolError:
        return RemoteProtocolError


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A golden or generated message with bytes flipped, cut, inserted or appended."""
    if draw(st.booleans()):
        data = bytearray(_hex(draw(st.sampled_from(GOLDEN))[1]))
    else:
        data = bytearray(encode(draw(messages)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.integers(0, 3))
        where = draw(st.integers(0, len(data)))
        if action == 0 and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == 1:
            del data[where:]
        elif action == 2:
            data[where:where] = draw(st.binary(min_size=1, max_size=4))
        else:
            data += draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


fuzz_inputs = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda t, rest: bytes([t]) + rest, st.sampled_from(list(Tag)), st.binary(max_size=48)
    ),
    _mutated(),
)


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(fuzz_inputs)
def test_fuzz_decode_yields_a_message_or_remote_protocol_error(data: bytes) -> None:
    compiled = _outcome(decode, data)
    assert compiled is RemoteProtocolError or isinstance(compiled, Message)
    # Compiled and uncompiled schemas agree on every input.
    assert _outcome(decode_uncompiled, data) == compiled
    if compiled is not RemoteProtocolError:
        assert encode(compiled) == data  # type: ignore[arg-type]


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(min_size=1, max_size=128))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        msg = decode(data)
    except RemoteProtocolError:
        return
    assert encode(msg) == data


# ---------------------------------------------------------------------------
# The fast DEVCALL codecs against the construct schema (the specification)
# ---------------------------------------------------------------------------

CALL_GOLDEN = [case for case in GOLDEN if isinstance(case[0], DevCall | DevCallReply)]


def _fast_encode(msg: DevCall | DevCallReply) -> bytes:
    if isinstance(msg, DevCall):
        return encode_devcall(msg.call_id, msg.handle, msg.func, msg.flags, msg.payload)
    return encode_devcall_reply(msg.call_id, msg.status, msg.payload)


def _encoded_or_error(encoder: object, msg: object) -> object:
    try:
        return encoder(msg)  # type: ignore[operator]
    except LocalProtocolError:
        return LocalProtocolError


@pytest.mark.parametrize("case", CALL_GOLDEN, ids=_ids)
def test_fast_call_codecs_match_the_schema_on_golden_vectors(
    case: tuple[DevCall | DevCallReply, str],
) -> None:
    msg, text = case
    data = _hex(text)
    assert _fast_encode(msg) == schema_encode(msg) == data
    assert decode(data) == schema_decode(data) == msg
    assert type(decode(data).payload) is bytes  # type: ignore[union-attr]


any_int = st.one_of(u32, s32, st.integers(-(1 << 40), 1 << 40))
call_payloads = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([MAX_CALL_PAYLOAD_BYTES, MAX_CALL_PAYLOAD_BYTES + 1]).map(bytes),
)
any_calls: st.SearchStrategy[DevCall | DevCallReply] = st.one_of(
    st.builds(DevCall, any_int, any_int, any_int, any_int, call_payloads),
    st.builds(DevCall, u32, u32, u32, st.sampled_from([0, 1, 2, 1 << 31]), call_payloads),
    st.builds(DevCallReply, any_int, any_int, call_payloads),
    st.builds(DevCallReply, u32, s32, call_payloads),
)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(any_calls)
def test_fast_call_encoders_match_the_schema(msg: DevCall | DevCallReply) -> None:
    expected = _encoded_or_error(schema_encode, msg)
    assert _encoded_or_error(_fast_encode, msg) == expected
    assert _encoded_or_error(encode, msg) == expected


@st.composite
def _call_bytes(draw: st.DrawFn) -> bytes:
    """DEVCALL/DEVCALL_REPLY bytes: valid, or with the length, flags or size disturbed."""
    tag = draw(st.sampled_from([Tag.DEVCALL, Tag.DEVCALL_REPLY]))
    head = 17 if tag is Tag.DEVCALL else 9  # bytes before payload_len
    body = bytearray(draw(st.binary(min_size=head - 1, max_size=head - 1)))
    if tag is Tag.DEVCALL and draw(st.booleans()):
        body[12:16] = draw(st.sampled_from([0, 1, 2, 3, 1 << 31])).to_bytes(4, "little")
    payload = draw(st.binary(max_size=40))
    length = draw(
        st.one_of(
            st.just(len(payload)),
            st.integers(0, 64),
            st.sampled_from([MAX_CALL_PAYLOAD_BYTES, MAX_CALL_PAYLOAD_BYTES + 1, 0xFFFFFFFF]),
        )
    )
    data = bytes([tag]) + bytes(body) + length.to_bytes(4, "little") + payload
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


def _decoded_or_error(decoder: object, data: bytes) -> object:
    try:
        return decoder(data)  # type: ignore[operator]
    except RemoteProtocolError:
        return RemoteProtocolError


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(_call_bytes(), fuzz_inputs))
def test_fast_call_decoder_accepts_exactly_what_the_schema_accepts(data: bytes) -> None:
    expected = _decoded_or_error(schema_decode, data)
    assert _decoded_or_error(decode, data) == expected
    assert _decoded_or_error(decode, memoryview(data)) == expected


def test_fast_call_decoder_on_a_full_payload() -> None:
    for msg in (
        DevCall(1, 2, 3, 1, bytes(range(256)) * (MAX_CALL_PAYLOAD_BYTES // 256)),
        DevCallReply(1, -5, bytes(MAX_CALL_PAYLOAD_BYTES)),
    ):
        data = schema_encode(msg)
        assert _fast_encode(msg) == data
        assert decode(data) == msg


# ---------------------------------------------------------------------------
# The fast WINDOW and SIGNAL codecs against the construct schema
# ---------------------------------------------------------------------------

FLOW_GOLDEN = [
    case
    for case in GOLDEN
    if isinstance(case[0], WindowUpdate | WindowBatch | SignalNotify | SignalState)
]


@pytest.mark.parametrize("case", FLOW_GOLDEN, ids=_ids)
def test_fast_flow_codecs_match_the_schema_on_golden_vectors(case: tuple[Message, str]) -> None:
    msg, text = case
    data = _hex(text)
    assert encode(msg) == schema_encode(msg) == data
    assert decode(data) == schema_decode(data) == msg
    assert decode(memoryview(data)) == msg
    if isinstance(msg, WindowUpdate):
        decoded = decode(memoryview(data))
        assert isinstance(decoded, WindowUpdate)
        assert all(type(span.data) is bytes for span in decoded.spans)


span_data = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([MAX_SPAN_BYTES, MAX_SPAN_BYTES + 1]).map(bytes),
    st.binary(min_size=1, max_size=40).map(bytearray),
    st.binary(min_size=1, max_size=40).map(memoryview),
)
any_flow: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        WindowUpdate,
        any_int,
        st.lists(st.builds(Span, any_int, span_data), max_size=MAX_SPANS + 1).map(tuple),
    ),
    st.builds(
        WindowUpdate,
        u32,
        st.lists(st.builds(Span, u32, span_data), min_size=1, max_size=MAX_SPANS).map(tuple),
        st.booleans(),
    ),
    _batches(st.lists(st.builds(Span, u32, span_data), max_size=3), 0, MAX_BATCH_UPDATES + 1),
    st.builds(SignalNotify, any_int),
    st.builds(SignalState, any_int, st.one_of(st.booleans(), st.integers(-2, 3)), any_int),
    st.builds(SignalState, u32, st.booleans(), u32),
)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(any_flow)
def test_fast_flow_encoders_match_the_schema(msg: Message) -> None:
    assert _encoded_or_error(encode, msg) == _encoded_or_error(schema_encode, msg)


@st.composite
def _flow_bytes(draw: st.DrawFn) -> bytes:
    """WINDOW/WINDOWS/SIGNAL/SIGNAL_STATE bytes: valid, or with counts, lengths or flags
    disturbed."""
    tag = draw(st.sampled_from([Tag.WINDOW, Tag.WINDOWS, Tag.SIGNAL, Tag.SIGNAL_STATE]))
    if tag is Tag.WINDOWS:
        count = draw(st.integers(0, MAX_BATCH_UPDATES + 1))
        bodies = [_window_bytes(draw)[1:] for _ in range(draw(st.integers(0, count + 1)))]
        data = bytes([tag, count]) + b"".join(bodies)
    elif tag is Tag.SIGNAL:
        data = bytes([tag]) + draw(st.binary(min_size=4, max_size=4))
    elif tag is Tag.SIGNAL_STATE:
        enabled = draw(st.sampled_from([0, 1, 2, 255]))
        data = bytes([tag]) + draw(st.binary(min_size=4, max_size=4)) + bytes([enabled])
        data += draw(st.binary(min_size=4, max_size=4))
    else:
        data = _window_bytes(draw)
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


def _window_bytes(draw: st.DrawFn) -> bytes:
    """One WINDOW message, valid or with its counts, lengths or flags disturbed."""
    spans = draw(st.lists(st.binary(min_size=0, max_size=12), max_size=MAX_SPANS + 1))
    count = draw(
        st.one_of(
            st.just(len(spans)),
            st.just(len(spans) | 0x80),
            st.sampled_from([len(spans) | 0x20, len(spans) | 0x40]),
            st.integers(0, 255),
        )
    )
    data = bytes([Tag.WINDOW]) + draw(st.binary(min_size=4, max_size=4)) + bytes([count])
    for span in spans:
        length = draw(
            st.one_of(
                st.just(len(span)),
                st.integers(0, 16),
                st.sampled_from([MAX_SPAN_BYTES, MAX_SPAN_BYTES + 1, 0xFFFF]),
            )
        )
        data += draw(st.binary(min_size=4, max_size=4)) + length.to_bytes(2, "little") + span
    return data


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(_flow_bytes(), fuzz_inputs))
def test_fast_flow_decoder_accepts_exactly_what_the_schema_accepts(data: bytes) -> None:
    expected = _decoded_or_error(schema_decode, data)
    assert _decoded_or_error(decode, data) == expected
    assert _decoded_or_error(decode, memoryview(data)) == expected


def test_fast_window_codec_on_full_spans() -> None:
    spans = tuple(Span(i * MAX_SPAN_BYTES, bytes([i]) * MAX_SPAN_BYTES) for i in range(MAX_SPANS))
    msg = WindowUpdate(0xFFFFFFFF, spans)
    data = schema_encode(msg)
    assert encode(msg) == data
    assert decode(data) == msg


def test_the_table_defines_every_message_once() -> None:
    assert [int(d.tag) for d in bus.MESSAGES] == sorted(int(t) for t in Tag)
    assert {d.cls for d in bus.MESSAGES} == set(typing.get_args(Message))
    assert len({d.cls for d in bus.MESSAGES}) == len(bus.MESSAGES)
    for d in bus.MESSAGES:
        assert isinstance(d.example, d.cls)
        assert decode(encode(d.example)) == d.example


@pytest.mark.parametrize("d", [d for d in bus.MESSAGES if d.fast_encode], ids=lambda d: d.name)
def test_every_fast_codec_of_the_table_equals_the_schema_on_its_example(d: MessageDef) -> None:
    assert d.fast_encode is not None and d.fast_decode is not None
    data = schema_encode(d.example)  # type: ignore[arg-type]
    assert d.fast_encode(d.example) == data
    assert d.fast_decode(data) == schema_decode(data) == d.example


def test_windows_of_joins_encoded_window_messages_as_they_are() -> None:
    updates = (
        WindowUpdate(5, (Span(0, bytes(114)),)),
        WindowUpdate(3, (Span(4, b"\x01\x02"), Span(4098, b"\x05")), more=True),
        WindowUpdate(3, (Span(9, b"z"),)),
    )
    joined = windows_of([encode(u) for u in updates])
    assert joined == encode(WindowBatch(updates)) == schema_encode(WindowBatch(updates))
    assert decode(joined) == WindowBatch(updates)


@pytest.mark.parametrize(
    "parts",
    [
        [encode(WindowUpdate(1, (Span(0, b"x"),)))],
        [encode(WindowUpdate(1, (Span(0, b"x"),)))] * (MAX_BATCH_UPDATES + 1),
        [encode(WindowUpdate(1, (Span(0, b"x"),))), encode(SignalNotify(1))],
    ],
    ids=["one", "too-many", "not-a-window"],
)
def test_windows_of_refuses_what_is_not_two_to_sixteen_window_messages(parts: list[bytes]) -> None:
    with pytest.raises(LocalProtocolError):
        windows_of(parts)
