"""Bus messages: the verbs of the virtual bus carried over a link.

Every message is one link message: a tag byte (``Tag``) followed by the body
of that message, little-endian, nothing after it.  ``decode`` turns bytes into
one of the frozen dataclasses of ``ira.wire.busdefs`` (or raises
``RemoteProtocolError``); ``encode`` does the reverse (or raises
``LocalProtocolError``).  This module is the bus protocol's public face: it
re-exports every name of the modules it is built from.

Each message is defined once, by its entry in ``MESSAGES`` (``ira.wire.busmessages``:
tag, dataclass, schema, direction, channel, meaning, example, and the fast codecs
where there are some); the switch of ``MESSAGE``, the class lookups, the fast-codec
dispatch and docs/PROTOCOL.md are derived from that table here.  The construct
schemas (``ira.wire.busschema``) are the specification.  DEVCALL and DEVCALL_REPLY,
which every call carries (``ira.wire.buscall``), and WINDOW, WINDOWS, SIGNAL and
SIGNAL_STATE, which every frame of a virtqueue carries (``ira.wire.buswindow``), are
encoded and decoded on the hot path by precompiled ``struct`` codecs
(``encode_devcall``, ``encode_devcall_reply`` and the fast branches of ``encode`` and
``decode``); tests/wire/test_bus_messages.py holds them to the schemas byte for byte,
on golden vectors and generated inputs (``schema_encode``, ``schema_decode``).

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
    Const,
    ConstructError,
    Error,
    Int8ul,
    Struct,
    Switch,
    Terminated,
    this,
)

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import Limit, MessageDef, MessageSpec, StatusCode, WireSpec
from ira.wire.buscall import (
    REPLY_OF,
    call_of,
    encode_devcall,
    encode_devcall_reply,
    error_reply,
)
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
    why,
)
from ira.wire.busmessages import MESSAGES
from ira.wire.busschema import (
    ATTRIBUTE,
    BUS_HELLO,
    BUS_LIMITS,
    BUS_SYNCED,
    BUS_WELCOME,
    DEVADD,
    DEVCALL,
    DEVCALL_REPLY,
    DEVCLOSE,
    DEVDROP,
    DEVOPEN,
    DEVOPEN_REPLY,
    SHM_ATTACH,
    SHM_ATTACH_REPLY,
    SHM_DETACH,
    SHM_DETACH_REPLY,
    SIGNAL,
    SIGNAL_STATE,
    SPAN,
    WINDOW,
    WINDOWS,
)
from ira.wire.buswindow import windows_of

#: the names of the bus protocol, its definitions (``ira.wire.busdefs``), schemas
#: (``ira.wire.busschema``), fast codecs (``ira.wire.buscall``, ``ira.wire.buswindow``) and
#: message table (``ira.wire.busmessages``) re-exported
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
# Schema codecs (the reference for the fast codecs)
# ---------------------------------------------------------------------------

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


def schema_encode(msg: Message) -> bytes:
    """Encode through the (compiled) construct schema: the reference for the fast codecs."""
    tag = _TAGS.get(type(msg))
    if tag is None:
        raise LocalProtocolError(f"not a bus message: {type(msg).__name__}")
    try:
        data: bytes = MESSAGE_COMPILED.build({"tag": int(tag), "body": _to_body(msg)})
    except _BUILD_ERRORS as exc:
        raise LocalProtocolError(f"cannot encode {tag.name}: {why(exc)}") from exc
    return data


def schema_decode(data: bytes) -> Message:
    """Decode through the (compiled) construct schema: the reference for the fast codecs."""
    try:
        parsed = MESSAGE_COMPILED.parse(data)
        return _from_body(Tag(parsed.tag), parsed.body)
    except _PARSE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed bus message: {why(exc)}") from exc


def tag_of(msg: Message) -> Tag:
    """The tag of a message."""
    return _TAGS[type(msg)]


# ---------------------------------------------------------------------------
# Derived from the table of messages (``MESSAGES``)
# ---------------------------------------------------------------------------

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
        raise RemoteProtocolError(f"malformed bus message: {why(exc)}") from exc


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
