"""Link-layer frames: the construct definitions are the specification.

A *frame* is what one COBS chunk (stream transports) or one transfer (packet
transports) carries once decoded: ``body || crc32(body)`` with the CRC-32
(IEEE 802.3, as ``zlib.crc32``/``crcmod`` "crc-32") little-endian at the end.
The first byte of the body is the frame type.

Four frame types:

``HELLO`` / ``HELLO_ACK``
    session handshake: magic, supported version range, the sender's 64-bit
    epoch, the epoch it believes the receiver has (0 when unknown), feature
    bits, the largest frame it can receive, its receive window and keepalive
    interval.
``DATA``
    a segment of one channel's byte stream at a 32-bit position of the
    link-wide sequence space, with a piggy-backed cumulative ack and window.
``ACK``
    cumulative ack, window, up to ``MAX_SACK_BLOCKS`` selective-ack ranges;
    also the keepalive.

``tx`` numbers every DATA transmission (retransmissions too) modulo 2**16, and
``echo`` in DATA and ACK frames returns the ``tx`` of the last DATA frame the
sender of the echo received.  Links never reorder, so every DATA frame sent
before the echoed one and not acknowledged is lost: loss is found exactly, with
no timers and no RTT ambiguity.

``tag`` in DATA and ACK frames is ``(local_epoch ^ peer_epoch) & 0xFFFF``: a
frame left over from an earlier session (a peer that restarted) does not carry
the current tag and is dropped as stale.

The per-frame hot path uses the ``struct`` codecs below; they are tested
byte-for-byte against the construct schemas (tests/wire/test_link_frames.py),
which stay the reference.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

import construct as cs
import crcmod.predefined

from ira.errors import RemoteProtocolError

#: the magic that opens every HELLO; a frame with another magic is not ira's
MAGIC = b"IRAL"
#: link protocol versions this implementation speaks
VERSION_MIN = 1
VERSION_MAX = 1
#: at most this many selective-ack ranges in one ACK
MAX_SACK_BLOCKS = 4
#: the advertised window is counted in units of this many bytes
WINDOW_UNIT_BYTES = 256
#: the smallest frame every implementation must accept (bytes, CRC included)
MIN_FRAME_BYTES = 64
#: bytes of CRC at the end of every frame
CRC_BYTES = 4


class FrameType(enum.IntEnum):
    HELLO = 1
    HELLO_ACK = 2
    DATA = 3
    ACK = 4


class Feature(enum.IntFlag):
    """Link feature bits; the session uses the AND of both sides' sets."""

    SACK = 1 << 0  # selective acknowledgements in ACK frames


#: ACK flag: the sender asks for an immediate ACK (keepalive probe)
ACK_FLAG_PROBE = 0x01
#: DATA flags: the low two bits carry the channel
DATA_CHANNEL_MASK = 0x03

# --- construct definitions (the specification) ---------------------------------

HelloBody = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version_min" / cs.Int8ul,
    "version_max" / cs.Int8ul,
    "epoch" / cs.Int64ul,
    "peer_epoch" / cs.Int64ul,
    "features" / cs.Int32ul,
    "max_frame_bytes" / cs.Int32ul,
    "window_bytes" / cs.Int32ul,
    "keepalive_ms" / cs.Int16ul,
)

DataBody = cs.Struct(
    "flags" / cs.Int8ul,
    "tag" / cs.Int16ul,
    "seq" / cs.Int32ul,
    "ack" / cs.Int32ul,
    "window" / cs.Int16ul,
    "tx" / cs.Int16ul,
    "echo" / cs.Int16ul,
    "payload" / cs.GreedyBytes,
)

SackBlock = cs.Struct("start" / cs.Int32ul, "end" / cs.Int32ul)

AckBody = cs.Struct(
    "flags" / cs.Int8ul,
    "tag" / cs.Int16ul,
    "ack" / cs.Int32ul,
    "window" / cs.Int16ul,
    "echo" / cs.Int16ul,
    "count" / cs.Rebuild(cs.Int8ul, cs.len_(cs.this.blocks)),
    "blocks" / cs.Array(cs.this.count, SackBlock),
    cs.Terminated,
)

FrameBody = cs.Struct(
    "type" / cs.Enum(cs.Int8ul, FrameType),
    "body"
    / cs.Switch(
        cs.this.type,
        {
            FrameType.HELLO.name: HelloBody,
            FrameType.HELLO_ACK.name: HelloBody,
            FrameType.DATA.name: DataBody,
            FrameType.ACK.name: AckBody,
        },
        default=cs.Error,
    ),
)

#: a whole frame as it is carried: the body followed by its CRC-32
Frame = cs.Struct(
    "fields" / cs.RawCopy(FrameBody),
    "crc" / cs.Checksum(cs.Int32ul, lambda data: crc32(data), cs.this.fields.data),
)

# --- decoded frames -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO (``ack=False``) or HELLO_ACK (``ack=True``)."""

    ack: bool
    version_min: int
    version_max: int
    epoch: int
    peer_epoch: int
    features: int
    max_frame_bytes: int
    window_bytes: int
    keepalive_ms: int


@dataclass(frozen=True, slots=True)
class Data:
    channel: int
    tag: int
    seq: int
    ack: int
    window: int
    tx: int
    echo: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    probe: bool
    tag: int
    ack: int
    window: int
    echo: int
    blocks: tuple[tuple[int, int], ...]


LinkFrame = Hello | Data | Ack

# --- fast codecs (hot path) -------------------------------------------------------

_HELLO = struct.Struct("<B4sBBQQIIIH")
_DATA = struct.Struct("<BBHIIHHH")
_ACK = struct.Struct("<BBHIHHB")
_SACK = struct.Struct("<II")
_CRC = struct.Struct("<I")

DATA_HEADER_BYTES = _DATA.size
ACK_MIN_BYTES = _ACK.size


_crc_func: Callable[[bytes | bytearray | memoryview], int] = crcmod.predefined.mkCrcFun("crc-32")


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 (IEEE 802.3) of ``data``, as every frame carries it."""
    return _crc_func(data)


def seal(body: bytes) -> bytes:
    """Append the CRC to a frame body."""
    return body + _CRC.pack(crc32(body))


def encode_hello(h: Hello) -> bytes:
    kind = FrameType.HELLO_ACK if h.ack else FrameType.HELLO
    return seal(
        _HELLO.pack(
            kind,
            MAGIC,
            h.version_min,
            h.version_max,
            h.epoch,
            h.peer_epoch,
            h.features,
            h.max_frame_bytes,
            h.window_bytes,
            h.keepalive_ms,
        )
    )


def encode_data_header(
    channel: int, tag: int, seq: int, ack: int, window: int, tx: int, echo: int
) -> bytes:
    """The DATA header; the caller appends the payload and seals."""
    return _DATA.pack(FrameType.DATA, channel & DATA_CHANNEL_MASK, tag, seq, ack, window, tx, echo)


def encode_data(d: Data) -> bytes:
    header = encode_data_header(d.channel, d.tag, d.seq, d.ack, d.window, d.tx, d.echo)
    return seal(header + d.payload)


def encode_ack(a: Ack) -> bytes:
    if len(a.blocks) > MAX_SACK_BLOCKS:
        raise ValueError(f"at most {MAX_SACK_BLOCKS} SACK blocks")
    flags = ACK_FLAG_PROBE if a.probe else 0
    parts = [_ACK.pack(FrameType.ACK, flags, a.tag, a.ack, a.window, a.echo, len(a.blocks))]
    parts.extend(_SACK.pack(s, e) for s, e in a.blocks)
    return seal(b"".join(parts))


def encode(frame: LinkFrame) -> bytes:
    """Encode any frame, CRC included."""
    match frame:
        case Hello():
            return encode_hello(frame)
        case Data():
            return encode_data(frame)
        case Ack():
            return encode_ack(frame)


class BadCrc(RemoteProtocolError):
    """The frame's CRC does not match: line noise.  Counted, never surfaced."""


def check_crc(frame: bytes | bytearray) -> memoryview:
    """Return the frame body when its CRC is right; raise ``BadCrc`` otherwise."""
    if len(frame) < 1 + CRC_BYTES:
        raise BadCrc(f"frame of {len(frame)} bytes is too short")
    view = memoryview(frame)
    body = view[:-CRC_BYTES]
    (expected,) = _CRC.unpack_from(frame, len(frame) - CRC_BYTES)
    if crc32(body) != expected:
        raise BadCrc("CRC mismatch")
    return body


def decode_body(body: memoryview | bytes) -> LinkFrame:
    """Decode a frame body (CRC already checked and removed).

    Whatever the bytes, the result is a frame or ``RemoteProtocolError``.
    """
    n = len(body)
    if n == 0:
        raise RemoteProtocolError("empty frame")
    kind = body[0]
    try:
        if kind == FrameType.DATA:
            _, flags, tag, seq, ack, window, tx, echo = _DATA.unpack_from(body)
            if flags & ~DATA_CHANNEL_MASK:
                raise RemoteProtocolError(f"DATA frame with unknown flags {flags:#x}")
            return Data(flags, tag, seq, ack, window, tx, echo, bytes(body[_DATA.size :]))
        if kind == FrameType.ACK:
            _, flags, tag, ack, window, echo, count = _ACK.unpack_from(body)
            if flags & ~ACK_FLAG_PROBE:
                raise RemoteProtocolError(f"ACK frame with unknown flags {flags:#x}")
            if count > MAX_SACK_BLOCKS or n != _ACK.size + count * _SACK.size:
                raise RemoteProtocolError(f"ACK frame of {n} bytes with {count} SACK blocks")
            blocks = tuple(
                _SACK.unpack_from(body, _ACK.size + i * _SACK.size) for i in range(count)
            )
            return Ack(bool(flags), tag, ack, window, echo, blocks)
        if kind in (FrameType.HELLO, FrameType.HELLO_ACK):
            if n != _HELLO.size:
                raise RemoteProtocolError(f"HELLO frame of {n} bytes, expected {_HELLO.size}")
            fields = _HELLO.unpack_from(body)
            if fields[1] != MAGIC:
                raise RemoteProtocolError(f"HELLO with magic {fields[1]!r}, not an ira link")
            return Hello(kind == FrameType.HELLO_ACK, *fields[2:])
    except struct.error as exc:
        raise RemoteProtocolError(f"truncated frame of type {kind}: {exc}") from exc
    raise RemoteProtocolError(f"unknown frame type {kind}")


def decode(frame: bytes | bytearray) -> LinkFrame:
    """Check the CRC and decode a whole frame."""
    return decode_body(check_crc(frame))
