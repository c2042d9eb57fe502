"""What the virtio-net device and driver share (virtio 1.2 §5.1).  Sans-I/O.

* the device id, the queue numbers and the feature bits of a network device
  (§5.1.3) with their dependencies (§5.1.3.1);
* the configuration space (§5.1.4): ``mac``, ``status``,
  ``max_virtqueue_pairs``, ``mtu``; 12 bytes, little-endian;
* ``Offloads``: what the frames of one direction may carry in their
  virtio-net header once features are negotiated, and the ``FramePolicy``
  a receiver checks them with;
* ``NetPort``: what the device and the driver need of the network stack they
  bridge to (a TAP or an in-process endpoint, adapted by ``ira.runtime.network``).

Direction names follow virtio: *rx* (receiveq, queue 0) carries frames from
the device to the driver, *tx* (transmitq, queue 1) from the driver to the
device.  Offload features come in pairs: ``GUEST_*`` let the device send the
driver frames with a partial checksum or GSO, ``CSUM``/``HOST_*`` let the
driver send them to the device.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ira.errors import ConfigError
from ira.venet.counters import DirectionStatistics
from ira.venet.vnethdr import Drop, FramePolicy, check_frame
from ira.virtio.features import Feature
from ira.wire.venet import (
    ETH_HLEN,
    GSO_ECN,
    GSO_TYPE_MASK,
    MAX_MTU,
    MAX_PACKET_BYTES,
    MIN_MTU,
    PLAIN_HEADER,
    VLAN_HLEN,
    VNET_HDR_BYTES,
    GsoType,
    HdrFlags,
)

#: the virtio device id of a network device (§5)
NET_ID = 1
#: receiveq1: frames from the device to the driver
RX_QUEUE = 0
#: transmitq1: frames from the driver to the device
TX_QUEUE = 1
#: the MTU a driver assumes when VIRTIO_NET_F_MTU is not negotiated
DEFAULT_MTU = 1500


class NetFeature(enum.IntEnum):
    """The device-type feature bits of a network device that venet knows (§5.1.3)."""

    #: the device handles frames with a partial checksum (the driver may send them)
    CSUM = 0
    #: the driver handles frames with a partial checksum (the device may send them)
    GUEST_CSUM = 1
    #: the device reports its MTU in ``mtu``
    MTU = 3
    #: the device gives the driver's MAC in ``mac``
    MAC = 5
    #: the driver takes TCP/IPv4 GSO segments
    GUEST_TSO4 = 7
    #: the driver takes TCP/IPv6 GSO segments
    GUEST_TSO6 = 8
    #: the driver takes GSO segments with ECN
    GUEST_ECN = 9
    #: the device takes TCP/IPv4 GSO segments
    HOST_TSO4 = 11
    #: the device takes TCP/IPv6 GSO segments
    HOST_TSO6 = 12
    #: the device takes GSO segments with ECN
    HOST_ECN = 13
    #: the driver may merge receive buffers (``num_buffers``)
    MRG_RXBUF = 15
    #: the device reports link status in ``status``
    STATUS = 16
    #: ira's own: buffers hold compressed frames (``ira.wire.framedelta``); the top of
    #: the device-type range, where virtio-net has defined nothing
    IRA_HDR_DELTA = 127

    @property
    def mask(self) -> int:
        return 1 << self.value


F = NetFeature

#: features the device may send the driver (needs a header-carrying port on both ends)
GUEST_OFFLOADS = F.GUEST_CSUM.mask | F.GUEST_TSO4.mask | F.GUEST_TSO6.mask | F.GUEST_ECN.mask
#: features the driver may send the device
HOST_OFFLOADS = F.CSUM.mask | F.HOST_TSO4.mask | F.HOST_TSO6.mask | F.HOST_ECN.mask
#: every offload feature
OFFLOADS = GUEST_OFFLOADS | HOST_OFFLOADS
#: what every venet device and driver speak, offloads aside
BASE_FEATURES = F.MAC.mask | F.MTU.mask | F.STATUS.mask | F.MRG_RXBUF.mask
#: header compression, offered and accepted unless configured off
HDR_DELTA = F.IRA_HDR_DELTA.mask

#: §5.1.3.1: a feature -> the features of which at least one must come with it
_REQUIRES: dict[NetFeature, int] = {
    F.GUEST_TSO4: F.GUEST_CSUM.mask,
    F.GUEST_TSO6: F.GUEST_CSUM.mask,
    F.GUEST_ECN: F.GUEST_TSO4.mask | F.GUEST_TSO6.mask,
    F.HOST_TSO4: F.CSUM.mask,
    F.HOST_TSO6: F.CSUM.mask,
    F.HOST_ECN: F.HOST_TSO4.mask | F.HOST_TSO6.mask,
}


def feature_list(features: int) -> list[str]:
    """Names of the network and transport feature bits in ``features``."""
    names = []
    for bit in range(features.bit_length()):
        if features >> bit & 1:
            for enum in (NetFeature, Feature):
                try:
                    names.append(enum(bit).name)
                    break
                except ValueError:
                    continue
            else:
                names.append(f"bit{bit}")
    return names


def features_consistent(features: int) -> bool:
    """True if every feature in ``features`` has what it depends on (§5.1.3.1)."""
    return all(
        features & feature.mask == 0 or features & needs for feature, needs in _REQUIRES.items()
    )


# -- configuration space (§5.1.4) ----------------------------------------------

#: ``struct virtio_net_config`` up to ``mtu``: mac[6], status, max_virtqueue_pairs, mtu
CONFIG = struct.Struct("<6sHHH")
CONFIG_BYTES = CONFIG.size
#: ``status`` bit: the link is up
LINK_UP = 1


@dataclass(frozen=True, slots=True)
class NetConfig:
    """The decoded configuration space."""

    mac: bytes
    status: int
    mtu: int

    def encode(self) -> bytes:
        return CONFIG.pack(self.mac, self.status, 1, self.mtu)

    @classmethod
    def decode(cls, data: bytes) -> NetConfig:
        mac, status, _, mtu = CONFIG.unpack(data[: CONFIG.size])
        return cls(mac, status, mtu)

    @property
    def link_up(self) -> bool:
        return bool(self.status & LINK_UP)


def format_mac(mac: bytes) -> str:
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """``02:00:00:00:00:01`` as 6 bytes; ``ConfigError`` if malformed, multicast or zero.

    The one parser of MACs that people write (profiles, ``TapConfig``).
    """
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts) if all(len(p) == 2 for p in parts) else b""
    except ValueError:
        mac = b""
    if len(mac) != 6 or mac[0] & 1 or mac == bytes(6):
        raise ConfigError(
            f"bad MAC {text!r}: write a unicast MAC as six colon-separated hex pairs with "
            "an even first byte, not all zero, e.g. 02:00:00:00:00:01"
        )
    return mac


def generated_mac(*names: str) -> bytes:
    """A stable, locally administered unicast MAC derived from ``names``."""
    digest = hashlib.sha256("\0".join(("ira-venet", *names)).encode()).digest()
    return bytes([0x02, *digest[:5]])


def full_frame(mtu: int) -> int:
    """Bytes of a frame of ``mtu`` bytes of payload with its headers (virtio-net header,
    Ethernet header, a VLAN tag): a flow queue's quantum, the unit of in-flight limits."""
    return VNET_HDR_BYTES + 18 + mtu


def check_mtu(mtu: int) -> int:
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
    return mtu


# -- offloads -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offloads:
    """What the frames of one direction may carry in their virtio-net header."""

    #: NEEDS_CSUM (a partial transport checksum)
    csum: bool = False
    #: TCP/IPv4 GSO segments
    tso4: bool = False
    #: TCP/IPv6 GSO segments
    tso6: bool = False
    #: the ECN bit on GSO segments
    ecn: bool = False

    @classmethod
    def to_driver(cls, features: int) -> Offloads:
        """The device's frames to the driver under negotiated ``features`` (GUEST_*)."""
        return cls(
            bool(features & F.GUEST_CSUM.mask),
            bool(features & F.GUEST_TSO4.mask),
            bool(features & F.GUEST_TSO6.mask),
            bool(features & F.GUEST_ECN.mask),
        )

    @classmethod
    def to_device(cls, features: int) -> Offloads:
        """The driver's frames to the device under negotiated ``features`` (CSUM, HOST_*)."""
        return cls(
            bool(features & F.CSUM.mask),
            bool(features & F.HOST_TSO4.mask),
            bool(features & F.HOST_TSO6.mask),
            bool(features & F.HOST_ECN.mask),
        )

    @property
    def gso_types(self) -> frozenset[GsoType]:
        types = set()
        if self.tso4:
            types.add(GsoType.TCPV4)
        if self.tso6:
            types.add(GsoType.TCPV6)
        return frozenset(types)

    def policy(self, mtu: int) -> FramePolicy:
        """The checks a receiver of these frames makes (header always present)."""
        return FramePolicy(vnet_hdr=True, mtu=mtu, gso_types=self.gso_types)

    def refuse(self, frame: bytes, mtu: int) -> Drop | None:
        """Why a frame with a header must not go out under these offloads, or ``None``.

        What a sender checks of the frames its own stack gives it: a length
        the peer can take (the MTU unless the frame is a GSO segment, §5.1.6.2),
        and no offload the peer did not agree to.
        """
        if len(frame) < VNET_HDR_BYTES + ETH_HLEN:
            return Drop.TRUNCATED
        flags, gso_type = frame[0], frame[1]
        if flags & _NOT_SENT_FLAGS:
            return Drop.BAD_FLAGS
        if flags & _NEEDS_CSUM and not self.csum:
            return Drop.BAD_FLAGS
        gso = gso_type & GSO_TYPE_MASK
        if gso and not ((gso == _TCPV4 and self.tso4) or (gso == _TCPV6 and self.tso6)):
            return Drop.BAD_GSO_TYPE
        if gso_type & GSO_ECN and not self.ecn:
            return Drop.BAD_GSO_TYPE
        limit = MAX_PACKET_BYTES if gso else ETH_HLEN + VLAN_HLEN + mtu
        if len(frame) - VNET_HDR_BYTES > limit:
            return Drop.OVERSIZE
        return None

    def max_frame_bytes(self, mtu: int) -> int:
        """The longest frame, header included, that these offloads allow."""
        if self.gso_types:
            return VNET_HDR_BYTES + MAX_PACKET_BYTES
        return VNET_HDR_BYTES + ETH_HLEN + VLAN_HLEN + mtu


# the header bits ``refuse`` checks, as plain ints (IntFlag arithmetic costs ~1 us a frame)
_NEEDS_CSUM = int(HdrFlags.NEEDS_CSUM)
_NOT_SENT_FLAGS = ~int(HdrFlags.NEEDS_CSUM | HdrFlags.DATA_VALID)
_TCPV4, _TCPV6 = int(GsoType.TCPV4), int(GsoType.TCPV6)
#: ``num_buffers``, the header's last field
_NUM_BUFFERS = struct.Struct("<H")
_NUM_BUFFERS_AT = VNET_HDR_BYTES - _NUM_BUFFERS.size


@functools.lru_cache(maxsize=64)
def _policy(offloads: Offloads, mtu: int) -> FramePolicy:
    return offloads.policy(mtu)


def check_received(frame: bytes, offloads: Offloads, mtu: int) -> Drop | None:
    """Why a frame from the peer must be dropped, or ``None`` (virtio 1.2 §5.1.6).

    The wire's checks (``ira.venet.vnethdr.check_frame``) under what was
    negotiated, plus the offload bits that were not.
    """
    reason = offloads.refuse(frame, mtu)
    if reason is not None:
        return reason
    return check_frame(frame, _policy(offloads, mtu))


def with_num_buffers(frame: bytes | bytearray, num_buffers: int) -> bytes:
    """``frame`` with its header's ``num_buffers`` set (one copy of the frame)."""
    if len(frame) < VNET_HDR_BYTES:
        raise struct.error(f"a frame of {len(frame)} bytes has no virtio-net header")
    view = memoryview(frame)
    return b"".join((view[:_NUM_BUFFERS_AT], _NUM_BUFFERS.pack(num_buffers), view[VNET_HDR_BYTES:]))


# -- the port ---------------------------------------------------------------------


class NetPort(Protocol):
    """The network stack one end bridges to, as the device and the driver use it.

    Called only on the thread that owns the bus core.  ``read_frame`` and
    ``write_frame`` never block; frames carry the 12-byte header when
    ``vnet_hdr`` is true and are bare Ethernet frames otherwise.
    """

    @property
    def name(self) -> str: ...

    @property
    def vnet_hdr(self) -> bool: ...

    @property
    def mtu(self) -> int: ...

    def read_frame(self) -> bytes | None:
        """The next frame the stack sent, or ``None``: then ``on_readable`` runs when more come."""
        ...

    def write_frame(self, frame: bytes) -> bool:
        """Hand a frame to the stack; False if it was dropped (and counted by the port)."""
        ...

    def connect(self, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` (on the owning thread) once frames wait after a ``None`` read."""
        ...

    def set_carrier(self, on: bool) -> None: ...

    def set_offloads(self, offloads: Offloads) -> None:
        """Allow the stack to give ``read_frame`` frames with these offloads (no others)."""
        ...


class LinkPacing(Protocol):
    """What the board's link tells a device that paces itself by the line
    (``ira.runtime.backlog.LinkBacklog``); on the device's thread."""

    def unacked_bytes(self) -> int:
        """Bytes given to the link that the peer has not acknowledged yet."""
        ...

    def acked_bytes(self) -> int:
        """Bytes the peer acknowledged so far, a running total."""
        ...

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def when_acknowledged(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once, the next time the peer acknowledges something."""
        ...


def next_outgoing_frame(
    port: NetPort | None, offloads: Offloads, mtu: int, dropped: Counter[Drop]
) -> bytes | None:
    """The next frame this end's port gives that may go to the peer, with its header.

    A port without virtio-net headers gets a plain one; frames the peer's offloads
    or MTU refuse are counted in ``dropped``.
    """
    if port is None:
        return None
    while (raw := port.read_frame()) is not None:
        frame = raw if port.vnet_hdr else PLAIN_HEADER + raw
        reason = offloads.refuse(frame, mtu)
        if reason is None:
            return frame
        dropped[reason] += 1
    return None


def deliver_to_port(port: NetPort | None, frame: bytes, counts: DirectionStatistics) -> None:
    """Hand a frame from the peer (header included) to this end's port: without its
    header when the port carries none; counted in ``counts`` (delivered, or dropped
    for ``NO_PORT`` or ``BY_PORT``)."""
    if port is None:
        counts.dropped[Drop.NO_PORT] += 1
    elif port.write_frame(frame if port.vnet_hdr else frame[VNET_HDR_BYTES:]):
        counts.frames += 1
        counts.frame_bytes += len(frame) - VNET_HDR_BYTES
    else:
        counts.dropped[Drop.BY_PORT] += 1
