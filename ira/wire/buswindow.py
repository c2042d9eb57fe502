"""Bus messages: the fast codecs of WINDOW, WINDOWS, SIGNAL and SIGNAL_STATE (the
per-frame hot path: every frame of a virtqueue carries them).

Precompiled ``struct`` codecs equal to the construct schemas of ``ira.wire.busschema``
byte for byte (tests/wire/test_bus_messages.py holds them to it); ``ira.wire.bus``
dispatches to them from ``encode`` and ``decode``.  ``windows_of`` joins WINDOW
messages already encoded into one WINDOWS.
"""

from __future__ import annotations

import struct

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire.busdefs import (
    MAX_BATCH_UPDATES,
    MAX_SPAN_BYTES,
    MAX_SPANS,
    WINDOW_COUNT_MASK,
    WINDOW_HEAD_RESERVED,
    WINDOW_MORE,
    SignalNotify,
    SignalState,
    Span,
    Tag,
    WindowBatch,
    WindowUpdate,
    why,
)

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


def encode_window(msg: WindowUpdate) -> bytes:
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
        raise LocalProtocolError(f"cannot encode WINDOW: {why(exc)}") from exc


_WINDOWS_HEAD = struct.Struct("<BB")
_WINDOWS_TAG = int(Tag.WINDOWS)


def encode_windows(msg: WindowBatch) -> bytes:
    updates = msg.updates
    try:
        count = len(updates)
        if not 2 <= count <= MAX_BATCH_UPDATES:
            raise LocalProtocolError(
                f"cannot encode WINDOWS: {count} updates, not 2..{MAX_BATCH_UPDATES}"
            )
        bodies = [encode_window(update)[1:] for update in updates]
    except TypeError as exc:
        raise LocalProtocolError(f"cannot encode WINDOWS: {why(exc)}") from exc
    return _WINDOWS_HEAD.pack(_WINDOWS_TAG, count) + b"".join(bodies)


def windows_of(encoded: list[bytes]) -> bytes:
    """One WINDOWS message made of 2..``MAX_BATCH_UPDATES`` encoded WINDOW messages (their
    bodies follow one another as they are: no decoding, no re-encoding)."""
    count = len(encoded)
    if not 2 <= count <= MAX_BATCH_UPDATES or any(m[:1] != _WINDOW_TAG_BYTE for m in encoded):
        raise LocalProtocolError(f"cannot make WINDOWS of {count} messages")
    return b"".join([_WINDOWS_HEAD.pack(_WINDOWS_TAG, count), *(m[1:] for m in encoded)])


def encode_signal_state(msg: SignalState) -> bytes:
    try:
        enabled = int(msg.enabled)
        data = _SIGNAL_STATE_MSG.pack(_SIGNAL_STATE_TAG, msg.signal, enabled, msg.signals_seen)
    except (struct.error, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode SIGNAL_STATE: {why(exc)}") from exc
    if enabled > 1:
        raise LocalProtocolError(f"cannot encode SIGNAL_STATE: enabled is {enabled}, not 0 or 1")
    return data


def decode_window(data: bytes) -> WindowUpdate:
    update, at = _decode_window_at(data, 0, len(data))
    if at != len(data):
        raise RemoteProtocolError(f"malformed bus message: {len(data) - at} bytes after WINDOW")
    return update


def decode_windows(data: bytes) -> WindowBatch:
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


def decode_signal(data: bytes) -> SignalNotify:
    if len(data) != _SIGNAL_MSG.size:
        raise RemoteProtocolError(f"malformed bus message: SIGNAL of {len(data)} bytes")
    return SignalNotify(_SIGNAL_MSG.unpack(data)[1])


def decode_signal_state(data: bytes) -> SignalState:
    if len(data) != _SIGNAL_STATE_MSG.size:
        raise RemoteProtocolError(f"malformed bus message: SIGNAL_STATE of {len(data)} bytes")
    _, signal, enabled, seen = _SIGNAL_STATE_MSG.unpack(data)
    if enabled > 1:
        raise RemoteProtocolError(f"malformed bus message: SIGNAL_STATE enabled {enabled}")
    return SignalState(signal, bool(enabled), seen)


def encode_signal(msg: SignalNotify) -> bytes:
    try:
        return _SIGNAL_MSG.pack(_SIGNAL_TAG, msg.signal)
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode SIGNAL: {why(exc)}") from exc
