"""ira.wire.virtio: golden vectors, truncation/junk, compiled parity, round trip and fuzz."""

from __future__ import annotations

import os
import struct
import typing
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.virtio.ring import DescFlags, Descriptor
from ira.wire import MessageSpec
from ira.wire import virtio as wire
from ira.wire.virtio import (
    EMPTY,
    EVENT_BYTES,
    REPLIES,
    REQUESTS,
    ConfigRead,
    ConfigReadReply,
    ConfigWrite,
    DeviceFeatures,
    DeviceStatus,
    DriverFeatures,
    EmptyReply,
    EventRecord,
    FeaturesReply,
    GenerationReply,
    GetGeneration,
    GetStatus,
    Message,
    QueueCount,
    QueueCountReply,
    QueueEnable,
    QueueMax,
    QueueMaxReply,
    QueueSet,
    Reply,
    Request,
    Reset,
    SetDriverFeatures,
    SetStatus,
    StatusReply,
    VirtioFunc,
    decode_event,
    decode_reply,
    decode_request,
    encode,
    make_addr,
    split_addr,
)

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
FUZZ_EXAMPLES = max(6000, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))
S = DeviceStatus
F = VirtioFunc

# Written out by hand from docs/PROTOCOL.md's layouts.
GOLDEN_REQUESTS: list[tuple[Request, str]] = [
    (DeviceFeatures(select=1), "01000000"),
    (DriverFeatures(select=0), "00000000"),
    (SetDriverFeatures(select=0, bits=0x30000000), "00000000 00000030"),
    (GetStatus(), ""),
    (SetStatus(status=0), "00"),
    (SetStatus(status=int(S.ACKNOWLEDGE | S.DRIVER)), "03"),
    (SetStatus(status=int(S.FAILED | S.DEVICE_NEEDS_RESET | 0x0F)), "cf"),
    (ConfigRead(offset=0, length=6), "00000000 06000000"),
    (ConfigWrite(offset=4, data=b"\x01\x00"), "04000000 0100"),
    (ConfigWrite(offset=0x01020304, data=b""), "04030201"),
    (GetGeneration(), ""),
    (QueueCount(), ""),
    (QueueMax(queue=0), "0000"),
    (
        QueueSet(
            queue=0,
            size=16,
            notify_window=3,
            desc=make_addr(3, 0),
            avail=make_addr(3, 256),
            used=make_addr(3, 296),
        ),
        "0000 1000 03000000 00000000 03000000 00010000 03000000 28010000 03000000",
    ),
    (QueueEnable(queue=0), "0000"),
    (QueueEnable(queue=0x0102), "0201"),
    (Reset(), ""),
]
GOLDEN_REPLIES: list[tuple[VirtioFunc, Reply, str]] = [
    (F.DEVICE_FEATURES, FeaturesReply(bits=1), "01000000"),
    (F.DRIVER_FEATURES, FeaturesReply(bits=0x30000000), "00000030"),
    (F.SET_DRIVER_FEATURES, EmptyReply(), ""),
    (F.STATUS, StatusReply(status=3), "03"),
    (F.SET_STATUS, StatusReply(status=int(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK)), "0b"),
    (
        F.CONFIG_READ,
        ConfigReadReply(generation=2, data=b"\x02\x00\x00\x00\x00\x01"),
        "02000000 020000000001",
    ),
    (F.CONFIG_READ, ConfigReadReply(generation=0xFFFFFFFF, data=b""), "ffffffff"),
    (F.CONFIG_WRITE, GenerationReply(generation=3), "03000000"),
    (F.GENERATION, GenerationReply(generation=3), "03000000"),
    (F.QUEUE_COUNT, QueueCountReply(count=2), "0200"),
    (F.QUEUE_MAX, QueueMaxReply(size=64), "4000"),
    (F.QUEUE_MAX, QueueMaxReply(size=0), "0000"),
    (F.QUEUE_SET, EmptyReply(), ""),
    (F.QUEUE_ENABLE, EmptyReply(), ""),
    (F.RESET, EmptyReply(), ""),
]
GOLDEN_EVENTS: list[tuple[EventRecord, str]] = [
    (EventRecord(generation=1, status=0x4F), "01000000 4f 000000"),
    (EventRecord(generation=0, status=0), "00000000 00 000000"),
]

#: the functions whose payload ends in data (a greedy field): junk after them is data
GREEDY_REQUESTS = {F.CONFIG_WRITE}
GREEDY_REPLIES = {F.CONFIG_READ}


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _request_id(case: tuple[Request, str]) -> str:
    return f"{case[0].func.name}-{case[1].replace(' ', '')[:16]}"


def _reply_id(case: tuple[VirtioFunc, Reply, str]) -> str:
    return f"{case[0].name}-{case[2].replace(' ', '')[:16]}"


# ---------------------------------------------------------------------------
# Golden vectors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN_REQUESTS, ids=_request_id)
def test_golden_requests(case: tuple[Request, str]) -> None:
    msg, text = case
    data = _hex(text)
    assert encode(msg) == data
    assert decode_request(msg.func, data) == msg
    assert decode_request(msg.func, data, compiled=False) == msg


@pytest.mark.parametrize("case", GOLDEN_REPLIES, ids=_reply_id)
def test_golden_replies(case: tuple[VirtioFunc, Reply, str]) -> None:
    func, msg, text = case
    data = _hex(text)
    assert encode(msg) == data
    assert decode_reply(func, data) == msg
    assert decode_reply(func, data, compiled=False) == msg


@pytest.mark.parametrize("case", GOLDEN_EVENTS, ids=lambda c: c[1])
def test_golden_event_records(case: tuple[EventRecord, str]) -> None:
    msg, text = case
    data = _hex(text)
    assert len(data) == EVENT_BYTES
    assert encode(msg) == data
    assert decode_event(data) == msg
    assert decode_event(data, compiled=False) == msg


def test_every_function_has_golden_vectors_both_ways() -> None:
    assert {m.func for m, _ in GOLDEN_REQUESTS} == set(VirtioFunc)
    assert {f for f, _, _ in GOLDEN_REPLIES} == set(VirtioFunc)
    assert set(REQUESTS) == set(REPLIES) == set(VirtioFunc)


def test_the_spec_documents_every_payload_that_is_not_empty() -> None:
    documented = {(m.tag, m.name) for m in wire.SPEC.messages}
    for func in VirtioFunc:
        assert ((func, func.name) in documented) == (REQUESTS[func] is not EMPTY)
        assert ((func, f"{func.name}_REPLY") in documented) == (REPLIES[func] is not EMPTY)
    assert (0, "EVENT_WINDOW") in documented
    tags = [m.tag for m in wire.SPEC.messages]
    assert tags == sorted(tags)


def _golden_bytes() -> list[tuple[object, bytes]]:
    return (
        [(m, _hex(t)) for m, t in GOLDEN_REQUESTS]
        + [(m, _hex(t)) for _, m, t in GOLDEN_REPLIES]
        + [(m, _hex(t)) for m, t in GOLDEN_EVENTS]
    )


@pytest.mark.parametrize("spec", wire.SPEC.messages, ids=lambda m: m.name)
def test_spec_examples_are_golden_vectors(spec: MessageSpec) -> None:
    data = encode(spec.example)  # type: ignore[arg-type]
    assert any(msg == spec.example and golden == data for msg, golden in _golden_bytes())
    # the documented schema parses what the codec writes
    spec.schema.parse(data)


def test_addresses_are_window_high_offset_low() -> None:
    addr = make_addr(3, 0x100)
    assert addr == 0x0000000300000100
    assert struct.pack("<Q", addr) == _hex("00010000 03000000")
    assert split_addr(addr) == (3, 0x100)
    assert split_addr(make_addr(0xFFFFFFFF, 0xFFFFFFFF)) == (0xFFFFFFFF, 0xFFFFFFFF)
    # a descriptor (virtio 1.2 §2.7.5): le64 addr, le32 len, le16 flags, le16 next
    desc = Descriptor(make_addr(7, 0x40), 64, int(DescFlags.WRITE | DescFlags.NEXT), 2)
    assert desc.encode() == _hex("40000000 07000000 40000000 0300 0200")
    for window, offset in ((-1, 0), (1 << 32, 0), (0, -1), (0, 1 << 32)):
        with pytest.raises(LocalProtocolError):
            make_addr(window, offset)


# ---------------------------------------------------------------------------
# What is refused
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN_REQUESTS, ids=_request_id)
def test_truncated_requests_are_rejected(case: tuple[Request, str]) -> None:
    msg, text = case
    data = _hex(text)
    fixed = len(data) - len(getattr(msg, "data", b""))
    for cut in range(fixed):
        for compiled in (True, False):
            with pytest.raises(RemoteProtocolError):
                decode_request(msg.func, data[:cut], compiled=compiled)


@pytest.mark.parametrize("case", GOLDEN_REPLIES, ids=_reply_id)
def test_truncated_replies_are_rejected(case: tuple[VirtioFunc, Reply, str]) -> None:
    func, msg, text = case
    data = _hex(text)
    fixed = len(data) - len(getattr(msg, "data", b""))
    for cut in range(fixed):
        for compiled in (True, False):
            with pytest.raises(RemoteProtocolError):
                decode_reply(func, data[:cut], compiled=compiled)


JUNK = [b"\x00", b"\xff", b"junk", bytes(64)]


@pytest.mark.parametrize("junk", JUNK)
def test_junk_after_a_payload_is_rejected_or_is_data(junk: bytes) -> None:
    for msg, text in GOLDEN_REQUESTS:
        data = _hex(text) + junk
        if msg.func in GREEDY_REQUESTS:
            assert isinstance(msg, ConfigWrite)
            assert decode_request(msg.func, data) == ConfigWrite(msg.offset, msg.data + junk)
            continue
        for compiled in (True, False):
            with pytest.raises(RemoteProtocolError):
                decode_request(msg.func, data, compiled=compiled)
    for func, reply, text in GOLDEN_REPLIES:
        data = _hex(text) + junk
        if func in GREEDY_REPLIES:
            assert isinstance(reply, ConfigReadReply)
            assert decode_reply(func, data).data == reply.data + junk  # type: ignore[union-attr]
            continue
        for compiled in (True, False):
            with pytest.raises(RemoteProtocolError):
                decode_reply(func, data, compiled=compiled)
    for _, text in GOLDEN_EVENTS:
        with pytest.raises(RemoteProtocolError):
            decode_event(_hex(text) + junk)


@pytest.mark.parametrize("status", [0x10, 0x20, 0x30, 0xFF])
def test_reserved_status_bits_are_rejected(status: int) -> None:
    byte = bytes([status])
    for decode in (
        lambda: decode_request(F.SET_STATUS, byte),
        lambda: decode_reply(F.SET_STATUS, byte),
        lambda: decode_reply(F.STATUS, byte),
        lambda: decode_event(b"\x00\x00\x00\x00" + byte + bytes(3)),
    ):
        with pytest.raises(RemoteProtocolError):
            decode()
    with pytest.raises(LocalProtocolError):
        encode(SetStatus(status))


@pytest.mark.parametrize("func", [0, 14, 99, -1, 1 << 32])
def test_unknown_functions_are_rejected(func: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(func, b"")
    with pytest.raises(RemoteProtocolError):
        decode_reply(func, b"")


@pytest.mark.parametrize(
    "msg",
    [
        DeviceFeatures(-1),
        DeviceFeatures(1 << 32),
        SetDriverFeatures(0, 1 << 32),
        SetStatus(256),
        ConfigRead(0, -1),
        QueueMax(1 << 16),
        QueueSet(0, 1 << 16, 0, 0, 0, 0),
        QueueSet(0, 1, 0, 1 << 64, 0, 0),
        StatusReply(0x10),
        QueueCountReply(-1),
        EventRecord(1 << 32, 0),
        EventRecord(0, 0x20),
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

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
statuses = st.integers(0, 0xFF).map(lambda s: s & ~0x30)

requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(DeviceFeatures, u32),
    st.builds(DriverFeatures, u32),
    st.builds(SetDriverFeatures, u32, u32),
    st.just(GetStatus()),
    st.builds(SetStatus, statuses),
    st.builds(ConfigRead, u32, u32),
    st.builds(ConfigWrite, u32, st.binary(max_size=64)),
    st.just(GetGeneration()),
    st.just(QueueCount()),
    st.builds(QueueMax, u16),
    st.builds(QueueSet, u16, u16, u32, u64, u64, u64),
    st.builds(QueueEnable, u16),
    st.just(Reset()),
)
replies: st.SearchStrategy[tuple[VirtioFunc, Reply]] = st.one_of(
    st.tuples(
        st.sampled_from([F.DEVICE_FEATURES, F.DRIVER_FEATURES]), st.builds(FeaturesReply, u32)
    ),
    st.tuples(st.sampled_from([F.STATUS, F.SET_STATUS]), st.builds(StatusReply, statuses)),
    st.tuples(st.just(F.CONFIG_READ), st.builds(ConfigReadReply, u32, st.binary(max_size=64))),
    st.tuples(st.sampled_from([F.CONFIG_WRITE, F.GENERATION]), st.builds(GenerationReply, u32)),
    st.tuples(st.just(F.QUEUE_COUNT), st.builds(QueueCountReply, u16)),
    st.tuples(st.just(F.QUEUE_MAX), st.builds(QueueMaxReply, u16)),
    st.tuples(
        st.sampled_from([F.SET_DRIVER_FEATURES, F.QUEUE_SET, F.QUEUE_ENABLE, F.RESET]),
        st.just(EmptyReply()),
    ),
)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(requests, replies, st.builds(EventRecord, u32, statuses))
def test_round_trip(request: Request, reply: tuple[VirtioFunc, Reply], event: EventRecord) -> None:
    data = encode(request)
    assert decode_request(request.func, data) == request
    assert decode_request(request.func, data, compiled=False) == request
    func, message = reply
    data = encode(message)
    assert decode_reply(func, data) == message
    assert decode_reply(func, data, compiled=False) == message
    assert decode_event(encode(event)) == event


def _outcome(decoder: Callable[[], object]) -> object:
    try:
        return decoder()
    except RemoteProtocolError:
        return RemoteProtocolError


funcs = st.one_of(st.sampled_from(list(VirtioFunc)), st.integers(-2, 300))


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(funcs, st.binary(max_size=48))
def test_fuzz_random_payloads_give_a_message_or_remote_protocol_error(
    func: int, data: bytes
) -> None:
    for decoder in (decode_request, decode_reply):
        compiled = _outcome(lambda: decoder(func, data))  # noqa: B023
        assert _outcome(lambda: decoder(func, data, compiled=False)) == compiled  # noqa: B023
        if compiled is RemoteProtocolError:
            continue
        assert func in set(VirtioFunc)
        assert encode(compiled) == data  # type: ignore[arg-type]
    event = _outcome(lambda: decode_event(data))
    assert _outcome(lambda: decode_event(data, compiled=False)) == event
    if event is not RemoteProtocolError:
        assert isinstance(event, EventRecord) and len(data) == EVENT_BYTES
        assert decode_event(encode(event)) == event


def test_the_function_table_defines_every_function_once() -> None:
    assert [d.func for d in wire.FUNCTIONS] == list(VirtioFunc)
    for d in wire.FUNCTIONS:
        assert d.request.func is d.func
        assert (d.request_example is None) == (d.request_schema is EMPTY)
        assert (d.reply_example is None) == (d.reply_schema is EMPTY)
        if d.request_example is not None:
            assert isinstance(d.request_example, d.request)
            assert decode_request(d.func, encode(d.request_example)) == d.request_example
        if d.reply_example is not None:
            assert isinstance(d.reply_example, d.reply)
            assert decode_reply(d.func, encode(d.reply_example)) == d.reply_example
    assert {d.request for d in wire.FUNCTIONS} == set(typing.get_args(Request))
    assert {d.reply for d in wire.FUNCTIONS} == set(typing.get_args(Reply))
