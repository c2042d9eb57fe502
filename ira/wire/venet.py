"""virtio-net frames: ``struct virtio_net_hdr`` followed by an Ethernet frame (virtio 1.2 §5.1.6).

Every packet venet moves, in either direction, is one *frame*: the 12-byte
virtio-net header (virtio 1.x layout, little-endian, ``num_buffers``
included), then the Ethernet frame (destination MAC first, no FCS).  The same
bytes are what a Linux TAP opened with ``IFF_VNET_HDR``, a header size of 12
and ``TUNSETVNETLE`` reads and writes, so frames cross between a TAP and a
virtqueue unchanged.

The header tells the receiver what the sender left undone (virtio 1.2
§5.1.6.2): with ``NEEDS_CSUM`` the transport checksum is partial and must be
completed over ``[csum_start, end)`` and stored at ``csum_start +
csum_offset``; with a ``gso_type`` other than ``NONE`` the frame is one large
segment that the receiver cuts into ``gso_size``-byte segments after
``hdr_len`` bytes of headers.

``VIRTIO_NET_FRAME`` below is the specification, with every check a receiver
makes before it hands a frame to its network stack.  The per-frame hot path
uses the ``struct`` codec (``HEADER``); ``ira.venet.vnethdr`` applies the same
checks field by field so that each dropped frame is counted under its reason,
and the tests hold the two to each other.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import construct as cs

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import Limit, MessageSpec, WireSpec

#: bytes of the virtio 1.x header (``struct virtio_net_hdr`` with ``num_buffers``)
VNET_HDR_BYTES = 12
#: bytes of an Ethernet header (two MACs and the EtherType)
ETH_HLEN = 14
#: bytes of one 802.1Q tag
VLAN_HLEN = 4
#: the largest IP packet (IPv4 total length, IPv6 without jumbograms)
MAX_IP_PACKET_BYTES = 65535
#: the largest Ethernet frame a header may describe: a whole GSO segment
MAX_PACKET_BYTES = MAX_IP_PACKET_BYTES + ETH_HLEN + VLAN_HLEN
#: the smallest MTU venet configures (IPv4's minimum)
MIN_MTU = 68
#: the largest MTU venet configures (virtio-net's ``mtu`` field is 16 bits)
MAX_MTU = 65535


class HdrFlags(enum.IntFlag):
    """``virtio_net_hdr.flags`` (virtio 1.2 §5.1.6)."""

    NONE = 0
    #: the transport checksum is partial: complete it from ``csum_start``, store at +``csum_offset``
    NEEDS_CSUM = 1
    #: the checksum was validated (receive direction); a receiver may ignore it
    DATA_VALID = 2
    #: coalescing info in ``csum_*`` (needs VIRTIO_NET_F_RSC_EXT, never negotiated: refused)
    RSC_INFO = 4


class GsoType(enum.IntEnum):
    """``virtio_net_hdr.gso_type`` without the ECN bit (virtio 1.2 §5.1.6)."""

    NONE = 0
    TCPV4 = 1
    UDP = 3
    TCPV6 = 4
    UDP_L4 = 5


#: ``gso_type`` bit: the TCP segment carries ECN (CWR must be set on the first segment only)
GSO_ECN = 0x80
#: ``gso_type`` without the ECN bit
GSO_TYPE_MASK = 0x7F
#: the flag bits a frame may carry; any other bit (RSC_INFO included) is refused
FLAGS_ACCEPTED = int(HdrFlags.NEEDS_CSUM | HdrFlags.DATA_VALID)
_FLAGS_REFUSED = 0xFF & ~FLAGS_ACCEPTED

# --- construct definitions (the specification) -------------------------------------------

# plain ints in the expressions: the compiled schema prints them into its source
_gso = cs.this.gso_type & GSO_TYPE_MASK
_NEEDS_CSUM = int(HdrFlags.NEEDS_CSUM)
_TCPV4, _TCPV6, _UDP_L4 = int(GsoType.TCPV4), int(GsoType.TCPV6), int(GsoType.UDP_L4)

VIRTIO_NET_HDR = cs.Struct(
    "flags" / cs.Int8ul * "HdrFlags: bit 0 NEEDS_CSUM, bit 1 DATA_VALID; other bits must be 0",
    "gso_type"
    / cs.Int8ul
    * "GsoType (0 NONE, 1 TCPV4, 3 UDP, 4 TCPV6, 5 UDP_L4), plus 0x80 ECN with TCPV4/TCPV6",
    "hdr_len" / cs.Int16ul * "bytes of Ethernet + IP + transport headers (a hint without GSO)",
    "gso_size" / cs.Int16ul * "GSO: payload bytes per segment (the MSS); 0 without GSO",
    "csum_start" / cs.Int16ul * "NEEDS_CSUM: offset of the first byte the checksum covers",
    "csum_offset" / cs.Int16ul * "NEEDS_CSUM: where the checksum goes, counted from csum_start",
    "num_buffers" / cs.Int16ul * "receive buffers the frame spans (MRG_RXBUF); 0 when sent",
)
"""``struct virtio_net_hdr`` (virtio 1.x layout), 12 bytes."""

VIRTIO_NET_FRAME = cs.Struct(
    *VIRTIO_NET_HDR.subcons,
    "packet" / cs.GreedyBytes * "the Ethernet frame (destination MAC first, no FCS)",
    cs.Check((cs.this.flags & _FLAGS_REFUSED) == 0),
    cs.Check(_gso <= _UDP_L4),
    cs.Check(_gso != 2),
    cs.Check(((cs.this.gso_type & GSO_ECN) == 0) | (_gso == _TCPV4) | (_gso == _TCPV6)),
    cs.Check((_gso == 0) | ((cs.this.flags & _NEEDS_CSUM) != 0)),
    cs.Check((_gso == 0) | (cs.this.gso_size >= 1)),
    cs.Check(cs.len_(cs.this.packet) >= ETH_HLEN),
    cs.Check(cs.len_(cs.this.packet) <= MAX_PACKET_BYTES),
    cs.Check(cs.this.hdr_len <= cs.len_(cs.this.packet)),
    cs.Check(
        ((cs.this.flags & _NEEDS_CSUM) == 0)
        | (cs.this.csum_start + cs.this.csum_offset + 2 <= cs.len_(cs.this.packet))
    ),
)
"""A whole frame: the header, the Ethernet frame, and the checks a receiver makes."""

VIRTIO_NET_FRAME_COMPILED = VIRTIO_NET_FRAME.compile()
"""``VIRTIO_NET_FRAME`` compiled; what ``encode``/``decode`` use (parity is tested)."""

# --- decoded form --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VnetHdr:
    """A decoded ``struct virtio_net_hdr``; all zeros is "a plain, fully checksummed frame"."""

    flags: int = 0
    gso_type: int = 0
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0


@dataclass(frozen=True, slots=True)
class VnetFrame:
    """A decoded frame: the header and the Ethernet frame it describes."""

    hdr: VnetHdr
    packet: bytes


#: the header as ``struct`` packs it: the hot path (tested against ``VIRTIO_NET_HDR``)
HEADER = struct.Struct("<BBHHHHH")
assert HEADER.size == VNET_HDR_BYTES

#: the header of a plain frame (no offloads): twelve zero bytes
PLAIN_HEADER = bytes(VNET_HDR_BYTES)


def pack_header(hdr: VnetHdr) -> bytes:
    """The 12 header bytes (fields are not checked against the frame; see ``encode``)."""
    try:
        return HEADER.pack(
            hdr.flags,
            hdr.gso_type,
            hdr.hdr_len,
            hdr.gso_size,
            hdr.csum_start,
            hdr.csum_offset,
            hdr.num_buffers,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"cannot pack virtio-net header: {exc}") from exc


def unpack_header(frame: bytes | bytearray | memoryview) -> VnetHdr:
    """The header at the start of ``frame`` (fields unchecked; see ``decode``)."""
    try:
        return VnetHdr(*HEADER.unpack_from(frame))
    except struct.error as exc:
        raise RemoteProtocolError(f"frame of {len(frame)} bytes has no virtio-net header") from exc


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fields(frame: VnetFrame) -> dict[str, object]:
    h = frame.hdr
    return {
        "flags": h.flags,
        "gso_type": h.gso_type,
        "hdr_len": h.hdr_len,
        "gso_size": h.gso_size,
        "csum_start": h.csum_start,
        "csum_offset": h.csum_offset,
        "num_buffers": h.num_buffers,
        "packet": bytes(frame.packet),
    }


def encode(frame: VnetFrame) -> bytes:
    """Header and packet as one frame; ``LocalProtocolError`` if a check fails."""
    try:
        data: bytes = VIRTIO_NET_FRAME_COMPILED.build(_fields(frame))
    except (cs.ConstructError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode virtio-net frame: {_why(exc)}") from exc
    return data


def _decode(schema: cs.Construct, data: bytes | bytearray | memoryview) -> VnetFrame:
    try:
        p = schema.parse(bytes(data))
    except (cs.ConstructError, struct.error) as exc:
        raise RemoteProtocolError(f"malformed virtio-net frame: {_why(exc)}") from exc
    hdr = VnetHdr(
        p.flags, p.gso_type, p.hdr_len, p.gso_size, p.csum_start, p.csum_offset, p.num_buffers
    )
    return VnetFrame(hdr, p.packet)


def decode(data: bytes | bytearray | memoryview) -> VnetFrame:
    """Decode and check one whole frame; ``RemoteProtocolError`` if it is not one."""
    return _decode(VIRTIO_NET_FRAME_COMPILED, data)


def decode_uncompiled(data: bytes | bytearray | memoryview) -> VnetFrame:
    """``decode`` through the uncompiled schema (parity tests and debugging)."""
    return _decode(VIRTIO_NET_FRAME, data)


# --- the generated documentation (docs/PROTOCOL.md) -------------------------------------------

_SUMMARY = """\
venet carries Ethernet frames between a board and a host. Every frame starts with
the virtio-net header of virtio 1.x (`struct virtio_net_hdr`, virtio 1.2 §5.1.6), 12 bytes with
`num_buffers`, little-endian, followed by the Ethernet frame from its destination MAC (no FCS).
It is the layout of a Linux TAP opened with `IFF_VNET_HDR`, `TUNSETVNETHDRSZ` 12 and
`TUNSETVNETLE`, so frames pass between a TAP and the link untouched.

The header has no tag byte (the heading below shows 0x00): a frame is a frame by where it
travels. All zeros is a plain frame, complete with its checksums. A frame that fails any check
below is dropped and counted under the check it failed; the interface stays
up. A receiver may be stricter than the wire: it refuses GSO types it did not negotiate, and a
frame without GSO longer than its MTU allows (MTU + ETH_HLEN + VLAN_HLEN).
"""

_NOTES = """\
### Offloads

* `NEEDS_CSUM`: the sender left the transport checksum partial (the pseudo-header sum); the
  receiver, or the stack it hands the frame to, sums `[csum_start, end of frame)` and stores the
  result at `csum_start + csum_offset`. Both must lie inside the frame.
* `gso_type` other than `NONE`: the frame is one segment of up to 64 KiB that the receiver's
  stack cuts into `gso_size`-byte payloads behind copies of the first `hdr_len` bytes. GSO needs
  `NEEDS_CSUM`. ECN (0x80) is only meaningful with TCP.
* `num_buffers` counts the receive buffers a frame was merged from (VIRTIO_NET_F_MRG_RXBUF); a
  sender sets it to 0 and the Linux TAP neither writes nor reads it.
* `DATA_VALID` may be set on frames to a driver and is otherwise ignored; `RSC_INFO` needs a
  feature venet never offers and is refused.
"""

SPEC = WireSpec(
    title="virtio-net frames",
    summary=_SUMMARY,
    encode=encode,
    messages=(
        MessageSpec(
            name="VIRTIO_NET_FRAME",
            tag=0,
            schema=VIRTIO_NET_FRAME,
            meaning="One Ethernet frame with its virtio-net header. The example is a TCP SYN "
            "from 192.0.2.1 to 192.0.2.2 whose TCP checksum the sender left partial: the "
            "receiver completes it over bytes 34..53 and stores it at byte 50.",
            example=VnetFrame(
                VnetHdr(flags=int(HdrFlags.NEEDS_CSUM), hdr_len=54, csum_start=34, csum_offset=16),
                bytes.fromhex(
                    "020000000002020000000001080045000028000140004006b6cbc0000201c0000202"
                    "c000145100000001000000005002faf0841e0000"
                ),
            ),
            direction="both",
        ),
    ),
    limits=(
        Limit("VNET_HDR_BYTES", VNET_HDR_BYTES, "bytes of the header"),
        Limit("ETH_HLEN", ETH_HLEN, "shortest Ethernet frame accepted (its header)"),
        Limit("VLAN_HLEN", VLAN_HLEN, "an 802.1Q tag, allowed beyond the MTU"),
        Limit("MAX_PACKET_BYTES", MAX_PACKET_BYTES, "longest Ethernet frame (a GSO segment)"),
        Limit("MIN_MTU", MIN_MTU, "smallest MTU venet configures"),
        Limit("MAX_MTU", MAX_MTU, "largest MTU venet configures"),
    ),
    notes=_NOTES,
)
