"""Compressed frames: venet's header delta (ira's own virtio-net feature ``IRA_HDR_DELTA``).

On a slow line the headers of a frame are a large part of it: a TCP segment
carries 12 bytes of virtio-net header and 66 of Ethernet, IP and TCP headers
(timestamps on), and from one segment of a connection to the next only a dozen
of those bytes change (IP id and checksum, sequence number, timestamps).  With
``IRA_HDR_DELTA`` agreed, every buffer chain of both queues holds one
*compressed frame*: the frame of ``ira.wire.venet`` (virtio-net header, then
the Ethernet frame) written against a *context*, a copy of the first bytes of
an earlier frame that both ends keep.

Each direction (the transmitq's, the receiveq's) has ``MAX_CONTEXTS`` contexts
of its own, empty when the device is reset.  Frames are decoded strictly in
the order their buffers are used, which both ends see alike, so both copies of
a context stay equal without any message of their own.  The sender chooses:

* ``RAW``: the frame follows whole; no context is read or written;
* ``SET``: the frame follows whole, and its first ``prefix`` bytes become the
  context;
* ``DELTA``: the first ``prefix`` bytes are the context's (``prefix`` must be the
  context's length) with the bytes marked in ``mask`` replaced by ``changed``,
  in order; the rest of the frame follows; the result becomes the context.

``num_buffers`` (virtio 1.2 §5.1.6.4) is not part of the delta: with
MRG_RXBUF a frame written over several receive buffers says how many in the
byte after the head (``NB``); without ``NB`` it is one buffer.  In the
reconstructed frame and in the contexts the header's ``num_buffers`` is 0.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import construct as cs

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import Limit, MessageSpec, WireSpec
from ira.wire.venet import ETH_HLEN, VNET_HDR_BYTES

#: contexts per direction
MAX_CONTEXTS = 16
#: the shortest prefix a context holds: the virtio-net and Ethernet headers
MIN_PREFIX = VNET_HDR_BYTES + ETH_HLEN
#: the longest prefix (virtio-net, Ethernet with a VLAN tag, IPv6, TCP with options)
MAX_PREFIX = 192
#: bytes a compressed frame may add to the frame it carries (head, NB, prefix)
MAX_OVERHEAD = 3

HEAD_CONTEXT_MASK = 0x0F
HEAD_KIND_SHIFT = 4
HEAD_KIND_MASK = 0x30
HEAD_NB = 0x40
HEAD_RESERVED = 0x80


class Kind(enum.IntEnum):
    """How a compressed frame relates to its context (the head's bits 4-5)."""

    RAW = 0
    SET = 1
    DELTA = 2


_kind = (cs.this.head >> HEAD_KIND_SHIFT) & 3
_RAW, _SET, _DELTA = int(Kind.RAW), int(Kind.SET), int(Kind.DELTA)

DELTA_FRAME = cs.Struct(
    "head"
    / cs.Int8ul
    * "bits 0-3: context (0..15); bits 4-5: Kind (0 RAW, 1 SET, 2 DELTA); bit 6: NB, a "
    "num_buffers byte follows; bit 7 must be 0",
    cs.Check((cs.this.head & HEAD_RESERVED) == 0),
    cs.Check(_kind <= _DELTA),
    "num_buffers"
    / cs.If((cs.this.head & HEAD_NB) != 0, cs.Int8ul)
    * "NB only: receive buffers the frame spans (MRG_RXBUF), 2..255; without NB: 1",
    "prefix"
    / cs.If(_kind != _RAW, cs.Int8ul)
    * "SET, DELTA: bytes at the start of the frame that the context covers, "
    "MIN_PREFIX..MAX_PREFIX",
    "count"
    / cs.If(_kind == _DELTA, cs.Int8ul)
    * "DELTA: number of prefix bytes that differ from the context (the bits set in mask)",
    "mask"
    / cs.If(_kind == _DELTA, cs.Bytes((cs.this.prefix + 7) // 8))
    * "DELTA: bit i (byte i // 8, bit i % 8) set: prefix byte i is in changed",
    "changed" / cs.If(_kind == _DELTA, cs.Bytes(cs.this.count)) * "DELTA: the new prefix bytes",
    "rest"
    / cs.GreedyBytes
    * "RAW, SET: the whole frame (virtio-net header, Ethernet frame); DELTA: the frame "
    "from byte prefix on",
)
"""One compressed frame (the checks the schema can state; ``decode`` makes the rest)."""

DELTA_FRAME_COMPILED = DELTA_FRAME.compile()


@dataclass(frozen=True, slots=True)
class DeltaFrame:
    """A decoded compressed frame; ``num_buffers`` 1 means no NB byte."""

    kind: Kind
    context: int = 0
    num_buffers: int = 1
    prefix: int = 0
    mask: bytes = b""
    changed: bytes = b""
    rest: bytes = b""


_HEAD = struct.Struct("<B")


def encode(frame: DeltaFrame) -> bytes:
    """The bytes of a compressed frame; ``LocalProtocolError`` if it breaks a rule."""
    reason = _refuse(frame)
    if reason is not None:
        raise LocalProtocolError(f"cannot encode compressed frame: {reason}")
    head = frame.context | frame.kind << HEAD_KIND_SHIFT
    parts = [b""]
    if frame.num_buffers != 1:
        head |= HEAD_NB
        parts.append(bytes([frame.num_buffers]))
    parts[0] = _HEAD.pack(head)
    if frame.kind != Kind.RAW:
        parts.append(bytes([frame.prefix]))
    if frame.kind == Kind.DELTA:
        parts += [bytes([len(frame.changed)]), frame.mask, frame.changed]
    parts.append(frame.rest)
    return b"".join(parts)


def _refuse(f: DeltaFrame) -> str | None:
    if not 0 <= f.context < MAX_CONTEXTS:
        return f"context {f.context} is outside 0..{MAX_CONTEXTS - 1}"
    if not 1 <= f.num_buffers <= 255:
        return f"num_buffers {f.num_buffers} is outside 1..255"
    if f.kind == Kind.RAW:
        if f.prefix or f.mask or f.changed:
            return "a RAW frame has no prefix, mask or changed bytes"
        return None
    if not MIN_PREFIX <= f.prefix <= MAX_PREFIX:
        return f"prefix {f.prefix} is outside {MIN_PREFIX}..{MAX_PREFIX}"
    if f.kind == Kind.SET:
        if f.mask or f.changed:
            return "a SET frame has no mask or changed bytes"
        if len(f.rest) < f.prefix:
            return f"a SET frame of {len(f.rest)} bytes is shorter than its prefix {f.prefix}"
        return None
    if len(f.mask) != (f.prefix + 7) // 8:
        return f"a mask of {len(f.mask)} bytes for a prefix of {f.prefix}"
    marked = int.from_bytes(f.mask, "little")
    if marked >> f.prefix:
        return "mask bits beyond the prefix"
    if marked.bit_count() != len(f.changed):
        return f"{marked.bit_count()} bytes marked, {len(f.changed)} changed bytes given"
    return None


def decode(data: bytes | bytearray | memoryview) -> DeltaFrame:
    """One compressed frame, every rule checked; ``RemoteProtocolError`` if it breaks one."""
    data = bytes(data)
    n = len(data)
    if n < 1:
        raise RemoteProtocolError("empty compressed frame")
    head = data[0]
    kind_bits = (head & HEAD_KIND_MASK) >> HEAD_KIND_SHIFT
    if head & HEAD_RESERVED or kind_bits > _DELTA:
        raise RemoteProtocolError(f"compressed frame with head {head:#04x}: reserved bits set")
    at = 1
    num_buffers = 1
    try:
        if head & HEAD_NB:
            num_buffers = data[at]
            at += 1
            if num_buffers < 2:
                raise RemoteProtocolError(f"NB with num_buffers {num_buffers}")
        kind = Kind(kind_bits)
        prefix = count = 0
        mask = changed = b""
        if kind != Kind.RAW:
            prefix = data[at]
            at += 1
        if kind == Kind.DELTA:
            count = data[at]
            size = (prefix + 7) // 8
            mask = data[at + 1 : at + 1 + size]
            changed = data[at + 1 + size : at + 1 + size + count]
            at += 1 + size + count
            if at > n:
                raise RemoteProtocolError(f"compressed frame of {n} bytes ends inside its delta")
    except IndexError:
        raise RemoteProtocolError(f"compressed frame of {n} bytes ends inside its head") from None
    frame = DeltaFrame(
        kind, head & HEAD_CONTEXT_MASK, num_buffers, prefix, mask, changed, data[at:]
    )
    reason = _refuse(frame)
    if reason is not None:
        raise RemoteProtocolError(f"malformed compressed frame: {reason}")
    return frame


def num_buffers(first: bytes | bytearray | memoryview) -> int:
    """``num_buffers`` of a compressed frame from its first buffer (0: no head at all)."""
    if not first:
        return 0
    return first[1] if first[0] & HEAD_NB and len(first) > 1 else 1


def schema_decode(data: bytes) -> DeltaFrame:
    """``decode`` through the construct schema (parity tests)."""
    try:
        p = DELTA_FRAME_COMPILED.parse(data)
    except (cs.ConstructError, struct.error) as exc:
        raise RemoteProtocolError(f"malformed compressed frame: {exc}") from exc
    if p.num_buffers is not None and p.num_buffers < 2:
        raise RemoteProtocolError(f"NB with num_buffers {p.num_buffers}")
    frame = DeltaFrame(
        Kind((p.head >> HEAD_KIND_SHIFT) & 3),
        p.head & HEAD_CONTEXT_MASK,
        1 if p.num_buffers is None else p.num_buffers,
        p.prefix or 0,
        p.mask or b"",
        p.changed or b"",
        p.rest,
    )
    reason = _refuse(frame)
    if reason is not None:
        raise RemoteProtocolError(f"malformed compressed frame: {reason}")
    return frame


# --- the generated documentation (docs/PROTOCOL.md) ----------------------------------------

_SUMMARY = """\
With the feature `IRA_HDR_DELTA` (virtio-net feature bit 127, ira's own: the top of the
device-type range, where virtio-net has defined nothing) agreed, every buffer chain of both
venet queues holds one *compressed frame* instead of a frame: a head byte, and either the
whole frame (`RAW`, `SET`) or the bytes of its headers that differ from a *context* followed by
the rest of it (`DELTA`). Each direction has 16 contexts, empty after every device reset; both
ends update them in the order the buffers are used, so they stay equal without messages of
their own. The heading's tag below is the head byte's kind bits (context 0).

Decoding a `DELTA` whose context is empty or of another length, a mask with bits beyond the
prefix, a `count` other than the bits set, or a frame that ends early is an error: the frame
is dropped and counted (`rx_dropped_bad_delta` on the host, `tx_dropped_bad_delta` on the
board) and that context is emptied, so the following `DELTA`s on it are dropped too until the
sender's next `SET` (ira's sender sets each context again at least every 64 frames).
"""

_NOTES = """\
### What ira's sender chooses

The sender keeps one context per flow (the IP 5-tuple: addresses, protocol, ports; other frames:
their Ethernet addresses and type), the 16 most recently used flows. The prefix is the frame's
headers: the virtio-net header, Ethernet, IPv4 or IPv6, and TCP (with options) or UDP/ICMP's
8 bytes; other frames: the virtio-net and Ethernet headers. A new flow, a prefix of another
length or the 64th frame since the last `SET` sends `SET`; otherwise `DELTA`, unless the delta
would be no shorter than the prefix. A TCP segment's 78 bytes of headers travel as ~25.
"""

_RAW_EXAMPLE = DeltaFrame(
    Kind.RAW, rest=bytes(VNET_HDR_BYTES) + bytes.fromhex("ffffffffffff0200000000010806")
)
_SET_EXAMPLE = DeltaFrame(
    Kind.SET,
    context=3,
    prefix=MIN_PREFIX,
    rest=bytes(VNET_HDR_BYTES) + bytes.fromhex("02000000000202000000000188b56869"),
)
_DELTA_EXAMPLE = DeltaFrame(
    Kind.DELTA,
    context=3,
    num_buffers=2,
    prefix=MIN_PREFIX,
    mask=bytes([0, 0, 0, 0x02]),
    changed=b"\x03",
    rest=b"hi",
)

#: each kind's documentation: its meaning and golden example
_EXAMPLES = (
    (
        _RAW_EXAMPLE,
        "A frame as it is (here a broadcast Ethernet header with nothing after it); no "
        "context is read or written.",
    ),
    (_SET_EXAMPLE, "A frame as it is whose first `prefix` bytes become context 3."),
    (
        _DELTA_EXAMPLE,
        "The frame after the SET above with byte 25 (the low byte of the EtherType) changed "
        "to 0x03 and 'hi' after the headers, written over two receive buffers.",
    ),
)

SPEC = WireSpec(
    title="Compressed frames",
    summary=_SUMMARY,
    encode=encode,
    messages=tuple(
        MessageSpec(
            name=example.kind.name,
            tag=example.kind << HEAD_KIND_SHIFT,
            schema=DELTA_FRAME,
            meaning=meaning,
            example=example,
            direction="both",
        )
        for example, meaning in _EXAMPLES
    ),
    limits=(
        Limit("MAX_CONTEXTS", MAX_CONTEXTS, "contexts per direction"),
        Limit("MIN_PREFIX", MIN_PREFIX, "shortest prefix (virtio-net and Ethernet headers)"),
        Limit("MAX_PREFIX", MAX_PREFIX, "longest prefix"),
        Limit("MAX_OVERHEAD", MAX_OVERHEAD, "bytes a compressed frame may add to its frame"),
    ),
    notes=_NOTES,
)
