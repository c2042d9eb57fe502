"""Bus messages: the fast codecs of DEVCALL and DEVCALL_REPLY (the per-call hot path),
and what a receiver needs to answer a request it could not decode.

Precompiled ``struct`` codecs equal to the construct schemas of ``ira.wire.busschema``
byte for byte (tests/wire/test_bus_messages.py holds them to it); ``ira.wire.bus``
dispatches to them from ``encode`` and ``decode``.
"""

from __future__ import annotations

import struct

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire.busdefs import (
    CALL_FLAGS_RESERVED,
    MAX_CALL_PAYLOAD_BYTES,
    CallFlags,
    DevCall,
    DevCallReply,
    DevOpenReply,
    Message,
    ShmAttachReply,
    ShmDetachReply,
    Tag,
    why,
)

#: DEVCALL up to its payload: tag, call_id, handle, func, flags, payload_len
_DEVCALL_HEAD = struct.Struct("<BIIIII")
#: DEVCALL_REPLY up to its payload: tag, call_id, status, payload_len
_DEVCALL_REPLY_HEAD = struct.Struct("<BIiI")
_DEVCALL_TAG = int(Tag.DEVCALL)
_DEVCALL_REPLY_TAG = int(Tag.DEVCALL_REPLY)


#: requests and replies that open with a call_id (after the tag), and the reply that
#: answers each request
REPLY_OF = {
    Tag.DEVOPEN: Tag.DEVOPEN_REPLY,
    Tag.DEVCALL: Tag.DEVCALL_REPLY,
    Tag.SHM_ATTACH: Tag.SHM_ATTACH_REPLY,
    Tag.SHM_DETACH: Tag.SHM_DETACH_REPLY,
}
_WITH_CALL_ID = frozenset(int(t) for t in (*REPLY_OF, *REPLY_OF.values()))
_CALL_HEAD = struct.Struct("<BI")
#: DEVCALL's flags, after tag, call_id, handle and func
_DEVCALL_FLAGS_AT = 13


def call_of(data: bytes) -> tuple[Tag, int, bool] | None:
    """For a message that could not be decoded: its tag, its call_id and whether a reply
    is wanted, when it is a request or reply long enough to carry them; else None.

    A receiver answers a malformed request with its reply and ``Status.EBADMSG``
    (no reply for a DEVCALL whose readable flags say NO_REPLY), and fails the
    pending request a malformed reply answers, rather than let the caller wait."""
    if len(data) < _CALL_HEAD.size or data[0] not in _WITH_CALL_ID:
        return None
    tag, call_id = _CALL_HEAD.unpack_from(data)
    wanted = True
    if tag == Tag.DEVCALL and len(data) >= _DEVCALL_FLAGS_AT + 4:
        flags = int.from_bytes(data[_DEVCALL_FLAGS_AT : _DEVCALL_FLAGS_AT + 4], "little")
        wanted = not flags & CallFlags.NO_REPLY
    return Tag(tag), call_id, wanted


def error_reply(tag: Tag, call_id: int, status: int) -> Message | None:
    """The reply to a request of ``tag`` that carries only ``status`` (a handle or signal
    of 0, an empty payload), or None when ``tag`` is not a request."""
    match tag:
        case Tag.DEVOPEN:
            return DevOpenReply(call_id, status, 0)
        case Tag.DEVCALL:
            return DevCallReply(call_id, status, b"")
        case Tag.SHM_ATTACH:
            return ShmAttachReply(call_id, status, 0)
        case Tag.SHM_DETACH:
            return ShmDetachReply(call_id, status)
    return None


def encode_devcall(call_id: int, handle: int, func: int, flags: int, payload: bytes) -> bytes:
    """DEVCALL's bytes, as ``encode(DevCall(...))`` gives them, without building the message."""
    try:
        length = len(payload)
        head = _DEVCALL_HEAD.pack(_DEVCALL_TAG, call_id, handle, func, flags, length)
        data = head + payload
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode DEVCALL: {why(exc)}") from exc
    if flags & CALL_FLAGS_RESERVED:
        raise LocalProtocolError(f"cannot encode DEVCALL: reserved flag bits in {flags:#x}")
    if length > MAX_CALL_PAYLOAD_BYTES:
        raise LocalProtocolError(
            f"cannot encode DEVCALL: payload of {length} bytes exceeds {MAX_CALL_PAYLOAD_BYTES}"
        )
    return data


def encode_devcall_reply(call_id: int, status: int, payload: bytes) -> bytes:
    """DEVCALL_REPLY's bytes, as ``encode(DevCallReply(...))`` gives them."""
    try:
        length = len(payload)
        data = _DEVCALL_REPLY_HEAD.pack(_DEVCALL_REPLY_TAG, call_id, status, length) + payload
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode DEVCALL_REPLY: {why(exc)}") from exc
    if length > MAX_CALL_PAYLOAD_BYTES:
        raise LocalProtocolError(
            f"cannot encode DEVCALL_REPLY: payload of {length} bytes exceeds "
            f"{MAX_CALL_PAYLOAD_BYTES}"
        )
    return data


def decode_devcall(data: bytes) -> DevCall:
    end = _DEVCALL_HEAD.size
    if len(data) < end:
        raise RemoteProtocolError(f"malformed bus message: DEVCALL of {len(data)} bytes")
    _, call_id, handle, func, flags, length = _DEVCALL_HEAD.unpack_from(data)
    if flags & CALL_FLAGS_RESERVED:
        raise RemoteProtocolError(f"malformed bus message: DEVCALL flags {flags:#x}")
    if length > MAX_CALL_PAYLOAD_BYTES or len(data) != end + length:
        raise RemoteProtocolError(
            f"malformed bus message: DEVCALL of {len(data)} bytes with a {length}-byte payload"
        )
    return DevCall(call_id, handle, func, flags, bytes(data[end:]))


def decode_devcall_reply(data: bytes) -> DevCallReply:
    end = _DEVCALL_REPLY_HEAD.size
    if len(data) < end:
        raise RemoteProtocolError(f"malformed bus message: DEVCALL_REPLY of {len(data)} bytes")
    _, call_id, status, length = _DEVCALL_REPLY_HEAD.unpack_from(data)
    if length > MAX_CALL_PAYLOAD_BYTES or len(data) != end + length:
        raise RemoteProtocolError(
            f"malformed bus message: DEVCALL_REPLY of {len(data)} bytes "
            f"with a {length}-byte payload"
        )
    return DevCallReply(call_id, status, bytes(data[end:]))


def encode_devcall_msg(msg: DevCall) -> bytes:
    return encode_devcall(msg.call_id, msg.handle, msg.func, msg.flags, msg.payload)


def encode_devcall_reply_msg(msg: DevCallReply) -> bytes:
    return encode_devcall_reply(msg.call_id, msg.status, msg.payload)
