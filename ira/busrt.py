"""The bus model over real links: a board service and host clients, thread-safe.

``BoardService`` runs a ``Connector`` (the board's container of devices, built
from a ``Profile``) over one link; ``HostClient`` runs a ``Bus`` over one link
and offers blocking calls; ``HostService`` runs one ``HostClient`` per link in
one process.  Each link is one ``LinkRuntime``: its loop thread owns the link
core and the bus-model core, so neither needs locks.  The methods here may be
called from any thread: they hand a function to the loop thread
(``runtime.call``/``post``) and wait on a future, which the loop completes
when the bus reports the outcome (``CallCompleted``, ``DeviceOpened``,
``CallFailed``).  Every wait has a timeout.

Both services are context managers: the loop starts on entry and is stopped on
exit, and an exception that stopped the loop is re-raised to the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

from ira.busmodel.bus import Bus
from ira.busmodel.config import BusConfig, ConnectorConfig
from ira.busmodel.connector import Connector
from ira.busmodel.device import Device
from ira.busmodel.devices.echo import EchoFunc
from ira.busmodel.drivers import DriverRegistry
from ira.busmodel.events import (
    BusEvent,
    BusReady,
    CallCompleted,
    CallFailed,
    ConnectorEvent,
    DeviceAdded,
    DeviceInfo,
    DeviceOpened,
    DeviceRemoved,
    HostRegistered,
    RegistrationRefused,
    SignalReceived,
    WindowAttached,
    WindowDetached,
)
from ira.busmodel.profile import (
    DEFAULT_PROFILE,
    DeviceContext,
    DeviceSpec,
    Profile,
    build_device,
)
from ira.errors import (
    DevcallTimeout,
    IraError,
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
)
from ira.link.config import LinkConfig
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.link.runtime import LinkRuntime, Upper
from ira.link.transport import Transport, open_transport
from ira.venet.netspec import NetPort
from ira.virtio.calls import VIRTIO_TYPE
from ira.virtio.entropy import ENTROPY_ID, EntropyClient
from ira.virtio.features import FeaturePolicy
from ira.virtio.host import VirtioClient, VirtioDeviceInfo, VirtioHostDriver

log = logging.getLogger(__name__)

T = TypeVar("T")

#: host-side virtio clients by virtio device id (``VirtioHostDriver``)
VirtioClients = Mapping[int, Callable[[], VirtioClient]]
#: the virtio clients every host binds (``HostClient(virtio_clients=...)`` adds to them)
VIRTIO_CLIENTS: VirtioClients = {ENTROPY_ID: EntropyClient}

#: how long a caller waits beyond a request's own timeout before giving up on the loop
_GRACE_S = 2.0


def _open(link: str | Transport) -> Transport:
    return open_transport(link) if isinstance(link, str) else link


def _link_numbers(runtime: LinkRuntime) -> Mapping[str, int | float]:
    """The link core's numeric statistics (call on the loop thread)."""
    stats = dataclasses.asdict(runtime.core.statistics())
    return {
        k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


# -- board ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """What applying a profile did, by device name."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


class _LinkService:
    """What a board service and a host client share: one link, one loop thread
    (a ``LinkRuntime`` driving the link core and the service's bus core)."""

    _role = "service"

    def __init__(
        self,
        link: str | Transport,
        link_config: LinkConfig | None,
        rng: random.Random | None,
    ) -> None:
        self.name = link if isinstance(link, str) else link.name
        self._link = link
        self._link_config = link_config
        self._rng = rng
        self._runtime: LinkRuntime | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runtime = self._runtime
        if runtime is not None:
            runtime.__exit__(exc_type, exc, tb)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the loop and close the link (the peer sees this end go)."""
        if self._runtime is not None:
            self._runtime.stop()

    @property
    def runtime(self) -> LinkRuntime:
        if self._runtime is None:
            raise LocalProtocolError(f"{self.name}: the {self._role} is not started")
        return self._runtime

    def _new_runtime(self, upper: Upper, on_upper_event: Callable[[object], None]) -> LinkRuntime:
        """Open the link and build (not start) the runtime that drives ``upper``."""
        self._runtime = LinkRuntime(
            _open(self._link),
            self._link_config,
            upper=upper,
            rng=self._rng,
            on_upper_event=on_upper_event,
        )
        return self._runtime


class BoardService(_LinkService):
    """A board: the devices of a profile, exposed over one link."""

    def __init__(
        self,
        link: str | Transport,
        profile: Profile = DEFAULT_PROFILE,
        *,
        link_config: LinkConfig | None = None,
        connector_config: ConnectorConfig | None = None,
        on_event: Callable[[ConnectorEvent], None] | None = None,
        rng: random.Random | None = None,
        net_port: Callable[[DeviceSpec], NetPort | None] | None = None,
    ) -> None:
        """``net_port``: the network interface for the profile's ``virtio-net`` devices."""
        super().__init__(link, link_config, rng)
        self._net_port = net_port
        self._profile = profile
        self._on_event = on_event
        self.connector = Connector(connector_config)
        self._started_at = time.monotonic()
        #: device name -> (spec, board name it was built for, device id); loop thread only
        self._installed: dict[str, tuple[DeviceSpec, str, int]] = {}

    _role = "board service"

    # -- lifecycle ------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        runtime = self._new_runtime(self.connector, self._connector_event)
        # install the devices before the loop runs (no other thread touches the
        # connector yet), so a host never meets this board with an empty container
        try:
            self._apply(self._profile)
        except BaseException:
            runtime.stop()  # closes the transport
            raise
        runtime.start()

    # -- devices --------------------------------------------------------

    @property
    def profile(self) -> Profile:
        return self._profile

    def apply_profile(self, profile: Profile) -> ProfileChange:
        """Make the container match ``profile`` (hotswap); returns what changed."""
        change = self.runtime.call(lambda: self._apply(profile))
        self._profile = profile
        return change

    def devices(self) -> dict[str, int]:
        """Device name -> device id, of the devices the profile put in the container."""
        return self.runtime.call(lambda: {n: e[2] for n, e in self._installed.items()})

    def call(self, fn: Callable[[Connector], T]) -> T:
        """Run ``fn(connector)`` on the loop thread (to reach device models safely)."""
        return self.runtime.call(lambda: fn(self.connector))

    def statistics(self) -> dict[str, int]:
        return self.runtime.call(self.connector.statistics)

    def _apply(self, profile: Profile) -> ProfileChange:
        now = time.monotonic()
        runtime = self.runtime
        ctx = DeviceContext(
            board=profile.board,
            started_at=self._started_at,
            link_statistics=lambda: _link_numbers(runtime),
            net_port=self._net_port,
        )
        removed: list[str] = []
        for name, (spec, board, device_id) in list(self._installed.items()):
            wanted = profile.device(name)
            stale_board = spec.type == "board-info" and board != profile.board
            if wanted != spec or stale_board:
                self.connector.remove_device(device_id, now=now)
                del self._installed[name]
                removed.append(name)
        added: list[str] = []
        for spec in profile.devices:
            if spec.name in self._installed:
                continue
            device: Device = build_device(spec, ctx)
            device_id = self.connector.add_device(device, now=now)
            self._installed[spec.name] = (spec, profile.board, device_id)
            added.append(spec.name)
        return ProfileChange(tuple(added), tuple(removed))

    def _connector_event(self, event: object) -> None:
        # the connector and the link runtime log these themselves
        match event:
            case HostRegistered() | LinkDown() | LinkUp() | PeerRestarted() | SessionLost():
                if self._on_event is not None:
                    self._on_event(event)


# -- host -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallResult:
    """A completed DEVCALL: status (>= 0), reply payload, round trip seen by the bus."""

    status: int
    payload: bytes
    round_trip_s: float


HostListener = Callable[["HostClient", BusEvent], None]


class HostClient(_LinkService):
    """The host side of one link: discovery and blocking requests to the board's devices."""

    def __init__(
        self,
        link: str | Transport,
        *,
        link_config: LinkConfig | None = None,
        bus_config: BusConfig | None = None,
        on_event: HostListener | None = None,
        rng: random.Random | None = None,
        virtio_clients: VirtioClients | None = None,
        virtio_policy: FeaturePolicy | None = None,
    ) -> None:
        """``virtio_clients``: drivers for the board's ``virtio`` devices, by virtio id,
        besides (or instead of) those of ``VIRTIO_CLIENTS``; ``virtio_policy``: what
        features they may accept (default: whatever is offered, VERSION_1 required)."""
        super().__init__(link, link_config, rng)
        self._on_event = on_event
        #: the driver of ``virtio`` devices (its bindings belong to the loop thread)
        self.virtio = VirtioHostDriver(
            {**VIRTIO_CLIENTS, **(virtio_clients or {})}, policy=virtio_policy
        )
        drivers = DriverRegistry()
        drivers.register(VIRTIO_TYPE, self.virtio)
        self.bus = Bus(bus_config, drivers=drivers)
        self._cond = threading.Condition()
        # guarded by _cond:
        self._devices: dict[int, DeviceInfo] = {}
        self._ready = False
        self._sessions = 0
        self._refused: int | None = None
        self._changes = 0  # bus events seen (wait_until re-checks at each)
        # loop thread only:
        self._pending: dict[int, Future[object]] = {}
        # caller side (guarded by _cond): echo handle and the session it was opened in
        self._echo: tuple[int, int] | None = None

    _role = "host client"

    # -- lifecycle ------------------------------------------------------

    def start(self) -> None:
        self._new_runtime(self.bus, self._bus_event).start()

    # -- discovery ------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Registered with the board and the device replay is complete."""
        with self._cond:
            return self._ready

    def wait_ready(self, timeout_s: float = 5.0) -> list[DeviceInfo]:
        """Wait until the board's devices are known; returns them."""
        runtime = self.runtime
        with self._cond:
            self._cond.wait_for(
                lambda: self._ready or self._refused is not None or runtime.error is not None,
                timeout_s,
            )
            ready, refused = self._ready, self._refused
        runtime.raise_if_failed()
        if refused is not None:
            raise RemoteProtocolError(f"{self.name}: the board refused registration ({refused})")
        if not ready:
            raise TransportError(
                f"{self.name}: no board answered within {timeout_s:g} s; "
                "is `ira board serve` running on the other end?"
            )
        return self.devices()

    def devices(self) -> list[DeviceInfo]:
        """The devices known now, by id (empty before discovery)."""
        with self._cond:
            return [self._devices[k] for k in sorted(self._devices)]

    def list_devices(self, timeout_s: float = 5.0) -> list[DeviceInfo]:
        """Wait for discovery, then the board's devices by id."""
        return self.wait_ready(timeout_s)

    def wait_for(self, predicate: Callable[[list[DeviceInfo]], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(devices)`` holds (checked at every change); False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: predicate([self._devices[k] for k in sorted(self._devices)]), timeout_s
            )

    def wait_until(self, check: Callable[[], T], timeout_s: float) -> T:
        """Run ``check`` on the loop thread now and after every bus event until it returns
        something other than None; returns its last value (None after ``timeout_s``)."""
        runtime = self.runtime
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                seen = self._changes
            value = runtime.call(check)
            remaining = deadline - time.monotonic()
            if value is not None or remaining <= 0:
                return value
            self._wait_for_change(seen, remaining)
            runtime.raise_if_failed()

    def _wait_for_change(self, seen: int, timeout_s: float) -> None:
        """Wait for a bus event after the first ``seen`` ones (or the loop's failure)."""
        runtime = self.runtime
        with self._cond:
            self._cond.wait_for(
                lambda: self._changes != seen or runtime.error is not None, timeout_s
            )

    def virtio_devices(self, timeout_s: float = 5.0) -> list[VirtioDeviceInfo]:
        """Wait for discovery and for every ``virtio`` device's initialisation to end; returns
        what the host knows of each (virtio id, state, negotiated features), by device id.
        A device still initialising after ``timeout_s`` is returned as it is."""
        deadline = time.monotonic() + timeout_s
        self.wait_ready(timeout_s)

        def settled() -> list[VirtioDeviceInfo] | None:
            infos = self.virtio.devices()
            return infos if all(info.settled for info in infos) else None

        found = self.wait_until(settled, max(0.0, deadline - time.monotonic()))
        return found if found is not None else self.runtime.call(self.virtio.devices)

    def find(self, device_type: str) -> DeviceInfo:
        """The first device of ``device_type`` (waits for discovery)."""
        for info in self.wait_ready():
            if info.type == device_type:
                return info
        raise LocalProtocolError(f"{self.name}: the board has no {device_type!r} device")

    # -- requests -------------------------------------------------------

    def open(self, device: int | str, *, timeout_s: float | None = None) -> int:
        """DEVOPEN a device (by id, or the first of a type); returns the handle."""
        device_id = self.find(device).device_id if isinstance(device, str) else device

        def start(now: float) -> int:
            return self.bus.open(device_id, now=now, timeout_s=timeout_s)

        handle = self._wait(self._issue(start), timeout_s)
        assert isinstance(handle, int)
        return handle

    def close(self, handle: int) -> None:
        """DEVCLOSE (no reply)."""
        self.runtime.call(lambda: self.bus.close(handle))

    def submit(
        self, handle: int, func: int, payload: bytes = b"", *, timeout_s: float | None = None
    ) -> Future[object]:
        """DEVCALL without waiting; the future's result is a ``CallResult``."""

        def start(now: float) -> int:
            return self.bus.call(handle, func, payload, now=now, timeout_s=timeout_s)

        return self._issue(start)

    def call(
        self, handle: int, func: int, payload: bytes = b"", *, timeout_s: float | None = None
    ) -> CallResult:
        """DEVCALL and wait: ``DevcallError`` for a negative status, ``DevcallTimeout``,
        or ``SessionReset`` when the board restarted meanwhile."""
        result = self._wait(self.submit(handle, func, payload, timeout_s=timeout_s), timeout_s)
        assert isinstance(result, CallResult)
        return result

    def result(self, future: Future[object], timeout_s: float | None = None) -> CallResult:
        """Wait for a ``submit`` future."""
        result = self._wait(future, timeout_s)
        assert isinstance(result, CallResult)
        return result

    def ping(self, payload: bytes = b"", *, timeout_s: float | None = None) -> CallResult:
        """One DEVCALL round trip to the board's ``echo`` device (opened on first use)."""
        with self._cond:
            echo = self._echo if self._echo and self._echo[1] == self._sessions else None
            session = self._sessions
        if echo is None:
            handle = self.open("echo", timeout_s=timeout_s)
            with self._cond:
                self._echo = (handle, session)
        else:
            handle = echo[0]
        return self.call(handle, EchoFunc.ECHO, payload, timeout_s=timeout_s)

    def statistics(self) -> dict[str, int]:
        return self.runtime.call(self.bus.statistics)

    def _issue(self, start: Callable[[float], int]) -> Future[object]:
        future: Future[object] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                call_id = start(time.monotonic())
            except IraError as exc:
                future.set_exception(exc)
                return
            self._pending[call_id] = future

        self.runtime.post(run)
        return future

    def _wait(self, future: Future[object], timeout_s: float | None) -> object:
        limit = (self.bus.config.call_timeout_s if timeout_s is None else timeout_s) + _GRACE_S
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            self.runtime.raise_if_failed()
            raise DevcallTimeout(
                f"{self.name}: no outcome within {limit:g} s; the link runtime is not responding"
            ) from None

    # -- the loop thread ------------------------------------------------

    def _complete(self, call_id: int, value: object) -> None:
        future = self._pending.pop(call_id, None)
        if future is not None:
            future.set_result(value)

    def _bus_event(self, event: object) -> None:
        with self._cond:
            self._changes += 1
            self._cond.notify_all()
        match event:
            case CallCompleted():
                self._complete(
                    event.call_id, CallResult(event.status, event.payload, event.round_trip_s)
                )
            case DeviceOpened():
                self._complete(event.call_id, event.handle)
            case WindowAttached() | WindowDetached():
                self._complete(event.call_id, event)
            case CallFailed():
                future = self._pending.pop(event.call_id, None)
                if future is not None:
                    future.set_exception(event.error)
            case DeviceAdded():
                with self._cond:
                    self._devices[event.device.device_id] = event.device
                    self._cond.notify_all()
            case DeviceRemoved():
                with self._cond:
                    self._devices.pop(event.device.device_id, None)
                    self._cond.notify_all()
            case BusReady():
                with self._cond:
                    self._ready = True
                    self._refused = None
                    self._sessions += 1
                    self._cond.notify_all()
            case RegistrationRefused():
                with self._cond:
                    self._refused = event.status
                    self._cond.notify_all()
            case PeerRestarted() | SessionLost():
                with self._cond:
                    self._ready = False
                    self._cond.notify_all()
            case LinkDown() | LinkUp() | SignalReceived():
                pass
            case _:
                return
        if self._on_event is not None:
            self._on_event(self, event)


class HostService:
    """A host serving several links in one process: one ``HostClient`` each."""

    def __init__(
        self,
        links: Sequence[str | Transport],
        *,
        link_config: LinkConfig | None = None,
        bus_config: BusConfig | None = None,
        on_event: HostListener | None = None,
        virtio_clients: Sequence[VirtioClients | None] | None = None,
    ) -> None:
        """``virtio_clients``: one mapping per link (see ``HostClient``)."""
        if not links:
            raise LocalProtocolError("a host service needs at least one link")
        per_link = list(virtio_clients or [None] * len(links))
        if len(per_link) != len(links):
            raise LocalProtocolError("virtio_clients needs one entry per link")
        self.clients = [
            HostClient(
                link,
                link_config=link_config,
                bus_config=bus_config,
                on_event=on_event,
                virtio_clients=clients,
            )
            for link, clients in zip(links, per_link, strict=True)
        ]
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> HostService:
        with contextlib.ExitStack() as stack:
            for client in self.clients:
                stack.enter_context(client)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    def raise_if_failed(self) -> None:
        for client in self.clients:
            client.runtime.raise_if_failed()


__all__ = [
    "VIRTIO_CLIENTS",
    "BoardService",
    "CallResult",
    "HostClient",
    "HostListener",
    "HostService",
    "ProfileChange",
    "VirtioClients",
]
