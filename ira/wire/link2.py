"""The DATA2 frame of link protocol version 2: a DATA frame with a lean header.

A session that agreed version 2 (HELLO's version range, ``ira.wire.link``) sends
its data in DATA2 frames instead of DATA frames; every other frame is as in
version 1.  DATA2 carries the same information as DATA, in fewer bytes:

* ``seq`` and ``ack`` are truncated to their low 1 to 4 bytes (the length of
  each is in ``flags``), as QUIC truncates its packet numbers (RFC 9000 §17.1,
  Appendix A): the sender keeps enough bytes that the receiver, taking the value
  nearest the one it expects (``seq`` nearest its next expected byte, ``ack``
  nearest its oldest unacknowledged byte), cannot be wrong;
* ``window`` is a LEB128 varint and present only when the sender's window edge
  moved past what the peer is known to hold;
* ``echo`` is present only in the first frame that echoes a DATA2 frame received:
  a repeated echo is no round-trip sample, and the ack itself is in every frame.

This module is self-contained (no import of ``ira.wire.link``, which imports it):
the construct definition is the specification, the ``struct`` codec the hot path.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import construct as cs

from ira.errors import RemoteProtocolError

#: the frame type of DATA2 (``FrameType.DATA2`` in ``ira.wire.link``)
DATA2_TYPE = 6
#: flags: bits 0-1 the channel, as in DATA
DATA2_CHANNEL_MASK = 0x03
#: flags: bits 2-3 hold ``seq``'s length in bytes, minus one
DATA2_SEQ_SHIFT = 2
#: flags: bits 4-5 hold ``ack``'s length in bytes, minus one
DATA2_ACK_SHIFT = 4
#: flags: ``window`` is present
DATA2_FLAG_WINDOW = 0x40
#: flags: ``echo`` is present
DATA2_FLAG_ECHO = 0x80
#: the largest ``window`` (units of WINDOW_UNIT_BYTES), as in DATA's 16-bit field
DATA2_MAX_WINDOW = 0xFFFF
#: the shortest DATA2 header: type, flags, tag, one byte each of seq and ack, tx
DATA2_MIN_HEADER_BYTES = 1 + 1 + 2 + 1 + 1 + 2
#: the longest: four bytes each of seq and ack, a three-byte window, echo
DATA2_MAX_HEADER_BYTES = 1 + 1 + 2 + 4 + 4 + 3 + 2 + 2
#: an end with data of its own in flight may hold the acknowledgement of a lone DATA2
#: frame this long, for a DATA2 frame of its own to carry it (the peer's timers allow it)
ACK_HOLD_S = 0.025

Data2Body = cs.Struct(
    "flags"
    / cs.Int8ul
    * "bits 0-1: channel (0 CONTROL, 1 BULK); bits 2-3: bytes of `seq` minus 1; bits 4-5: "
    "bytes of `ack` minus 1; bit 6: `window` present; bit 7: `echo` present",
    "tag" / cs.Int16ul * "(local_epoch ^ peer_epoch) & 0xFFFF, as in DATA",
    "seq"
    / cs.BytesInteger((cs.this.flags >> DATA2_SEQ_SHIFT & 3) + 1, swapped=True)
    * "the low bytes of the first payload byte's sequence number: the receiver takes the "
    "number nearest its next expected byte with these low bytes",
    "ack"
    / cs.BytesInteger((cs.this.flags >> DATA2_ACK_SHIFT & 3) + 1, swapped=True)
    * "the low bytes of the cumulative ack: the receiver takes the number nearest its "
    "oldest unacknowledged byte with these low bytes",
    "window"
    / cs.If(
        cs.this.flags & DATA2_FLAG_WINDOW,
        cs.ExprValidator(cs.VarInt, cs.obj_ <= DATA2_MAX_WINDOW),
    )
    * "receive window above the ack in units of WINDOW_UNIT_BYTES (LEB128, at most 0xFFFF); "
    "absent: the peer already holds this window edge",
    "tx" / cs.Int16ul * "transmission number, as in DATA",
    "echo"
    / cs.If(cs.this.flags & DATA2_FLAG_ECHO, cs.Int16ul)
    * "`tx` of the last DATA2 frame received, in the first frame of the sender that echoes it",
    "payload" / cs.GreedyBytes * "bytes of the channel's stream, as in DATA",
)


class Data2(NamedTuple):
    """A DATA2 frame as it is on the wire: ``seq`` and ``ack`` truncated to
    ``seq_bytes`` and ``ack_bytes``; ``window`` and ``echo`` None when absent."""

    channel: int
    tag: int
    seq: int
    seq_bytes: int
    ack: int
    ack_bytes: int
    window: int | None
    tx: int
    echo: int | None
    payload: bytes


_HEAD = struct.Struct("<BBH")
_U16 = struct.Struct("<H")
_CRC = struct.Struct("<I")


def truncated_bytes(span: int) -> int:
    """Bytes of a truncated number whose true value lies within ``span`` of the
    receiver's reference: the fewest whose half range exceeds it (RFC 9000 §A.2)."""
    if span < 0x80:
        return 1
    if span < 0x8000:
        return 2
    if span < 0x800000:
        return 3
    return 4


def expand(wire: int, nbytes: int, reference: int) -> int:
    """The number nearest ``reference`` whose low ``nbytes`` bytes are ``wire``
    (RFC 9000 §A.3, both sides of the reference)."""
    mod = 1 << (8 * nbytes)
    half = mod >> 1
    return reference + ((wire - reference + half) & (mod - 1)) - half


def encode_data2_frame(
    channel: int,
    tag: int,
    seq: int,
    seq_bytes: int,
    ack: int,
    ack_bytes: int,
    window: int | None,
    tx: int,
    echo: int | None,
    payload: bytes,
) -> bytes:
    """A whole DATA2 frame, CRC included (the link core's hot path); ``seq`` and
    ``ack`` are cut to their low ``seq_bytes`` and ``ack_bytes`` bytes here."""
    flags = channel & DATA2_CHANNEL_MASK
    flags |= (seq_bytes - 1) << DATA2_SEQ_SHIFT | (ack_bytes - 1) << DATA2_ACK_SHIFT
    parts = [b""] * 3
    if window is not None:
        flags |= DATA2_FLAG_WINDOW
        w = window
        out = bytearray()
        while w >= 0x80:
            out.append(w & 0x7F | 0x80)
            w >>= 7
        out.append(w)
        parts[0] = bytes(out)
    parts[1] = _U16.pack(tx)
    if echo is not None:
        flags |= DATA2_FLAG_ECHO
        parts[2] = _U16.pack(echo)
    head = b"".join(
        (
            _HEAD.pack(DATA2_TYPE, flags, tag),
            (seq & ((1 << (8 * seq_bytes)) - 1)).to_bytes(seq_bytes, "little"),
            (ack & ((1 << (8 * ack_bytes)) - 1)).to_bytes(ack_bytes, "little"),
            *parts,
        )
    )
    # the CRC runs on over the payload where it lies: the payload is copied once
    return b"".join((head, payload, _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))))


def encode_data2(d: Data2) -> bytes:
    return encode_data2_frame(
        d.channel, d.tag, d.seq, d.seq_bytes, d.ack, d.ack_bytes, d.window, d.tx, d.echo, d.payload
    )


def decode_data2(body: memoryview | bytes) -> Data2:
    """Decode a DATA2 body (type byte first, CRC and any MAC removed).

    Whatever the bytes, the result is a ``Data2`` or ``RemoteProtocolError``.
    """
    n = len(body)
    if n < DATA2_MIN_HEADER_BYTES:
        raise RemoteProtocolError(f"DATA2 frame of {n} bytes is too short")
    _, flags, tag = _HEAD.unpack_from(body)
    seq_bytes = (flags >> DATA2_SEQ_SHIFT & 3) + 1
    ack_bytes = (flags >> DATA2_ACK_SHIFT & 3) + 1
    at = _HEAD.size
    seq = int.from_bytes(body[at : at + seq_bytes], "little")
    at += seq_bytes
    ack = int.from_bytes(body[at : at + ack_bytes], "little")
    at += ack_bytes
    window: int | None = None
    if flags & DATA2_FLAG_WINDOW:
        window = shift = 0
        while True:
            if at >= n:
                raise RemoteProtocolError("DATA2 window varint truncated")
            b = body[at]
            at += 1
            if b & 0x7F:
                if shift > 14:
                    raise RemoteProtocolError(f"DATA2 window above {DATA2_MAX_WINDOW}")
                window |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if window > DATA2_MAX_WINDOW:
            raise RemoteProtocolError(f"DATA2 window {window} above {DATA2_MAX_WINDOW}")
    echo: int | None = None
    need = at + 2 + (2 if flags & DATA2_FLAG_ECHO else 0)
    if need > n:
        raise RemoteProtocolError(f"DATA2 frame of {n} bytes is shorter than its header")
    (tx,) = _U16.unpack_from(body, at)
    if flags & DATA2_FLAG_ECHO:
        (echo,) = _U16.unpack_from(body, at + 2)
    return Data2(
        flags & DATA2_CHANNEL_MASK,
        tag,
        seq,
        seq_bytes,
        ack,
        ack_bytes,
        window,
        tx,
        echo,
        bytes(body[need:]),
    )


def header_bytes(d: Data2) -> int:
    """Bytes of a DATA2 frame's header (type byte included, payload and CRC not)."""
    w = d.window
    window_bytes = 0 if w is None else 1 if w < 0x80 else 2 if w < 0x4000 else 3
    return 6 + d.seq_bytes + d.ack_bytes + window_bytes + (0 if d.echo is None else 2)
