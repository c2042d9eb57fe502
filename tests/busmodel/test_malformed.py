"""Malformed requests and replies: answered or failed at once with EBADMSG, never left
to a timeout."""

from __future__ import annotations

import struct

import pytest
from busharness import Pair

from ira.busmodel import Connector
from ira.busmodel.devices import CountingDevice, Echo
from ira.busmodel.events import CallFailed
from ira.errors import DevcallError
from ira.link.events import Channel, MessageReceived
from ira.wire.bus import (
    MAX_CALL_PAYLOAD_BYTES,
    DevCallReply,
    DevOpen,
    DevOpenReply,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    Status,
    Tag,
    decode,
    encode,
    encode_devcall,
)


def registered() -> Pair:
    board = Connector()
    board.add_device(Echo(), now=0.0)
    board.add_device(CountingDevice(), now=0.0)
    pair = Pair(board)
    pair.start()
    return pair


def to_board(pair: Pair, data: bytes) -> list[object]:
    pair.board.handle_link_event(MessageReceived(Channel.CONTROL, data), now=0.0)
    return [decode(reply) for _, reply in pair.board.messages_to_send()]


def oversize_devcall(call_id: int, flags: int = 0) -> bytes:
    payload = bytes(MAX_CALL_PAYLOAD_BYTES + 1)
    head = struct.pack("<BIIIII", Tag.DEVCALL, call_id, 1, 0, flags, len(payload))
    return head + payload


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (oversize_devcall(7), DevCallReply(7, Status.EBADMSG, b"")),
        (encode_devcall(8, 1, 0, 0, b"ab") + b"\x00", DevCallReply(8, Status.EBADMSG, b"")),
        (encode(DevOpen(9, 1, 1)) + b"\x00", DevOpenReply(9, Status.EBADMSG, 0)),
        (encode(DevOpen(10, 1, 1))[:-1], DevOpenReply(10, Status.EBADMSG, 0)),
        (
            encode(ShmAttach(11, 1, 0, 5, 64, 0, 64, 0)) + b"\x00",
            ShmAttachReply(11, Status.EBADMSG, 0),
        ),
        (encode(ShmDetach(12, 1, 5)) + b"\x00", ShmDetachReply(12, Status.EBADMSG)),
    ],
    ids=["payload over 65536", "DEVCALL trailing byte", "DEVOPEN trailing byte",
         "DEVOPEN truncated", "SHM_ATTACH trailing byte", "SHM_DETACH trailing byte"],
)  # fmt: skip
def test_a_malformed_request_gets_its_reply_with_ebadmsg(
    request_bytes: bytes, reply: object
) -> None:
    pair = registered()
    assert to_board(pair, request_bytes) == [reply]
    assert pair.board.statistics().as_dict()["refused_malformed"] == 1


def test_a_malformed_call_that_wants_no_reply_gets_none() -> None:
    pair = registered()
    assert to_board(pair, oversize_devcall(7, flags=1)) == []
    assert pair.board.statistics().as_dict()["refused_malformed"] == 1


@pytest.mark.parametrize("data", [b"", b"\x30\x01", bytes([Tag.WINDOW]) + bytes(3), b"\xee" * 9])
def test_what_carries_no_readable_call_id_is_counted_and_dropped(data: bytes) -> None:
    pair = registered()
    assert to_board(pair, data) == []
    assert pair.board.statistics().as_dict()["refused_malformed"] == 1


def test_a_malformed_reply_fails_its_call_at_once() -> None:
    pair = registered()
    handle = pair.open(pair.device_id("echo"))
    call_id = pair.host.call(handle, 0, b"ping", now=pair.now)
    pair.host.messages_to_send()  # the call is "on the wire"; its reply comes back broken
    broken = encode(DevCallReply(call_id, 0, b"pong")) + b"\x00"
    pair.host.handle_link_event(MessageReceived(Channel.CONTROL, broken), now=pair.now)
    (failed,) = [ev for ev in iter(pair.host.next_event, None) if isinstance(ev, CallFailed)]
    assert failed.call_id == call_id
    assert isinstance(failed.error, DevcallError) and failed.error.status == Status.EBADMSG
    assert pair.host.statistics().as_dict()["pending_requests"] == 0
