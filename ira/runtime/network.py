"""venet on real links: TAPs and endpoints served on a link runtime's thread.

The device (``ira.venet.device``) and the driver (``ira.venet.driver``) are
sans-I/O and run on the thread that owns the bus core.  This module gives
them their ``NetPort``:

``LoopPort``
    adapts a frame port (a ``Tap`` or a ``FrameEndpoint``) to ``NetPort``.  A
    watcher thread waits until the port's descriptor is readable and then
    posts the consumer's ``on_readable`` to the runtime, once: it waits again
    only after a ``read_frame`` came back empty (as NAPI re-enables its
    interrupt), so a consumer that stops reading because the peer has no
    buffers leaves the frames in the kernel and costs nothing.  Carrier is
    the consumer's wish *and* the link being up (``link_changed``).
    Offloads are set with ``TUNSETOFFLOAD`` on a TAP.

``BoardNet``
    the board's interface: a port created before the devices, handed to the
    ``virtio-net`` devices of the profile (``port_for``), carrier following
    the link's events (``on_event``).  The network device's ``mtu`` option,
    when it has one, is applied to it whenever a (reloaded) profile hands it
    to a device, unless ``--mtu`` fixed the MTU.

``HostNet``
    the host's interface on one link: created when the first network device
    becomes ready (with the MAC and MTU it gives), kept across
    rediscoveries and resets (the next ready device reuses it and gives it
    its MAC and MTU), carrier off while no device is ready or the link is
    down.  An MTU the interface cannot take is said in one line (the
    interface keeps the largest it can, or its own).

``TapFactory`` makes the TAPs (in a network namespace when asked);
``tap_settings`` turns ``--tap/--ip/--mtu`` into one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ira.busmodel.events import BusReady, HostRegistered
from ira.errors import ConfigError, IraError, TransportError
from ira.link.events import LinkDown, LinkUp, PeerRestarted
from ira.runtime.profile import DeviceSpec
from ira.runtime.tap import TAP_MAX_MTU, Offload, Tap, TapConfig
from ira.venet.counters import NetDriverStatistics
from ira.venet.driver import InterfaceSettings, NetDriverConfig, VirtioNetClient
from ira.venet.netspec import NET_ID, NetPort, Offloads, check_mtu, format_mac, generated_mac
from ira.venet.port import FramePort, PortStatistics
from ira.virtio.host import VirtioClient

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]
"""Runs a function on the thread that owns the bus core (``LinkRuntime.post``)."""


def tap_offloads(offloads: Offloads) -> Offload:
    """The ``TUNSETOFFLOAD`` bits that let the kernel hand over frames with ``offloads``."""
    bits = Offload.NONE
    if offloads.csum:
        bits |= Offload.CSUM
        if offloads.tso4:
            bits |= Offload.TSO4
        if offloads.tso6:
            bits |= Offload.TSO6
        if offloads.ecn and (offloads.tso4 or offloads.tso6):
            bits |= Offload.TSO_ECN
    return bits


class LoopPort:
    """A frame port served on a runtime's thread (see the module docstring)."""

    def __init__(self, port: FramePort, post: Post) -> None:
        self.port = port
        self._post = post
        self._on_readable: Callable[[], None] | None = None
        self._armed = threading.Event()
        self._armed.set()
        self._stop = threading.Event()
        self._wanted = False
        self._link_up = True
        self._carrier: bool | None = None
        self._thread = threading.Thread(
            target=self._watch, name=f"ira-port {port.name}", daemon=True
        )
        self._thread.start()

    # -- NetPort --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.port.name

    @property
    def vnet_hdr(self) -> bool:
        return self.port.vnet_hdr

    @property
    def mtu(self) -> int:
        return self.port.mtu

    def read_frame(self) -> bytes | None:
        frame = self.port.read_frame()
        if frame is None:
            self._armed.set()
        return frame

    def write_frame(self, frame: bytes) -> bool:
        return self.port.write_frame(frame)

    def connect(self, on_readable: Callable[[], None]) -> None:
        self._on_readable = on_readable

    def set_carrier(self, on: bool) -> None:
        self._wanted = on
        self._apply_carrier()

    def set_offloads(self, offloads: Offloads) -> None:
        if isinstance(self.port, Tap):  # an endpoint hands over whatever its peer wrote
            self.port.set_offloads(tap_offloads(offloads))

    # -- for the glue ------------------------------------------------------------

    @property
    def carrier(self) -> bool:
        return bool(self._carrier)

    def link_changed(self, up: bool) -> None:
        """The link went down or came back: no carrier while it is down."""
        self._link_up = up
        self._apply_carrier()

    def statistics(self) -> PortStatistics:
        return self.port.statistics()

    def close(self) -> None:
        """Stop watching and close the port (a TAP disappears).  Idempotent."""
        self._stop.set()
        self._armed.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self.port.close()

    def _apply_carrier(self) -> None:
        carrier = self._wanted and self._link_up
        if carrier != self._carrier:
            self._carrier = carrier
            self.port.set_carrier(carrier)
            log.info("%s: carrier %s", self.name, "on" if carrier else "off")

    def _watch(self) -> None:
        fd = self.port.fileno()
        while not self._stop.is_set():
            if not self._armed.wait(0.25) or self._stop.is_set():
                continue
            try:
                readable, _, _ = select.select([fd], [], [], 0.25)
            except (OSError, ValueError):
                return  # closed under us
            if not readable:
                continue
            self._armed.clear()
            try:
                self._post(self._readable)
            except IraError:
                return  # the runtime stopped; its owner reports why

    def _readable(self) -> None:
        if self._on_readable is not None:
            self._on_readable()


# -- TAPs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TapSettings:
    """An interface ira creates for one end (``--tap NAME --ip CIDR --mtu N``)."""

    name: str
    addresses: tuple[str, ...] = ()
    #: None: the device's (host) or 1500 (board)
    mtu: int | None = None
    #: carry virtio-net headers and offer checksum/GSO offloads
    offloads: bool = True
    #: the network namespace to create it in (None: this process's)
    netns: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        """Checked before any port or interface is opened (``ConfigError`` naming the fix)."""
        for address in self.addresses:
            try:
                ipaddress.ip_interface(address)
            except ValueError:
                raise ConfigError(
                    f"--ip {address}: not an address with a prefix length, like 10.0.0.1/24 "
                    "(IPv4 prefixes are 0..32, IPv6 0..128)"
                ) from None
        if self.mtu is not None:
            try:
                check_mtu(self.mtu)
            except ConfigError as exc:
                raise ConfigError(f"--mtu {self.mtu}: {exc}") from None


def tap_settings(
    name: str, ip: str | None, mtu: int | None = None, *, offloads: bool = True
) -> TapSettings:
    return TapSettings(name, (ip,) if ip else (), mtu, offloads)


def open_tap(settings: TapSettings, *, mac: bytes | None, mtu: int | None) -> Tap:
    """Create the TAP of ``settings`` (carrier off until a device is live)."""
    return Tap(
        TapConfig(
            name=settings.name,
            netns=settings.netns,
            mtu=mtu,
            addresses=settings.addresses,
            mac=None if mac is None else format_mac(mac),
            carrier=False,
            vnet_hdr=settings.offloads,
        )
    )


# -- the board ------------------------------------------------------------------------


class BoardNet:
    """The board's network interface, handed to its ``virtio-net`` devices."""

    def __init__(self, port: FramePort, post: Post, *, fixed_mtu: bool = False) -> None:
        """``fixed_mtu``: the port keeps its MTU whatever the profile's device says."""
        self.loop_port = LoopPort(port, post)
        self._given: str | None = None
        self._fixed_mtu = fixed_mtu

    @classmethod
    def with_tap(
        cls, settings: TapSettings, board: str, post: Post, *, fixed_mtu: bool = False
    ) -> BoardNet:
        """A TAP named by ``settings``, its own MAC derived from the board's name."""
        tap = open_tap(settings, mac=generated_mac(board, "board"), mtu=settings.mtu or 1500)
        return cls(tap, post, fixed_mtu=fixed_mtu)

    def port_for(self, spec: DeviceSpec) -> NetPort | None:
        """The port for a network device: the first one to ask gets it, later ones none.

        The port takes the device's ``mtu`` option first, when it has one, so
        a reloaded profile's MTU reaches the interface and, through the
        device, the host's.
        """
        if self._given not in (None, spec.name):
            log.warning("%s: only one network device gets %s", spec.name, self.loop_port.name)
            return None
        self._given = spec.name
        wanted = dict(spec.options).get("mtu")
        port = self.loop_port.port
        if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted != port.mtu:
            if self._fixed_mtu:
                log.warning(
                    "%s keeps MTU %d (--mtu); %s's mtu %d is not applied",
                    port.name,
                    port.mtu,
                    spec.name,
                    wanted,
                )
            else:
                _apply_mtu(port, wanted, f"{spec.name}'s")
        return self.loop_port

    def on_event(self, event: object) -> None:
        """A board event (link down/up, host registered): the carrier follows the link."""
        match event:
            case LinkDown():
                self.loop_port.link_changed(False)
            case LinkUp() | PeerRestarted() | HostRegistered():
                self.loop_port.link_changed(True)
            case _:
                pass

    def statistics(self) -> PortStatistics:
        return self.loop_port.statistics()

    def close(self) -> None:
        self.loop_port.close()


# -- the host ---------------------------------------------------------------------------


class HostNet:
    """The host's network interface on one link (see the module docstring)."""

    def __init__(
        self,
        make_port: Callable[[InterfaceSettings], FramePort],
        *,
        vnet_hdr: bool,
        config: NetDriverConfig | None = None,
        fixed_mtu: bool = False,
    ) -> None:
        """``make_port`` creates the interface the first time a device is ready;
        ``fixed_mtu``: later devices' MTUs are not applied to it."""
        self._make_port = make_port
        self._vnet_hdr = vnet_hdr
        self._config = config
        self._fixed_mtu = fixed_mtu
        self._post: Post | None = None
        self.loop_port: LoopPort | None = None
        self.client: VirtioNetClient | None = None
        self._link_up = True
        self._lock = threading.Lock()

    @classmethod
    def with_tap(cls, settings: TapSettings, config: NetDriverConfig | None = None) -> HostNet:
        def make(s: InterfaceSettings) -> FramePort:
            mtu = settings.mtu or s.mtu
            if mtu > TAP_MAX_MTU:
                log.warning(
                    "TAP %s gets MTU %d, not the device's %d: the most Linux allows on a TAP",
                    settings.name,
                    TAP_MAX_MTU,
                    mtu,
                )
                mtu = TAP_MAX_MTU
            return open_tap(settings, mac=s.mac, mtu=mtu)

        if config is None:
            config = NetDriverConfig(offloads=settings.offloads)
        return cls(
            make, vnet_hdr=settings.offloads, config=config, fixed_mtu=settings.mtu is not None
        )

    def bind(self, post: Post) -> None:
        """Serve on the runtime that ``post`` hands functions to (before any device)."""
        self._post = post

    def clients(self) -> Mapping[int, Callable[[], VirtioClient]]:
        """What ``VirtioHostDriver`` needs: the network device id and a client factory."""
        return {NET_ID: self._new_client}

    def on_event(self, event: object) -> None:
        """A bus event of this link: the carrier follows the link."""
        match event:
            case LinkDown():
                self._set_link(False)
            case LinkUp() | PeerRestarted() | BusReady():
                self._set_link(True)
            case _:
                pass

    @property
    def carrier(self) -> bool:
        port = self.loop_port
        return port is not None and port.carrier

    def statistics(self) -> tuple[NetDriverStatistics | None, PortStatistics | None]:
        """The driver's and the port's counters, if there are a driver and a port
        (call on the runtime's thread)."""
        return (
            None if self.client is None else self.client.statistics(),
            None if self.loop_port is None else self.loop_port.statistics(),
        )

    def close(self) -> None:
        with self._lock:
            port, self.loop_port = self.loop_port, None
        if port is not None:
            port.close()

    def _set_link(self, up: bool) -> None:
        self._link_up = up
        if self.loop_port is not None:
            self.loop_port.link_changed(up)

    def _new_client(self) -> VirtioClient:
        if self.client is not None and self.client.is_ready:
            log.warning("a second network device on this link gets no interface")
            return VirtioClient()  # binds, moves nothing
        self.client = VirtioNetClient(self._open, vnet_hdr=self._vnet_hdr, config=self._config)
        return self.client

    def _open(self, settings: InterfaceSettings) -> NetPort:
        """The interface for a device that became ready: created once, then reused."""
        if self._post is None:
            raise TransportError("HostNet.bind() was not called before the device appeared")
        port = self.loop_port
        if port is None:
            frame_port = self._make_port(settings)
            with self._lock:
                port = self.loop_port = LoopPort(frame_port, self._post)
            port.link_changed(self._link_up)
            log.info("interface %s up for the board's network device", port.name)
        else:
            self._reconfigure(port.port, settings)
        return port

    def _reconfigure(self, port: FramePort, settings: InterfaceSettings) -> None:
        """Give an interface that outlived its device (or its reset) the device's MAC and MTU."""
        mac = None if settings.mac is None else format_mac(settings.mac)
        if isinstance(port, Tap) and mac is not None and port.mac != mac:
            port.set_mac(mac)
        if port.mtu == settings.mtu:
            return
        if self._fixed_mtu:
            log.warning(
                "%s keeps its MTU %d; the device's is now %d", port.name, port.mtu, settings.mtu
            )
            return
        _apply_mtu(port, settings.mtu, "the device's")


def _apply_mtu(port: FramePort, mtu: int, whose: str) -> None:
    """Set ``port``'s MTU to ``mtu``, or as near as a TAP allows; one line about it either way."""
    old = port.mtu
    if isinstance(port, Tap) and mtu > TAP_MAX_MTU:
        log.warning(
            "%s takes MTU %d, not %s %d: the most Linux allows on a TAP",
            port.name,
            TAP_MAX_MTU,
            whose,
            mtu,
        )
        mtu = TAP_MAX_MTU
    try:
        port.set_mtu(mtu)
    except IraError as exc:
        log.warning("%s keeps MTU %d, not %s %d: %s", port.name, old, whose, mtu, exc)
        return
    log.info("%s: MTU %d -> %d (%s)", port.name, old, mtu, whose)


__all__ = [
    "BoardNet",
    "HostNet",
    "LoopPort",
    "TapSettings",
    "open_tap",
    "tap_offloads",
    "tap_settings",
]
