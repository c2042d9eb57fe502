"""Checking frames before they reach a network stack (virtio 1.2 §5.1.6).  Sans-I/O.

A frame that comes from the peer, with or without a virtio-net header, is
checked here before it is written to a TAP or handed to an embedding program.
``check_frame`` returns ``None`` for a frame to deliver, or the ``Drop``
reason of the first rule it breaks; the caller counts it (``PortCounters``
in ``ira.venet.port``) and goes on: a malformed frame never takes an interface
down and never raises.

The rules are those of ``ira.wire.venet.VIRTIO_NET_FRAME`` (the spec, whose
checks the tests hold these to), plus what the receiver itself negotiated: the
GSO types it accepts, and its MTU for frames without GSO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ira.wire.venet import (
    ETH_HLEN,
    FLAGS_ACCEPTED,
    GSO_ECN,
    GSO_TYPE_MASK,
    HEADER,
    MAX_MTU,
    MAX_PACKET_BYTES,
    MIN_MTU,
    VLAN_HLEN,
    VNET_HDR_BYTES,
    GsoType,
    HdrFlags,
)


class Drop(enum.Enum):
    """Why a frame was dropped; the value is its counter's name in statistics."""

    # -- the frame is malformed (from the header and length alone) --
    #: shorter than an Ethernet header (plus the virtio-net header, when there is one)
    TRUNCATED = "truncated"
    #: without GSO: longer than MTU + ETH_HLEN + VLAN_HLEN; with GSO: than MAX_PACKET_BYTES
    OVERSIZE = "oversize"
    #: a flag bit other than NEEDS_CSUM and DATA_VALID
    BAD_FLAGS = "bad_flags"
    #: an unknown gso_type, ECN without TCP, or a GSO type the receiver did not accept
    BAD_GSO_TYPE = "bad_gso_type"
    #: GSO without NEEDS_CSUM, or with gso_size 0
    BAD_GSO = "bad_gso"
    #: hdr_len beyond the end of the Ethernet frame
    BAD_HDR_LEN = "bad_hdr_len"
    #: NEEDS_CSUM with csum_start + csum_offset + 2 beyond the end of the Ethernet frame
    BAD_CSUM = "bad_csum"
    #: a compressed frame (IRA_HDR_DELTA) that is malformed or names a context it cannot use
    BAD_DELTA = "bad_delta"
    # -- the frame was fine but could not be delivered --
    #: the receiving queue was full (the reader is behind)
    QUEUE_FULL = "queue_full"
    #: a flow's frames waited too long in the sender's flow queue (CoDel, RFC 8289)
    CODEL = "codel"
    #: the receiving interface is administratively down
    INTERFACE_DOWN = "interface_down"
    #: this end has no port to deliver to
    NO_PORT = "no_port"
    #: the port refused it (and counted why in its own statistics)
    BY_PORT = "by_port"
    #: device, rx: the driver's (unmerged) receive buffer is shorter than the frame
    BUFFER_TOO_SMALL = "buffer_too_small"
    #: driver, rx: num_buffers names more buffers than the device used or there are
    BAD_NUM_BUFFERS = "bad_num_buffers"
    #: driver, tx: queued when the device was reset (the old session's frames)
    RESET = "reset"
    #: the receiving end has no carrier
    NO_CARRIER = "no_carrier"
    #: the kernel refused the frame (EINVAL) although it passed every check here
    KERNEL_REJECTED = "kernel_rejected"
    #: the receiving end is closed
    PEER_CLOSED = "peer_closed"

    @property
    def malformed(self) -> bool:
        """True for the reasons that are the frame's fault."""
        return self in _MALFORMED


_MALFORMED = frozenset(
    {
        Drop.TRUNCATED,
        Drop.OVERSIZE,
        Drop.BAD_FLAGS,
        Drop.BAD_GSO_TYPE,
        Drop.BAD_GSO,
        Drop.BAD_DELTA,
        Drop.BAD_NUM_BUFFERS,
        Drop.BAD_HDR_LEN,
        Drop.BAD_CSUM,
    }
)

#: every GSO type virtio 1.2 defines
ALL_GSO_TYPES = frozenset(GsoType) - {GsoType.NONE}


@dataclass(frozen=True, slots=True)
class FramePolicy:
    """What a receiving end accepts."""

    #: frames start with the 12-byte virtio-net header (``ira.wire.venet``)
    vnet_hdr: bool = False
    #: frames without GSO carry at most ``mtu + ETH_HLEN + VLAN_HLEN`` bytes after the
    #: header; ``None``: at most ``MAX_PACKET_BYTES``
    mtu: int | None = None
    #: the GSO types accepted (those negotiated); empty: no GSO at all
    gso_types: frozenset[GsoType] = ALL_GSO_TYPES

    def __post_init__(self) -> None:
        if self.mtu is not None and not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ValueError(f"MTU {self.mtu} is outside {MIN_MTU}..{MAX_MTU}")


#: accepts every frame the wire spec accepts
PERMISSIVE = FramePolicy(vnet_hdr=True)

_NEEDS_CSUM = int(HdrFlags.NEEDS_CSUM)
_REFUSED_FLAGS = 0xFF & ~FLAGS_ACCEPTED
_KNOWN_GSO = frozenset(int(t) for t in GsoType)
_TCP = frozenset({int(GsoType.TCPV4), int(GsoType.TCPV6)})


def check_frame(frame: bytes | bytearray | memoryview, policy: FramePolicy) -> Drop | None:
    """``None`` if ``frame`` may be delivered under ``policy``; else why it must be dropped."""
    size = len(frame)
    if not policy.vnet_hdr:
        if size < ETH_HLEN:
            return Drop.TRUNCATED
        return Drop.OVERSIZE if size > _plain_limit(policy) else None
    packet = size - VNET_HDR_BYTES
    if packet < ETH_HLEN:
        return Drop.TRUNCATED
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, _ = HEADER.unpack_from(frame)
    if flags & _REFUSED_FLAGS:
        return Drop.BAD_FLAGS
    gso = gso_type & GSO_TYPE_MASK
    if gso not in _KNOWN_GSO or (gso_type & GSO_ECN and gso not in _TCP):
        return Drop.BAD_GSO_TYPE
    if gso:
        if gso not in policy.gso_types:
            return Drop.BAD_GSO_TYPE
        if not flags & _NEEDS_CSUM or gso_size == 0:
            return Drop.BAD_GSO
    if packet > (MAX_PACKET_BYTES if gso else _plain_limit(policy)):
        return Drop.OVERSIZE
    if hdr_len > packet:
        return Drop.BAD_HDR_LEN
    if flags & _NEEDS_CSUM and csum_start + csum_offset + 2 > packet:
        return Drop.BAD_CSUM
    return None


def _plain_limit(policy: FramePolicy) -> int:
    """The longest Ethernet frame without GSO that ``policy`` accepts."""
    return MAX_PACKET_BYTES if policy.mtu is None else policy.mtu + ETH_HLEN + VLAN_HLEN
