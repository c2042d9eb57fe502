"""Header delta: the two ends of one direction of compressed frames (``ira.wire.framedelta``).

Sans-I/O.  The sender (``DeltaEncoder``) keeps a context per flow for the 16
flows it saw last and writes each frame as the bytes of its headers that
changed since the flow's previous frame; the receiver (``DeltaDecoder``)
rebuilds the frame from its copy of the context.  Both must see the frames of
their direction in the same order, every one: the virtio-net device and
driver encode a frame when it takes its place in the queue, and decode every
chain the queue hands them, in order, before any other check.

The encoder is two-phase: ``encode`` changes nothing, ``commit`` records the
frame once it is in the queue, since a frame may have to wait for room and be
encoded again.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from ira.errors import RemoteProtocolError
from ira.venet.counters import DeltaStatistics
from ira.venet.flowqueue import flow_key
from ira.venet.netspec import with_num_buffers
from ira.wire.framedelta import (
    HEAD_KIND_SHIFT,
    HEAD_NB,
    MAX_CONTEXTS,
    MAX_PREFIX,
    MIN_PREFIX,
    Kind,
    decode,
)
from ira.wire.venet import ETH_HLEN, VNET_HDR_BYTES

#: a context is set again (SET) at least every this many frames
REFRESH_FRAMES = 64

_ETHERTYPE_AT = VNET_HDR_BYTES + 12
_IP_AT = VNET_HDR_BYTES + ETH_HLEN
_IPV4, _IPV6 = 0x0800, 0x86DD
_TCP = 6
#: IP protocols whose header is 8 bytes: UDP, ICMP, UDP-Lite, ICMPv6
_EIGHT_BYTE_HEADERS = frozenset({17, 1, 136, 58})
_U16 = struct.Struct("!H")
#: ``num_buffers`` in the virtio-net header
_NB_AT = VNET_HDR_BYTES - 2
_NO_BUFFERS = b"\0\0"


def _without_buffers(frame: bytes) -> bytes:
    """``frame`` with its header's ``num_buffers`` 0 (a frame too short for it: as it is);
    no copy when it is 0 already, as it nearly always is."""
    if len(frame) < VNET_HDR_BYTES or frame[_NB_AT:VNET_HDR_BYTES] == _NO_BUFFERS:
        return frame
    return with_num_buffers(frame, 0)


def header_bytes(frame: bytes) -> int:
    """How many leading bytes of ``frame`` (virtio-net header first) are headers:
    virtio-net, Ethernet, IPv4/IPv6 and TCP/UDP/ICMP where the frame has them;
    at least ``MIN_PREFIX``, at most ``MAX_PREFIX``, and never more than the frame."""
    n = len(frame)
    length = MIN_PREFIX
    if n >= _IP_AT + 20:
        (ethertype,) = _U16.unpack_from(frame, _ETHERTYPE_AT)
        ip = _IP_AT
        proto = -1
        if ethertype == _IPV4:
            proto = frame[ip + 9]
            l4 = ip + (frame[ip] & 0x0F) * 4
            if _U16.unpack_from(frame, ip + 6)[0] & 0x1FFF:  # a later fragment: no L4 header
                proto = -1
            length = l4
        elif ethertype == _IPV6 and n >= ip + 40:
            proto = frame[ip + 6]
            l4 = length = ip + 40
        if proto == _TCP and n >= l4 + 13:
            length = l4 + (frame[l4 + 12] >> 4) * 4
        elif proto in _EIGHT_BYTE_HEADERS:
            length = l4 + 8
    return min(max(length, MIN_PREFIX), MAX_PREFIX, n)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A frame as ``DeltaEncoder.encode`` wrote it; ``commit`` it once it is queued."""

    data: bytes
    kind: Kind
    context: int
    key: bytes
    prefix: bytes
    #: bytes the frame itself has (without ``num_buffers``)
    frame_bytes: int


def with_buffers(data: bytes, num_buffers: int) -> bytes:
    """A compressed frame written over ``num_buffers`` receive buffers (NB, MRG_RXBUF)."""
    if num_buffers == 1:
        return data
    return b"".join((bytes([data[0] | HEAD_NB, num_buffers]), memoryview(data)[1:]))


class DeltaEncoder:
    """The sending end of one direction (see the module docstring)."""

    def __init__(self, *, refresh_frames: int = REFRESH_FRAMES) -> None:
        self.refresh_frames = refresh_frames
        self._contexts: list[bytes | None] = [None] * MAX_CONTEXTS
        self._since_set = [0] * MAX_CONTEXTS
        #: flow key -> context, least recently used first
        self._flows: OrderedDict[bytes, int] = OrderedDict()
        self.counts = DeltaStatistics()

    def encode(self, frame: bytes) -> Encoded:
        """``frame`` (virtio-net header first) as a compressed frame; nothing changes yet."""
        if len(frame) < MIN_PREFIX:  # not a frame: the receiver's checks will say so
            return Encoded(b"\0" + frame, Kind.RAW, 0, b"", b"", len(frame))
        frame = _without_buffers(frame)
        key = flow_key(frame)
        size = header_bytes(frame)
        prefix = frame[:size]
        context = self._flows.get(key)
        if context is None:
            context = self._victim()
        else:
            base = self._contexts[context]
            if (
                base is not None
                and len(base) == size
                and (self._since_set[context] < self.refresh_frames)
            ):
                data = self._delta(context, base, prefix, frame)
                if data is not None:
                    return Encoded(data, Kind.DELTA, context, key, prefix, len(frame))
        head = context | Kind.SET << HEAD_KIND_SHIFT
        return Encoded(bytes((head, size)) + frame, Kind.SET, context, key, prefix, len(frame))

    def commit(self, encoded: Encoded) -> None:
        """``encoded`` is in the queue: the peer decodes it next, so record it."""
        kind = encoded.kind
        self.counts.frames[kind] += 1
        self.counts.bytes_saved += encoded.frame_bytes - len(encoded.data)
        if kind == Kind.RAW:
            return
        context = encoded.context
        if kind == Kind.SET:
            for key, c in self._flows.items():
                if c == context and key != encoded.key:  # the flow this context served
                    del self._flows[key]
                    break
            self._since_set[context] = 0
        self._contexts[context] = encoded.prefix
        self._since_set[context] += 1
        self._flows[encoded.key] = context
        self._flows.move_to_end(encoded.key)

    def reset(self) -> None:
        """The device was reset: every context is empty on both ends."""
        self._contexts = [None] * MAX_CONTEXTS
        self._since_set = [0] * MAX_CONTEXTS
        self._flows.clear()

    def _victim(self) -> int:
        """The context for a new flow: an unused one, else the least recently used."""
        used = set(self._flows.values())
        for context in range(MAX_CONTEXTS):
            if context not in used:
                return context
        return next(iter(self._flows.values()))

    @staticmethod
    def _delta(context: int, base: bytes, prefix: bytes, frame: bytes) -> bytes | None:
        size = len(prefix)
        mask = bytearray((size + 7) // 8)
        changed = bytearray()
        for start in range(0, size, 8):
            if prefix[start : start + 8] == base[start : start + 8]:
                continue
            for i in range(start, min(start + 8, size)):
                if prefix[i] != base[i]:
                    mask[i >> 3] |= 1 << (i & 7)
                    changed.append(prefix[i])
        if len(mask) + len(changed) + 1 >= size:
            return None  # no shorter than the headers themselves: SET
        head = bytes((context | Kind.DELTA << HEAD_KIND_SHIFT, size, len(changed)))
        return b"".join((head, mask, changed, memoryview(frame)[size:]))


class DeltaDecoder:
    """The receiving end of one direction (see the module docstring)."""

    def __init__(self) -> None:
        self._contexts: list[bytes | None] = [None] * MAX_CONTEXTS

    def decode(self, data: bytes) -> bytes:
        """The frame (virtio-net header first, ``num_buffers`` 0) that ``data`` carries;
        ``RemoteProtocolError`` if it is malformed or names a context it cannot use."""
        try:
            f = decode(data)
        except RemoteProtocolError:
            head = data[0] if data else 0
            if (head >> HEAD_KIND_SHIFT & 3) == Kind.DELTA:
                self._contexts[head & 0x0F] = None
            raise
        if f.kind != Kind.DELTA:
            # RAW: as it came (a frame too short is the frame checks' to count);
            # SET: at least a prefix long (``decode`` checked)
            frame = _without_buffers(f.rest)
            if f.kind == Kind.SET:
                self._contexts[f.context] = frame[: f.prefix]
            return frame
        base = self._contexts[f.context]
        if base is None or len(base) != f.prefix:
            self._contexts[f.context] = None
            what = "empty" if base is None else f"of {len(base)} bytes"
            raise RemoteProtocolError(
                f"DELTA of {f.prefix} bytes on context {f.context}, which is {what}"
            )
        prefix = bytearray(base)
        changed = iter(f.changed)
        for byte_at, bits in enumerate(f.mask):
            while bits:
                low = bits & -bits
                prefix[byte_at * 8 + low.bit_length() - 1] = next(changed)
                bits ^= low
        rebuilt = bytes(prefix)
        if rebuilt[_NB_AT:VNET_HDR_BYTES] != _NO_BUFFERS:
            self._contexts[f.context] = None
            raise RemoteProtocolError("a DELTA sets num_buffers, which is not part of a context")
        self._contexts[f.context] = rebuilt
        return rebuilt + f.rest

    def reset(self) -> None:
        self._contexts = [None] * MAX_CONTEXTS
