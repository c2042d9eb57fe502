"""Linux TAP interfaces: created, configured, read, written and removed by ira.

``Tap(TapConfig(...))`` creates a TAP interface (``IFF_TAP | IFF_NO_PI``,
optionally ``IFF_VNET_HDR`` with the 12-byte virtio 1.x header, little-endian,
and checksum/GSO offloads), optionally inside a network namespace, and gives
it a MAC, an MTU, addresses, carrier and link state.  The interface exists
while the ``Tap`` is open: closing it (or the process dying) removes it.  It is
a frame port (``ira.venet.port``): non-blocking ``read_frame``/``write_frame``
and a ``fileno`` to ``select`` on; every frame written is checked first
(``ira.venet.vnethdr``) and a bad one is dropped and counted.

Why ioctls and not pyroute2: the TAP itself can only be driven by ioctls on
its file (``TUNSETIFF``, ``TUNSETVNETHDRSZ``, ``TUNSETVNETLE``,
``TUNSETOFFLOAD``, ``TUNSETCARRIER``), pyroute2 or not; what remains is MAC,
MTU, addresses and up/down, five classic ``SIOCSIF*`` ioctls on a datagram
socket.  That is a page of standard-library code, against a large dependency
and a netlink layer we would have to trust and type.  A namespace costs no
netlink either: ``/dev/net/tun`` and the control sockets are opened on a
thread that has entered the namespace (``ira.runtime.netns.run_in_netns``), and
a TAP and a socket stay in the namespace they were created in, so every later
call works from any thread without entering it again.  The price is one IPv4
address per interface (``SIOCSIFADDR`` sets the primary one; any number of
IPv6 ones), which is all venet needs.

Errors: ``ConfigError`` for a bad value in ``TapConfig``; ``TransportError``,
one line naming the fix, when the kernel refuses (no ``/dev/net/tun``, not
root, name taken).
"""

from __future__ import annotations

import enum
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

from ira.errors import ConfigError, TransportError
from ira.runtime.netns import run_in_netns
from ira.venet.netspec import parse_mac
from ira.venet.port import Buffer, PortCounters, PortStatistics
from ira.venet.vnethdr import Drop, FramePolicy
from ira.wire.venet import MAX_MTU, MAX_PACKET_BYTES, MIN_MTU, VNET_HDR_BYTES

log = logging.getLogger(__name__)

TUN_DEVICE = "/dev/net/tun"

# <linux/if_tun.h>
_TUNSETIFF = 0x400454CA
_TUNSETOFFLOAD = 0x400454D0
_TUNSETVNETHDRSZ = 0x400454D8
_TUNSETVNETLE = 0x400454DC
_TUNSETCARRIER = 0x400454E2
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_TUN_EXCL = 0x8000

# <linux/sockios.h>, <net/if.h>, <net/if_arp.h>
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCSIFADDR = 0x8916
_SIOCSIFNETMASK = 0x891C
_SIOCGIFMTU = 0x8921
_SIOCSIFMTU = 0x8922
_SIOCSIFHWADDR = 0x8924
_SIOCGIFHWADDR = 0x8927
_SIOCGIFINDEX = 0x8933
_IFF_UP = 0x1
_ARPHRD_ETHER = 1

_IFNAMSIZ = 16
_IFREQ_BYTES = 40  # struct ifreq on Linux: the name, then a 24-byte union

#: the largest MTU Linux allows on a TAP: 65535 less the Ethernet header
TAP_MAX_MTU = 65521
#: what one read can return: the header and the largest GSO segment
READ_BUFFER_BYTES = VNET_HDR_BYTES + MAX_PACKET_BYTES


class Offload(enum.IntFlag):
    """``TUNSETOFFLOAD`` bits (``TUN_F_*``): what the kernel may hand to ``read_frame``.

    Frames *written* may use any offload the header describes, whatever is set here.
    """

    NONE = 0
    #: frames may carry a partial checksum (NEEDS_CSUM)
    CSUM = 0x01
    #: TCP/IPv4 segments of up to 64 KiB (needs CSUM)
    TSO4 = 0x02
    #: TCP/IPv6 segments of up to 64 KiB (needs CSUM)
    TSO6 = 0x04
    #: TSO segments with ECN
    TSO_ECN = 0x08
    #: UDP fragmentation offload (UFO)
    UFO = 0x10
    #: UDP segmentation offload for IPv4 (USO, Linux 6.2+)
    USO4 = 0x20
    #: UDP segmentation offload for IPv6 (USO, Linux 6.2+)
    USO6 = 0x40


#: checksum and TCP segmentation: what a fast link wants
TCP_OFFLOADS = Offload.CSUM | Offload.TSO4 | Offload.TSO6 | Offload.TSO_ECN


@dataclass(frozen=True, slots=True)
class TapConfig:
    """How to create a TAP.  Every field but ``name`` has a usable default."""

    #: interface name, at most 15 bytes; a ``%d`` is replaced by the first free number
    name: str = "ira%d"
    #: the network namespace to create it in: a name under /run/netns, a path, or a
    #: ``NetNs``; ``None``: the caller's
    netns: str | os.PathLike[str] | None = None
    #: 68..65521 (``TAP_MAX_MTU``); ``None``: the kernel's default (1500)
    mtu: int | None = None
    #: addresses with prefix length: at most one IPv4 (``192.0.2.1/24``), any IPv6
    addresses: tuple[str, ...] = ()
    #: ``02:00:00:00:00:01``; ``None``: a random one from the kernel
    mac: str | None = None
    #: bring the interface up (administratively) once configured
    up: bool = True
    #: start with carrier (the link is there); ``set_carrier`` changes it
    carrier: bool = True
    #: frames start with the 12-byte virtio-net header (``ira.wire.venet``)
    vnet_hdr: bool = False
    #: offloads the kernel may use in frames it hands us; needs ``vnet_hdr``
    offloads: Offload = Offload.NONE

    def __post_init__(self) -> None:
        raw = self.name.encode()
        if not 1 <= len(raw) < _IFNAMSIZ or self.name in (".", "..") or "/" in self.name:
            raise ConfigError(f"bad TAP name {self.name!r}: use 1-15 bytes without / or spaces")
        if any(c.isspace() or c == ":" for c in self.name):
            raise ConfigError(f"bad TAP name {self.name!r}: use 1-15 bytes without / or spaces")
        if self.mtu is not None:
            _check_mtu(self.mtu)
        if self.offloads and not self.vnet_hdr:
            raise ConfigError("offloads need vnet_hdr=True (they travel in the virtio-net header)")
        if self.offloads & ~Offload.CSUM and not self.offloads & Offload.CSUM:
            raise ConfigError("segmentation offloads need Offload.CSUM too")
        v4 = [a for a in (parse_cidr(c) for c in self.addresses) if a.version == 4]
        if len(v4) > 1:
            raise ConfigError("at most one IPv4 address per TAP")
        if self.mac is not None:
            parse_mac(self.mac)


def _check_mtu(mtu: int) -> None:
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
    if mtu > TAP_MAX_MTU:
        raise ConfigError(
            f"MTU {mtu} is over {TAP_MAX_MTU}, the most Linux allows on a TAP "
            "(65535 less the Ethernet header): use at most that"
        )


def parse_cidr(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """``192.0.2.1/24`` or ``2001:db8::1/64``; ``ConfigError`` otherwise."""
    if "/" not in cidr:
        raise ConfigError(f"address {cidr!r} has no prefix length: write it as 192.0.2.1/24")
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise ConfigError(f"bad address {cidr!r}: {exc}") from exc


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return name.encode().ljust(_IFNAMSIZ, b"\0") + payload.ljust(_IFREQ_BYTES - _IFNAMSIZ, b"\0")


def _fail(what: str, exc: OSError) -> TransportError:
    """A one-line error for a refused ioctl."""
    if exc.errno == errno.EPERM:
        return TransportError(f"{what} needs CAP_NET_ADMIN: run as root")
    return TransportError(f"{what}: {exc.strerror or exc}")


class _Handles:
    """The TAP's file and its control sockets, opened where the TAP lives."""

    def __init__(self, config: TapConfig) -> None:
        self.fd = _open_tun()
        self.sock4: socket.socket | None = None
        self.sock6: socket.socket | None = None
        try:
            flags = _IFF_TAP | _IFF_NO_PI | _IFF_TUN_EXCL
            if config.vnet_hdr:
                flags |= _IFF_VNET_HDR
            try:
                answer = fcntl.ioctl(
                    self.fd, _TUNSETIFF, _ifreq(config.name, struct.pack("H", flags))
                )
            except OSError as exc:
                raise _tunsetiff_error(config.name, exc) from exc
            self.name = answer[:_IFNAMSIZ].rstrip(b"\0").decode()
            if config.vnet_hdr:
                try:
                    fcntl.ioctl(self.fd, _TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_BYTES))
                    fcntl.ioctl(self.fd, _TUNSETVNETLE, struct.pack("i", 1))
                except OSError as exc:
                    raise _fail(f"setting the virtio-net header of {self.name}", exc) from exc
            try:
                fcntl.ioctl(self.fd, _TUNSETOFFLOAD, int(config.offloads))
            except OSError as exc:
                raise _fail(
                    f"offloads {config.offloads!r} on {self.name} (this kernel lacks some)", exc
                ) from exc
            self.sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                self.sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError:  # IPv6 disabled: only IPv6 addresses need it
                self.sock6 = None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for sock in (self.sock4, self.sock6):
            if sock is not None:
                sock.close()
        self.sock4 = self.sock6 = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_tun() -> int:
    try:
        return os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise TransportError(
            f"no {TUN_DEVICE}: load the tun module (modprobe tun) or use a kernel with "
            "CONFIG_TUN (in a container: pass the device in, e.g. --device /dev/net/tun)"
        ) from exc
    except PermissionError as exc:
        raise TransportError(f"{TUN_DEVICE} is not open to this user: run as root") from exc
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            raise TransportError(
                f"{TUN_DEVICE} exists but the kernel has no TUN/TAP driver: modprobe tun"
            ) from exc
        raise TransportError(f"cannot open {TUN_DEVICE}: {exc.strerror}") from exc


def _tunsetiff_error(name: str, exc: OSError) -> TransportError:
    if exc.errno == errno.EBUSY:
        return TransportError(
            f"interface name {name} is taken: choose another name or remove it (ip link del {name})"
        )
    if exc.errno == errno.EPERM:
        return TransportError(f"creating TAP {name} needs CAP_NET_ADMIN: run as root")
    return TransportError(f"cannot create TAP {name}: {exc.strerror}")


class Tap:
    """A TAP interface that exists while this object is open (see the module docstring)."""

    def __init__(self, config: TapConfig) -> None:
        self._config = config
        if config.netns is None:
            handles = _Handles(config)
        else:
            handles = run_in_netns(config.netns, lambda: _Handles(config))
        self._h = handles
        self._name = handles.name
        self._buf = bytearray(READ_BUFFER_BYTES)
        try:
            self._ifindex = struct.unpack_from("i", self._ioctl(_SIOCGIFINDEX, "index"), 16)[0]
            if config.mac is not None:
                self.set_mac(config.mac)
            if config.mtu is not None:
                self._set_mtu(config.mtu)
            mtu = struct.unpack_from("i", self._ioctl(_SIOCGIFMTU, "MTU"), 16)[0]
            self._counters = PortCounters(FramePolicy(vnet_hdr=config.vnet_hdr, mtu=mtu))
            for cidr in config.addresses:
                self.add_address(cidr)
            self.set_carrier(config.carrier)
            self.set_up(config.up)
        except BaseException:
            handles.close()
            raise
        log.info("TAP %s created (mtu %d, vnet_hdr %s)", self._name, mtu, config.vnet_hdr)

    # -- the frame port --

    @property
    def name(self) -> str:
        return self._name

    @property
    def vnet_hdr(self) -> bool:
        return self._config.vnet_hdr

    @property
    def mtu(self) -> int:
        mtu = self._counters.policy.mtu
        assert mtu is not None
        return mtu

    @property
    def closed(self) -> bool:
        return self._h.fd < 0

    def fileno(self) -> int:
        self._check_open()
        return self._h.fd

    def read_frame(self) -> bytes | None:
        """The next frame the kernel sent out of the interface, or ``None`` if none is waiting.

        With ``vnet_hdr`` the frame starts with the header; the kernel never writes
        ``num_buffers``, which the reused buffer keeps at 0.
        """
        self._check_open()
        try:
            size = os.readv(self._h.fd, [self._buf])
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._gone(exc) from exc
        self._counters.read(size)
        return bytes(memoryview(self._buf)[:size])

    def write_frame(self, frame: Buffer) -> bool:
        """Hand a frame to the kernel as if it had arrived on the interface.

        ``False`` if it was dropped (counted in ``statistics().dropped``): malformed,
        interface down, or refused by the kernel.
        """
        self._check_open()
        if not self._counters.check(frame):
            return False
        try:
            os.write(self._h.fd, frame)
        except (BlockingIOError, InterruptedError):
            self._counters.drop(Drop.QUEUE_FULL)
            return False
        except OSError as exc:
            match exc.errno:
                case errno.EIO:
                    self._counters.drop(Drop.INTERFACE_DOWN)
                case errno.EINVAL | errno.EFAULT | errno.EMSGSIZE:
                    self._counters.drop(Drop.KERNEL_REJECTED)
                case errno.ENOBUFS | errno.ENOMEM:
                    self._counters.drop(Drop.QUEUE_FULL)
                case _:
                    raise self._gone(exc) from exc
            return False
        self._counters.written(len(frame))
        return True

    def statistics(self) -> PortStatistics:
        return self._counters.statistics()

    def close(self) -> None:
        """Close the TAP; the kernel removes the interface.  Idempotent."""
        if not self.closed:
            self._h.close()
            log.info("TAP %s removed", self._name)

    def __enter__(self) -> Tap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Tap({self._name!r}{', closed' if self.closed else ''})"

    # -- configuration --

    @property
    def ifindex(self) -> int:
        return int(self._ifindex)

    @property
    def mac(self) -> str:
        answer = self._ioctl(_SIOCGIFHWADDR, "the MAC")
        return answer[18:24].hex(":")

    @property
    def is_up(self) -> bool:
        (flags,) = struct.unpack_from("H", self._ioctl(_SIOCGIFFLAGS, "flags"), 16)
        return bool(flags & _IFF_UP)

    def set_mac(self, mac: str) -> None:
        payload = struct.pack("H", _ARPHRD_ETHER) + parse_mac(mac)
        self._ioctl(_SIOCSIFHWADDR, f"setting MAC {mac}", payload)

    def set_mtu(self, mtu: int) -> None:
        """Set the MTU (68..``TAP_MAX_MTU``); frames written without GSO must fit it."""
        _check_mtu(mtu)
        self._set_mtu(mtu)
        self._counters.set_mtu(mtu)

    def _set_mtu(self, mtu: int) -> None:
        self._ioctl(_SIOCSIFMTU, f"setting MTU {mtu}", struct.pack("i", mtu))

    def add_address(self, cidr: str) -> None:
        """Add an address with its prefix; an IPv4 one replaces the IPv4 address."""
        iface = parse_cidr(cidr)
        if iface.version == 4:
            sockaddr = struct.Struct("HH4s8x")
            addr = sockaddr.pack(socket.AF_INET, 0, iface.ip.packed)
            mask = sockaddr.pack(socket.AF_INET, 0, iface.netmask.packed)
            self._ioctl(_SIOCSIFADDR, f"setting address {cidr}", addr)
            self._ioctl(_SIOCSIFNETMASK, f"setting netmask of {cidr}", mask)
            return
        if self._h.sock6 is None:
            raise TransportError(f"cannot add {cidr} to {self._name}: IPv6 is disabled here")
        in6_ifreq = struct.pack("16sIi", iface.ip.packed, iface.network.prefixlen, self._ifindex)
        try:
            fcntl.ioctl(self._h.sock6, _SIOCSIFADDR, in6_ifreq)
        except OSError as exc:
            raise _fail(f"adding {cidr} to {self._name}", exc) from exc

    def set_up(self, up: bool = True) -> None:
        """Bring the interface up or down (administratively)."""
        (flags,) = struct.unpack_from("H", self._ioctl(_SIOCGIFFLAGS, "flags"), 16)
        flags = flags | _IFF_UP if up else flags & ~_IFF_UP
        self._ioctl(
            _SIOCSIFFLAGS, "bringing it up" if up else "bringing it down", struct.pack("H", flags)
        )

    def set_offloads(self, offloads: Offload) -> None:
        """The offloads the kernel may use in frames it hands ``read_frame`` from now on."""
        if offloads and not self.vnet_hdr:
            raise ConfigError("offloads need vnet_hdr=True (they travel in the virtio-net header)")
        if offloads & ~Offload.CSUM and not offloads & Offload.CSUM:
            raise ConfigError("segmentation offloads need Offload.CSUM too")
        self._check_open()
        try:
            fcntl.ioctl(self._h.fd, _TUNSETOFFLOAD, int(offloads))
        except OSError as exc:
            raise _fail(
                f"offloads {offloads!r} on {self._name} (this kernel lacks some)", exc
            ) from exc

    def set_carrier(self, on: bool) -> None:
        """Carrier on (the link is there) or off (the stack sees NO-CARRIER)."""
        self._check_open()
        try:
            fcntl.ioctl(self._h.fd, _TUNSETCARRIER, struct.pack("i", int(on)))
        except OSError as exc:
            raise _fail(f"setting the carrier of {self._name} (Linux 4.19+)", exc) from exc

    # -- internals --

    def _check_open(self) -> None:
        if self.closed:
            raise TransportError(f"TAP {self._name} is closed")

    def _ioctl(self, request: int, what: str, payload: bytes = b"") -> bytes:
        self._check_open()
        assert self._h.sock4 is not None
        try:
            return fcntl.ioctl(self._h.sock4, request, _ifreq(self._name, payload))
        except OSError as exc:
            raise _fail(f"{what} on {self._name}", exc) from exc

    def _gone(self, exc: OSError) -> TransportError:
        if exc.errno == errno.EBADFD:
            return TransportError(f"TAP {self._name} was deleted from outside ira: create it again")
        return TransportError(f"TAP {self._name}: {exc.strerror}")
