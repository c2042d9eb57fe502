"""Bus messages: the verbs of the virtual bus carried over a link.

Every message is one link message: a tag byte (``Tag``) followed by the body
of that message, little-endian, nothing after it.  ``decode`` turns bytes into
one of the frozen dataclasses below (or raises ``RemoteProtocolError``);
``encode`` does the reverse (or raises ``LocalProtocolError``).

Each message is defined once, by its entry in ``MESSAGES`` (tag, dataclass,
schema, direction, channel, meaning, example, and the fast codecs where there
are some); the switch of ``MESSAGE``, the class lookups, the fast-codec dispatch
and docs/PROTOCOL.md are derived from that table.  The construct schemas are
the specification.  DEVCALL and DEVCALL_REPLY, which every call carries,
and WINDOW, SIGNAL and SIGNAL_STATE, which every frame of a virtqueue
carries, are encoded and decoded on the hot path by precompiled ``struct``
codecs (``encode_devcall``, ``encode_devcall_reply`` and the fast branches of
``encode`` and ``decode``); tests/wire/test_bus_messages.py holds them to the
schemas byte for byte, on golden vectors and generated inputs
(``schema_encode``, ``schema_decode``).

What the wire rejects and what it leaves to the bus model: the decoder rejects
whatever it cannot represent or that would cost memory to parse (unknown tags,
unknown flag bits, lengths over the limits below, truncated or trailing
bytes, invalid UTF-8).  Well-formed messages with wrong *meaning* (a device id
that does not exist, an offset outside a window) are the bus model's business:
it answers them with a negative status and counts them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from construct import (
    Array,
    Bytes,
    Check,
    Const,
    ConstructError,
    Error,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Rebuild,
    Struct,
    Switch,
    Terminated,
    len_,
    this,
)

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import Limit, MessageDef, MessageSpec, StatusCode, WireSpec
from ira.wire.busdefs import (
    BUS_MAGIC,
    BUS_VERSION_FLUSH_ENDS,
    BUS_VERSION_LIMITS,
    BUS_VERSION_MAX,
    BUS_VERSION_MIN,
    BUS_VERSION_WINDOWS,
    CALL_FLAGS_RESERVED,
    DEFAULT_MAX_DEVICES,
    MAX_ATTR_KEY_BYTES,
    MAX_ATTR_VALUE_BYTES,
    MAX_ATTRS,
    MAX_BATCH_UPDATES,
    MAX_CALL_PAYLOAD_BYTES,
    MAX_HOST_DEVICES,
    MAX_SPAN_BYTES,
    MAX_SPANS,
    MAX_TYPE_BYTES,
    MAX_WINDOW_BYTES,
    SHM_FLAGS_RESERVED,
    SPAN_HEADER_BYTES,
    STATUS_MEANINGS,
    WINDOW_COUNT_MASK,
    WINDOW_HEAD_RESERVED,
    WINDOW_MORE,
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
    Status,
    Tag,
    WindowBatch,
    WindowUpdate,
)

#: the names of the bus protocol, its definitions (``ira.wire.busdefs``) re-exported
__all__ = [
    "ATTRIBUTE",
    "BUS_HELLO",
    "BUS_LIMITS",
    "BUS_MAGIC",
    "BUS_SYNCED",
    "BUS_VERSION_FLUSH_ENDS",
    "BUS_VERSION_LIMITS",
    "BUS_VERSION_MAX",
    "BUS_VERSION_MIN",
    "BUS_VERSION_WINDOWS",
    "BUS_WELCOME",
    "CALL_FLAGS_RESERVED",
    "DEFAULT_MAX_DEVICES",
    "DEVADD",
    "DEVCALL",
    "DEVCALL_REPLY",
    "DEVCLOSE",
    "DEVDROP",
    "DEVOPEN",
    "DEVOPEN_REPLY",
    "MAX_ATTRS",
    "MAX_ATTR_KEY_BYTES",
    "MAX_ATTR_VALUE_BYTES",
    "MAX_BATCH_UPDATES",
    "MAX_CALL_PAYLOAD_BYTES",
    "MAX_HOST_DEVICES",
    "MAX_SPANS",
    "MAX_SPAN_BYTES",
    "MAX_TYPE_BYTES",
    "MAX_WINDOW_BYTES",
    "MESSAGE",
    "MESSAGES",
    "MESSAGE_COMPILED",
    "REPLY_OF",
    "SHM_ATTACH",
    "SHM_ATTACH_REPLY",
    "SHM_DETACH",
    "SHM_DETACH_REPLY",
    "SHM_FLAGS_RESERVED",
    "SIGNAL",
    "SIGNAL_STATE",
    "SPAN",
    "SPAN_HEADER_BYTES",
    "SPEC",
    "STATUS_MEANINGS",
    "WINDOW",
    "WINDOWS",
    "WINDOW_COUNT_MASK",
    "WINDOW_HEAD_RESERVED",
    "WINDOW_MORE",
    "Attribute",
    "BusHello",
    "BusLimits",
    "BusSynced",
    "BusWelcome",
    "CallFlags",
    "DevAdd",
    "DevCall",
    "DevCallReply",
    "DevClose",
    "DevDrop",
    "DevOpen",
    "DevOpenReply",
    "Message",
    "ShmAttach",
    "ShmAttachReply",
    "ShmDetach",
    "ShmDetachReply",
    "ShmFlags",
    "SignalNotify",
    "SignalState",
    "Span",
    "Status",
    "Tag",
    "WindowBatch",
    "WindowUpdate",
    "call_of",
    "decode",
    "decode_uncompiled",
    "encode",
    "encode_devcall",
    "encode_devcall_reply",
    "error_reply",
    "schema_decode",
    "schema_encode",
    "tag_of",
    "windows_of",
]

# ---------------------------------------------------------------------------
# Schemas (bodies, after the tag byte)
# ---------------------------------------------------------------------------

_CALL_ID = "call_id" / Int32ul * "request id chosen by the host, echoed in the reply"
_STATUS = "status" / Int32sl * "0/positive: success; negative: an error status (see Statuses)"
_HANDLE = "handle" / Int32ul * "an open handle issued by DEVOPEN_REPLY in this container"
_WINDOW = "window" / Int32ul * "window id chosen by the host, unique on this link"
_SIGNAL = "signal" / Int32ul * "signal handle issued by SHM_ATTACH_REPLY in this container"

BUS_HELLO = Struct(
    "magic" / Const(BUS_MAGIC) * 'the ASCII bytes "IRAB"',
    "version_min" / Int16ul * "lowest bus protocol version the host speaks",
    "version_max" / Int16ul * "highest bus protocol version the host speaks",
    Check(this.version_min <= this.version_max),
)
BUS_WELCOME = Struct(
    _STATUS,
    "version" / Int16ul * "the chosen bus version (the highest both speak); 0 when refused",
    "max_call_payload_bytes" / Int32ul * "largest DEVCALL payload the container accepts",
    "max_handles" / Int16ul * "most open handles in the container",
    "max_windows" / Int16ul * "most attached windows in the container",
    "max_window_bytes" / Int32ul * "largest single window",
    "max_total_window_bytes" / Int32ul * "largest sum of window sizes in the container",
)
BUS_SYNCED = Struct(
    "device_count" / Int32ul * "number of DEVADD messages the replay sent",
)
BUS_LIMITS = Struct(
    "max_devices" / Int16ul * "most devices the host keeps for this link, 1..MAX_HOST_DEVICES",
    Check(this.max_devices >= 1),
)
ATTRIBUTE = Struct(
    "key_len" / Rebuild(Int8ul, len_(this.key)) * "key length, at most MAX_ATTR_KEY_BYTES",
    Check(this.key_len <= MAX_ATTR_KEY_BYTES),
    "key" / Bytes(this.key_len) * "attribute name, UTF-8",
    Check(len_(this.key) == this.key_len),
    "value_len" / Rebuild(Int16ul, len_(this.value)) * "value length, at most MAX_ATTR_VALUE_BYTES",
    Check(this.value_len <= MAX_ATTR_VALUE_BYTES),
    "value" / Bytes(this.value_len) * "attribute value, UTF-8",
    Check(len_(this.value) == this.value_len),
)
DEVADD = Struct(
    "device_id" / Int32ul * "device id, from the container's counter, never reused",
    "version" / Int32ul * "the device's ABI version",
    "type_len" / Rebuild(Int8ul, len_(this.type)) * "type length, 1..MAX_TYPE_BYTES",
    Check(this.type_len >= 1),
    Check(this.type_len <= MAX_TYPE_BYTES),
    "type" / Bytes(this.type_len) * "device type string (drivers bind by exact match), UTF-8",
    Check(len_(this.type) == this.type_len),
    "attr_count" / Rebuild(Int8ul, len_(this.attrs)) * "number of attributes, at most MAX_ATTRS",
    Check(this.attr_count <= MAX_ATTRS),
    "attrs" / Array(this.attr_count, ATTRIBUTE) * "attributes: key/value pairs, see ATTRIBUTE",
)
DEVDROP = Struct(
    "device_id" / Int32ul * "the device that is gone",
)
DEVOPEN = Struct(
    _CALL_ID,
    "device_id" / Int32ul * "device id from DEVADD",
    "version" / Int32ul * "the ABI version the host's driver speaks",
)
DEVOPEN_REPLY = Struct(
    _CALL_ID,
    _STATUS,
    "handle" / Int32ul * "opaque handle for DEVCALL/SHM/DEVCLOSE; 0 when status < 0",
)
DEVCLOSE = Struct(
    _HANDLE,
)
DEVCALL = Struct(
    _CALL_ID,
    _HANDLE,
    "func" / Int32ul * "device-defined function number",
    "flags" / Int32ul * "CallFlags: bit 0 NO_REPLY; other bits must be 0",
    Check((this.flags & CALL_FLAGS_RESERVED) == 0),
    "payload_len" / Rebuild(Int32ul, len_(this.payload)) * "at most MAX_CALL_PAYLOAD_BYTES",
    Check(this.payload_len <= MAX_CALL_PAYLOAD_BYTES),
    "payload" / Bytes(this.payload_len) * "argument bytes, device-defined",
    Check(len_(this.payload) == this.payload_len),
)
DEVCALL_REPLY = Struct(
    _CALL_ID,
    _STATUS,
    "payload_len" / Rebuild(Int32ul, len_(this.payload)) * "at most MAX_CALL_PAYLOAD_BYTES",
    Check(this.payload_len <= MAX_CALL_PAYLOAD_BYTES),
    "payload" / Bytes(this.payload_len) * "result bytes, device-defined",
    Check(len_(this.payload) == this.payload_len),
)
SHM_ATTACH = Struct(
    _CALL_ID,
    _HANDLE,
    "shm_id" / Int32ul * "device-defined queue/region number",
    _WINDOW,
    "size_bytes" / Int32ul * "window size, 1..max_window_bytes",
    "device_offset" / Int32ul * "start of the range the device (board) writes",
    "device_length" / Int32ul * "length of that range; the host writes all other bytes",
    "flags" / Int32ul * "ShmFlags: bit 0 SIGNAL; other bits must be 0",
    Check((this.flags & SHM_FLAGS_RESERVED) == 0),
)
SHM_ATTACH_REPLY = Struct(
    _CALL_ID,
    _STATUS,
    "signal" / Int32ul * "signal handle when SIGNAL was asked for and status >= 0, else 0",
)
SHM_DETACH = Struct(
    _CALL_ID,
    _HANDLE,
    _WINDOW,
)
SHM_DETACH_REPLY = Struct(
    _CALL_ID,
    _STATUS,
)
SPAN = Struct(
    "offset" / Int32ul * "byte offset in the window",
    "length" / Rebuild(Int16ul, len_(this.data)) * "span length, 1..MAX_SPAN_BYTES",
    Check(this.length >= 1),
    Check(this.length <= MAX_SPAN_BYTES),
    "data" / Bytes(this.length) * "the bytes now at [offset, offset+length)",
    Check(len_(this.data) == this.length),
)
WINDOW = Struct(
    _WINDOW,
    "head"
    / Rebuild(Int8ul, len_(this.spans) | (this.more << 7))
    * "bits 0-4: number of spans, 1..MAX_SPANS; bit 7: MORE, more WINDOW messages of this "
    "flush follow (bus v2 only; 0 in v1); bits 5-6 must be 0",
    Check((this.head & WINDOW_COUNT_MASK) >= 1),
    Check((this.head & WINDOW_COUNT_MASK) <= MAX_SPANS),
    Check((this.head & WINDOW_HEAD_RESERVED) == 0),
    "spans"
    / Array(this.head & WINDOW_COUNT_MASK, SPAN)
    * "absolute contents, applied in order, see SPAN",
)
WINDOWS = Struct(
    "count"
    / Rebuild(Int8ul, len_(this.updates))
    * "number of window updates, 2..MAX_BATCH_UPDATES",
    Check(this.count >= 2),
    Check(this.count <= MAX_BATCH_UPDATES),
    "updates"
    / Array(this.count, WINDOW)
    * "each a WINDOW message's body (window, head, spans), applied in order",
)
SIGNAL = Struct(
    _SIGNAL,
)
SIGNAL_STATE = Struct(
    _SIGNAL,
    "enabled" / Int8ul * "1 if the receiver has notifications enabled, else 0",
    Check(this.enabled <= 1),
    "signals_seen" / Int32ul * "SIGNALs received on this signal so far (mod 2**32)",
)

# Exceptions the (compiled) parser and builder raise on bad input.  The
# compiled code reports short reads through ``struct.error`` rather than
# ``StreamError``; UTF-8 errors come from our own conversion.
_PARSE_ERRORS = (ConstructError, struct.error, UnicodeDecodeError)
_BUILD_ERRORS = (ConstructError, struct.error, UnicodeEncodeError, KeyError, TypeError)


def _to_body(msg: Message) -> dict[str, Any]:
    match msg:
        case DevAdd():
            return {
                "device_id": msg.device_id,
                "version": msg.version,
                "type": msg.type.encode(),
                "attrs": [{"key": a.key.encode(), "value": a.value.encode()} for a in msg.attrs],
            }
        case WindowUpdate():
            return {
                "window": msg.window,
                "more": int(bool(msg.more)),
                "spans": [{"offset": s.offset, "data": bytes(s.data)} for s in msg.spans],
            }
        case WindowBatch():
            return {"updates": [_to_body(update) for update in msg.updates]}
        case SignalState():
            return {
                "signal": msg.signal,
                "enabled": int(msg.enabled),
                "signals_seen": msg.signals_seen,
            }
        case _:
            return {name: getattr(msg, name) for name in _FIELDS[type(msg)]}


def _from_body(tag: Tag, body: Any) -> Message:
    match tag:
        case Tag.DEVADD:
            return DevAdd(
                device_id=body.device_id,
                version=body.version,
                type=body.type.decode(),
                attrs=tuple(Attribute(a.key.decode(), a.value.decode()) for a in body.attrs),
            )
        case Tag.WINDOW:
            return _window_from_body(body)
        case Tag.WINDOWS:
            return WindowBatch(
                tuple(_window_from_body(update) for update in body.updates),
            )
        case Tag.SIGNAL_STATE:
            return SignalState(
                signal=body.signal, enabled=bool(body.enabled), signals_seen=body.signals_seen
            )
        case _:
            cls = _BY_TAG[tag].cls
            result: Message = cls(**{name: body[name] for name in _FIELDS[cls]})
            return result


def _window_from_body(body: Any) -> WindowUpdate:
    return WindowUpdate(
        window=body.window,
        spans=tuple(Span(s.offset, s.data) for s in body.spans),
        more=bool(body.head & WINDOW_MORE),
    )


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def schema_encode(msg: Message) -> bytes:
    """Encode through the (compiled) construct schema: the reference for the fast codecs."""
    tag = _TAGS.get(type(msg))
    if tag is None:
        raise LocalProtocolError(f"not a bus message: {type(msg).__name__}")
    try:
        data: bytes = MESSAGE_COMPILED.build({"tag": int(tag), "body": _to_body(msg)})
    except _BUILD_ERRORS as exc:
        raise LocalProtocolError(f"cannot encode {tag.name}: {_why(exc)}") from exc
    return data


def schema_decode(data: bytes) -> Message:
    """Decode through the (compiled) construct schema: the reference for the fast codecs."""
    try:
        parsed = MESSAGE_COMPILED.parse(data)
        return _from_body(Tag(parsed.tag), parsed.body)
    except _PARSE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed bus message: {_why(exc)}") from exc


# ---------------------------------------------------------------------------
# Fast codecs: DEVCALL and DEVCALL_REPLY (the per-call hot path)
# ---------------------------------------------------------------------------

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


def tag_of(msg: Message) -> Tag:
    """The tag of a message."""
    return _TAGS[type(msg)]


def encode_devcall(call_id: int, handle: int, func: int, flags: int, payload: bytes) -> bytes:
    """DEVCALL's bytes, as ``encode(DevCall(...))`` gives them, without building the message."""
    try:
        length = len(payload)
        head = _DEVCALL_HEAD.pack(_DEVCALL_TAG, call_id, handle, func, flags, length)
        data = head + payload
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode DEVCALL: {_why(exc)}") from exc
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
        raise LocalProtocolError(f"cannot encode DEVCALL_REPLY: {_why(exc)}") from exc
    if length > MAX_CALL_PAYLOAD_BYTES:
        raise LocalProtocolError(
            f"cannot encode DEVCALL_REPLY: payload of {length} bytes exceeds "
            f"{MAX_CALL_PAYLOAD_BYTES}"
        )
    return data


def _decode_devcall(data: bytes) -> DevCall:
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


def _decode_devcall_reply(data: bytes) -> DevCallReply:
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


# ---------------------------------------------------------------------------
# Fast codecs: WINDOW, SIGNAL and SIGNAL_STATE (the per-frame hot path)
# ---------------------------------------------------------------------------

#: WINDOW up to its first span: tag, window, head (span count and MORE)
_WINDOW_HEAD = struct.Struct("<BIB")
#: a span up to its data: offset, length
_SPAN_HEAD = struct.Struct("<IH")
_SIGNAL_MSG = struct.Struct("<BI")
_SIGNAL_STATE_MSG = struct.Struct("<BIBI")
_WINDOW_TAG = int(Tag.WINDOW)
_WINDOW_TAG_BYTE = bytes([_WINDOW_TAG])
_SIGNAL_TAG = int(Tag.SIGNAL)
_SIGNAL_STATE_TAG = int(Tag.SIGNAL_STATE)


def _encode_window(msg: WindowUpdate) -> bytes:
    spans = msg.spans
    try:
        count = len(spans)
        if not 1 <= count <= MAX_SPANS:
            raise LocalProtocolError(f"cannot encode WINDOW: {count} spans, not 1..{MAX_SPANS}")
        head = count | WINDOW_MORE if msg.more else count
        parts = [_WINDOW_HEAD.pack(_WINDOW_TAG, msg.window, head)]
        for span in spans:
            data = span.data
            length = len(data)
            if not 1 <= length <= MAX_SPAN_BYTES:
                raise LocalProtocolError(
                    f"cannot encode WINDOW: a span of {length} bytes, not 1..{MAX_SPAN_BYTES}"
                )
            parts.append(_SPAN_HEAD.pack(span.offset, length))
            parts.append(data)
        return b"".join(parts)
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode WINDOW: {_why(exc)}") from exc


_WINDOWS_HEAD = struct.Struct("<BB")
_WINDOWS_TAG = int(Tag.WINDOWS)


def _encode_windows(msg: WindowBatch) -> bytes:
    updates = msg.updates
    try:
        count = len(updates)
        if not 2 <= count <= MAX_BATCH_UPDATES:
            raise LocalProtocolError(
                f"cannot encode WINDOWS: {count} updates, not 2..{MAX_BATCH_UPDATES}"
            )
        bodies = [_encode_window(update)[1:] for update in updates]
    except TypeError as exc:
        raise LocalProtocolError(f"cannot encode WINDOWS: {_why(exc)}") from exc
    return _WINDOWS_HEAD.pack(_WINDOWS_TAG, count) + b"".join(bodies)


def windows_of(encoded: list[bytes]) -> bytes:
    """One WINDOWS message made of 2..``MAX_BATCH_UPDATES`` encoded WINDOW messages (their
    bodies follow one another as they are: no decoding, no re-encoding)."""
    count = len(encoded)
    if not 2 <= count <= MAX_BATCH_UPDATES or any(m[:1] != _WINDOW_TAG_BYTE for m in encoded):
        raise LocalProtocolError(f"cannot make WINDOWS of {count} messages")
    return b"".join([_WINDOWS_HEAD.pack(_WINDOWS_TAG, count), *(m[1:] for m in encoded)])


def _encode_signal_state(msg: SignalState) -> bytes:
    try:
        enabled = int(msg.enabled)
        data = _SIGNAL_STATE_MSG.pack(_SIGNAL_STATE_TAG, msg.signal, enabled, msg.signals_seen)
    except (struct.error, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode SIGNAL_STATE: {_why(exc)}") from exc
    if enabled > 1:
        raise LocalProtocolError(f"cannot encode SIGNAL_STATE: enabled is {enabled}, not 0 or 1")
    return data


def _decode_window(data: bytes) -> WindowUpdate:
    update, at = _decode_window_at(data, 0, len(data))
    if at != len(data):
        raise RemoteProtocolError(f"malformed bus message: {len(data) - at} bytes after WINDOW")
    return update


def _decode_windows(data: bytes) -> WindowBatch:
    size = len(data)
    if size < _WINDOWS_HEAD.size:
        raise RemoteProtocolError(f"malformed bus message: WINDOWS of {size} bytes")
    count = data[1]
    if not 2 <= count <= MAX_BATCH_UPDATES:
        raise RemoteProtocolError(f"malformed bus message: WINDOWS of {count} updates")
    at = _WINDOWS_HEAD.size - 1  # each update is read as a WINDOW whose tag byte is at ``at``
    updates: list[WindowUpdate] = []
    for _ in range(count):
        update, at = _decode_window_at(data, at, size)
        at -= 1
        updates.append(update)
    if at + 1 != size:
        raise RemoteProtocolError(f"malformed bus message: {size - at - 1} bytes after WINDOWS")
    return WindowBatch(tuple(updates))


def _decode_window_at(data: bytes, at: int, size: int) -> tuple[WindowUpdate, int]:
    """The WINDOW whose tag byte would be at ``at`` (not checked: WINDOWS has none per
    update), and where it ends."""
    start = at
    at += _WINDOW_HEAD.size
    if size < at:
        raise RemoteProtocolError(f"malformed bus message: WINDOW of {size - start} bytes")
    _, window, head = _WINDOW_HEAD.unpack_from(data, start)
    count = head & WINDOW_COUNT_MASK
    if not 1 <= count <= MAX_SPANS or head & WINDOW_HEAD_RESERVED:
        raise RemoteProtocolError(f"malformed bus message: WINDOW head {head:#04x}")
    spans: list[Span] = []
    span_head = _SPAN_HEAD
    for _ in range(count):
        start = at + 6
        if start > size:
            raise RemoteProtocolError(f"malformed bus message: WINDOW of {size} bytes")
        offset, length = span_head.unpack_from(data, at)
        at = start + length
        if not 1 <= length <= MAX_SPAN_BYTES or at > size:
            raise RemoteProtocolError(
                f"malformed bus message: WINDOW of {size} bytes with a {length}-byte span"
            )
        spans.append(Span(offset, bytes(data[start:at])))
    return WindowUpdate(window, tuple(spans), bool(head & WINDOW_MORE)), at


def _decode_signal(data: bytes) -> SignalNotify:
    if len(data) != _SIGNAL_MSG.size:
        raise RemoteProtocolError(f"malformed bus message: SIGNAL of {len(data)} bytes")
    return SignalNotify(_SIGNAL_MSG.unpack(data)[1])


def _decode_signal_state(data: bytes) -> SignalState:
    if len(data) != _SIGNAL_STATE_MSG.size:
        raise RemoteProtocolError(f"malformed bus message: SIGNAL_STATE of {len(data)} bytes")
    _, signal, enabled, seen = _SIGNAL_STATE_MSG.unpack(data)
    if enabled > 1:
        raise RemoteProtocolError(f"malformed bus message: SIGNAL_STATE enabled {enabled}")
    return SignalState(signal, bool(enabled), seen)


def _encode_signal(msg: SignalNotify) -> bytes:
    try:
        return _SIGNAL_MSG.pack(_SIGNAL_TAG, msg.signal)
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode SIGNAL: {_why(exc)}") from exc


def _encode_devcall_msg(msg: DevCall) -> bytes:
    return encode_devcall(msg.call_id, msg.handle, msg.func, msg.flags, msg.payload)


def _encode_devcall_reply_msg(msg: DevCallReply) -> bytes:
    return encode_devcall_reply(msg.call_id, msg.status, msg.payload)


# ---------------------------------------------------------------------------
# The messages: one entry each; everything else is derived from this table
# ---------------------------------------------------------------------------

_HOST = "host → board"
_BOARD = "board → host"
_BOTH = "both"
_SIGNAL_EXAMPLE = 0x3C6EF372
_HANDLE_EXAMPLE = 0x9E3779B1

MESSAGES: tuple[MessageDef, ...] = (
    MessageDef(
        Tag.BUS_HELLO,
        BusHello,
        BUS_HELLO,
        _HOST,
        "CONTROL",
        "Registration. The host sends it once per link session, after the session "
        "started, with the range of bus versions it speaks. Nothing but BUS_HELLO is "
        "accepted by the board before it.",
        BusHello(version_min=1, version_max=1),
    ),
    MessageDef(
        Tag.BUS_WELCOME,
        BusWelcome,
        BUS_WELCOME,
        _BOARD,
        "CONTROL",
        "The answer to BUS_HELLO: the chosen version (the highest both sides speak) and the "
        "container's limits. With a negative status (EPROTONOSUPPORT) nothing follows and "
        "the host stays unregistered; otherwise the DEVADD replay and BUS_SYNCED follow.",
        BusWelcome(
            status=0,
            version=1,
            max_call_payload_bytes=65536,
            max_handles=64,
            max_windows=64,
            max_window_bytes=1 << 20,
            max_total_window_bytes=4 << 20,
        ),
    ),
    MessageDef(
        Tag.BUS_SYNCED,
        BusSynced,
        BUS_SYNCED,
        _BOARD,
        "CONTROL",
        "End of the DEVADD replay that follows BUS_WELCOME: the host now knows every device "
        "that exists. Later DEVADD/DEVDROP messages are live hotswap events.",
        BusSynced(device_count=2),
    ),
    MessageDef(
        Tag.BUS_LIMITS,
        BusLimits,
        BUS_LIMITS,
        _HOST,
        "CONTROL",
        "Bus v3: the host's limits, sent once right after a BUS_WELCOME that chose version 3 "
        "or later and before any other message. The board sends the DEVADD replay only after "
        "it, and never has more of its devices announced than `max_devices`: the others are "
        "withheld (counted) until an announced one is dropped. A host refuses and counts a "
        "DEVADD past its `max_devices` whatever the version.",
        BusLimits(max_devices=256),
    ),
    MessageDef(
        Tag.DEVADD,
        DevAdd,
        DEVADD,
        _BOARD,
        "CONTROL",
        "A device exists in the board's container: its id (from a counter, never reused), "
        "ABI version, type string and attributes. Replayed for every existing device on "
        "registration, and sent live when a device is added at runtime.",
        DevAdd(device_id=1, version=1, type="echo", attrs=(Attribute("board", "bb-1"),)),
    ),
    MessageDef(
        Tag.DEVDROP,
        DevDrop,
        DEVDROP,
        _BOARD,
        "CONTROL",
        "A device is gone (hot-unplug). Its handles, windows and signals are gone with it.",
        DevDrop(device_id=1),
    ),
    MessageDef(
        Tag.DEVOPEN,
        DevOpen,
        DEVOPEN,
        _HOST,
        "CONTROL",
        "Open a device at an ABI version. The device id is looked up only in the container of "
        "this link. Answered by DEVOPEN_REPLY.",
        DevOpen(call_id=7, device_id=1, version=1),
    ),
    MessageDef(
        Tag.DEVOPEN_REPLY,
        DevOpenReply,
        DEVOPEN_REPLY,
        _BOARD,
        "CONTROL",
        "The opaque handle for the open device, or a negative status (ENODEV, EPROTONOSUPPORT, "
        "EBUSY, EMFILE).",
        DevOpenReply(call_id=7, status=0, handle=_HANDLE_EXAMPLE),
    ),
    MessageDef(
        Tag.DEVCLOSE,
        DevClose,
        DEVCLOSE,
        _HOST,
        "BULK",
        "Close a handle; its windows and signals are detached. No reply. Sent on BULK so that "
        "it follows the host's window traffic for that handle.",
        DevClose(handle=_HANDLE_EXAMPLE),
    ),
    MessageDef(
        Tag.DEVCALL,
        DevCall,
        DEVCALL,
        _HOST,
        "CONTROL (BULK when ordered after window updates)",
        "A synchronous call: the device runs function `func` with the payload and answers with "
        "a status and a payload. Carried out exactly once per message within a session. A call "
        "that must see window updates flushed before it is sent on BULK.",
        DevCall(call_id=8, handle=_HANDLE_EXAMPLE, func=0, flags=0, payload=b"ping"),
        fast_encode=_encode_devcall_msg,
        fast_decode=_decode_devcall,
    ),
    MessageDef(
        Tag.DEVCALL_REPLY,
        DevCallReply,
        DEVCALL_REPLY,
        _BOARD,
        "the channel of the call",
        "The result of a DEVCALL. Unknown handle: EBADF; unknown function: ENOSYS. A negative "
        "status is never a crash of either side.",
        DevCallReply(call_id=8, status=0, payload=b"ping"),
        fast_encode=_encode_devcall_reply_msg,
        fast_decode=_decode_devcall_reply,
    ),
    MessageDef(
        Tag.SHM_ATTACH,
        ShmAttach,
        SHM_ATTACH,
        _HOST,
        "BULK",
        "Attach a shared window of `size_bytes` (id chosen by the host) to a device queue or "
        "region `shm_id`, optionally with a signal. The board writes only "
        "[device_offset, device_offset+device_length); the host writes the rest.",
        ShmAttach(
            call_id=9,
            handle=_HANDLE_EXAMPLE,
            shm_id=0,
            window=1,
            size_bytes=4096,
            device_offset=2048,
            device_length=2048,
            flags=int(ShmFlags.SIGNAL),
        ),
    ),
    MessageDef(
        Tag.SHM_ATTACH_REPLY,
        ShmAttachReply,
        SHM_ATTACH_REPLY,
        _BOARD,
        "BULK",
        "The signal handle (when asked for), or a negative status (EBADF, EEXIST, EINVAL, "
        "ERANGE, ENOSPC, EOPNOTSUPP).",
        ShmAttachReply(call_id=9, status=0, signal=_SIGNAL_EXAMPLE),
    ),
    MessageDef(
        Tag.SHM_DETACH,
        ShmDetach,
        SHM_DETACH,
        _HOST,
        "BULK",
        "Detach a window (and its signal) from a device.",
        ShmDetach(call_id=10, handle=_HANDLE_EXAMPLE, window=1),
    ),
    MessageDef(
        Tag.SHM_DETACH_REPLY,
        ShmDetachReply,
        SHM_DETACH_REPLY,
        _BOARD,
        "BULK",
        "The window is detached, or EBADF for an unknown handle/window.",
        ShmDetachReply(call_id=10, status=0),
    ),
    MessageDef(
        Tag.WINDOW,
        WindowUpdate,
        WINDOW,
        _BOTH,
        "BULK",
        "Replicated writes: each span is the current content of a byte range of the window, "
        "written by the range's one writer. Applied in order; a message with any span out of "
        "bounds or in a range the sender does not write is refused whole and counted. MORE "
        "(bus v2) marks every message of a flush but its last.",
        WindowUpdate(window=1, spans=(Span(offset=0, data=b"\x01\x02\x03\x04"),)),
        fast_encode=_encode_window,
        fast_decode=_decode_window,
    ),
    MessageDef(
        Tag.WINDOWS,
        WindowBatch,
        WINDOWS,
        _BOTH,
        "BULK",
        "Bus v4: several WINDOW updates in one message, each exactly a WINDOW message's body "
        "(window, head with its MORE, spans), applied in order as if each had come alone "
        "(each refused or applied on its own). A sender puts consecutive WINDOW messages of "
        "the BULK channel in one WINDOWS (a frame's buffer and the ring update that exposes "
        "it); never sent to a peer of version 3 or older, refused and counted from one. From "
        "version 4 on a virtio driver sends no SIGNAL after publishing available buffers: the "
        "device runs the queue when the flush of the window with its available ring has "
        "ended (the last update without MORE), as a device does since version 2.",
        WindowBatch(
            updates=(
                WindowUpdate(window=2, spans=(Span(offset=0, data=b"\x45\x00"),)),
                WindowUpdate(window=1, spans=(Span(offset=4098, data=b"\x01"),)),
            )
        ),
        fast_encode=_encode_windows,
        fast_decode=_decode_windows,
    ),
    MessageDef(
        Tag.SIGNAL,
        SignalNotify,
        SIGNAL,
        _BOTH,
        "BULK",
        "A notification on a signal (shm-signal inject), sent only when the receiver has "
        "notifications enabled and none is pending. Travels behind the window updates flushed "
        "before it.",
        SignalNotify(signal=_SIGNAL_EXAMPLE),
        fast_encode=_encode_signal,
        fast_decode=_decode_signal,
    ),
    MessageDef(
        Tag.SIGNAL_STATE,
        SignalState,
        SIGNAL_STATE,
        _BOTH,
        "BULK",
        "The receiver's side of a signal: sent when it has drained a notification (pending "
        "cleared) or enables notifications again; carries whether notifications are enabled "
        "and how many SIGNALs it has seen, so the sender knows whether one is still pending.",
        SignalState(signal=_SIGNAL_EXAMPLE, enabled=True, signals_seen=1),
        fast_encode=_encode_signal_state,
        fast_decode=_decode_signal_state,
    ),
)
"""Every bus message, in tag order: the definition the rest of this module derives from."""

_BY_TAG: dict[Tag, MessageDef] = {Tag(d.tag): d for d in MESSAGES}
_TAGS: dict[type[Any], Tag] = {d.cls: Tag(d.tag) for d in MESSAGES}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    d.cls: tuple(f.name for f in fields(d.cls)) for d in MESSAGES
}
#: the hot path's codecs, by class and by tag byte
_FAST_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    d.cls: d.fast_encode for d in MESSAGES if d.fast_encode is not None
}
_FAST_DECODERS: dict[int, Callable[[bytes], Message]] = {
    int(d.tag): d.fast_decode for d in MESSAGES if d.fast_decode is not None
}

MESSAGE = Struct(
    "tag" / Int8ul * "Tag",
    "body" / Switch(this.tag, {int(d.tag): d.body for d in MESSAGES}, default=Error),
    Terminated,
)
"""The whole message: tag byte, body, end of message (uncompiled)."""

MESSAGE_COMPILED = MESSAGE.compile()
"""``MESSAGE`` compiled; what ``encode``/``decode`` use when no fast codec does (parity is
tested)."""


def encode(msg: Message) -> bytes:
    """Encode one bus message; ``LocalProtocolError`` if it breaks a limit or a field range."""
    fast = _FAST_ENCODERS.get(type(msg))
    if fast is not None:
        return fast(msg)
    return schema_encode(msg)


def decode(data: bytes) -> Message:
    """Decode one whole bus message; ``RemoteProtocolError`` if it is not one."""
    if data:
        fast = _FAST_DECODERS.get(data[0])
        if fast is not None:
            return fast(data)
    return schema_decode(data)


def decode_uncompiled(data: bytes) -> Message:
    """``decode`` through the uncompiled schema (for parity tests and debugging)."""
    try:
        parsed = MESSAGE.parse(data)
        return _from_body(Tag(parsed.tag), parsed.body)
    except (ConstructError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"malformed bus message: {_why(exc)}") from exc


# ---------------------------------------------------------------------------
# Documentation (ira.wire.gendoc)
# ---------------------------------------------------------------------------


def _whole(d: MessageDef) -> Any:
    """The schema of one whole message, tag included, for the generated docs."""
    return Struct(
        "tag" / Const(int(d.tag), Int8ul) * f"{int(d.tag):#04x} ({d.name})",
        *d.body.subcons,
    )


_SUMMARY = """\
The bus protocol carries the verbs of a virtual bus between the board's **connector**, which owns
a container of devices, and the host's **bus**, which sees proxy devices. Each bus message is one
link message (delivered exactly once and in order per channel within a link session): a tag byte,
then the body. All integers are little-endian; strings are UTF-8 with an explicit byte length;
nothing may follow the body. Ids and handles are resolved only in the container of the link the
message arrived on; handles and signal handles are opaque and checked by table lookup.

**Channels.** Window traffic and everything that must stay ordered with it travels on the link's
BULK channel: SHM_ATTACH/SHM_DETACH and their replies, WINDOW, SIGNAL, SIGNAL_STATE, DEVCLOSE, and
a DEVCALL that the caller orders after its window updates. Everything else travels on CONTROL,
which the link sends ahead of BULK. Each channel is in order, so a SIGNAL sent after a flush
arrives after the flushed WINDOW updates (release/acquire), and a window is attached before its
first update. A reply travels on the channel of its request.
"""


SPEC = WireSpec(
    title="Bus protocol",
    summary=_SUMMARY,
    encode=encode,
    messages=tuple(
        MessageSpec(
            name=d.name,
            tag=int(d.tag),
            schema=_whole(d),
            meaning=d.meaning,
            example=d.example,
            direction=d.direction,
            channel=d.channel,
        )
        for d in MESSAGES
    ),
    limits=(
        Limit("BUS_VERSION_MIN", BUS_VERSION_MIN, "lowest bus version this implementation speaks"),
        Limit("BUS_VERSION_MAX", BUS_VERSION_MAX, "highest bus version this implementation speaks"),
        Limit("MAX_HOST_DEVICES", MAX_HOST_DEVICES, "largest `max_devices` a host may announce"),
        Limit("MAX_TYPE_BYTES", MAX_TYPE_BYTES, "longest device type string (bytes)"),
        Limit("MAX_ATTRS", MAX_ATTRS, "most attributes per device"),
        Limit("MAX_ATTR_KEY_BYTES", MAX_ATTR_KEY_BYTES, "longest attribute key (bytes)"),
        Limit("MAX_ATTR_VALUE_BYTES", MAX_ATTR_VALUE_BYTES, "longest attribute value (bytes)"),
        Limit("MAX_CALL_PAYLOAD_BYTES", MAX_CALL_PAYLOAD_BYTES, "largest DEVCALL payload"),
        Limit("MAX_WINDOW_BYTES", MAX_WINDOW_BYTES, "largest window a container may accept"),
        Limit("MAX_SPANS", MAX_SPANS, "most spans per WINDOW message"),
        Limit("MAX_SPAN_BYTES", MAX_SPAN_BYTES, "largest span in a WINDOW message"),
        Limit("MAX_BATCH_UPDATES", MAX_BATCH_UPDATES, "most window updates in one WINDOWS"),
        Limit("BUS_VERSION_WINDOWS", BUS_VERSION_WINDOWS, "first bus version with WINDOWS"),
    ),
    statuses=tuple(StatusCode(s.name, int(s), STATUS_MEANINGS[s]) for s in Status),
)
