"""The host side over real links: ``HostClient`` runs a ``Bus`` on one ``LinkRuntime`` and
offers blocking requests; ``HostService`` runs one ``HostClient`` per link in one process."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from ira.busmodel.bus import Bus
from ira.busmodel.config import BusConfig
from ira.busmodel.counters import BusStatistics
from ira.busmodel.devices.echo import EchoFunc
from ira.busmodel.drivers import DriverRegistry
from ira.busmodel.events import (
    BusEvent,
    BusReady,
    CallCompleted,
    CallFailed,
    DeviceAdded,
    DeviceInfo,
    DeviceOpened,
    DeviceRemoved,
    RegistrationRefused,
    SignalReceived,
    WindowAttached,
    WindowDetached,
    WindowUpdated,
)
from ira.errors import (
    DevcallTimeout,
    IraError,
    LocalProtocolError,
    RemoteProtocolError,
    SessionReset,
    TransportError,
)
from ira.link.config import LinkConfig
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.runtime.base import LinkService
from ira.runtime.link import Completion
from ira.runtime.port import PortEvent, PortStatus
from ira.transports.base import Transport
from ira.virtio.calls import VIRTIO_TYPE
from ira.virtio.entropy import ENTROPY_ID, EntropyClient
from ira.virtio.features import FeaturePolicy
from ira.virtio.host import VirtioClient, VirtioDeviceInfo, VirtioHostDriver

T = TypeVar("T")

#: host-side virtio clients by virtio device id (``VirtioHostDriver``)
VirtioClients = Mapping[int, Callable[[], VirtioClient]]
#: the virtio clients every host binds (``HostClient(virtio_clients=...)`` adds to them)
VIRTIO_CLIENTS: VirtioClients = {ENTROPY_ID: EntropyClient}

#: how long a caller waits beyond a request's own timeout before giving up on the loop
_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class CallResult:
    """A completed DEVCALL: status (>= 0), reply payload, round trip seen by the bus."""

    status: int
    payload: bytes
    round_trip_s: float


HostListener = Callable[["HostClient", BusEvent], None]
#: told when a host client's port goes away, is waited for, or is back
PortListener = Callable[["HostClient", PortEvent], None]

#: what a request's outcome is set in
Outcome = Future[object] | Completion[object]
OutcomeT = TypeVar("OutcomeT", Future[object], Completion[object])


class HostClient(LinkService):
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
        on_port_event: PortListener | None = None,
        give_up_after_s: float | None = None,
    ) -> None:
        """``virtio_clients``: drivers for the board's ``virtio`` devices, by virtio id,
        besides (or instead of) those of ``VIRTIO_CLIENTS``; ``virtio_policy``: what
        features they may accept (default: whatever is offered, VERSION_1 required);
        ``on_port_event``: told when the port goes, is waited for or is back (on the
        loop thread, like ``on_event``); ``give_up_after_s``: see ``LinkService``."""
        super().__init__(link, link_config, rng, give_up_after_s)
        self._on_port_event = on_port_event
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
        self._pending: dict[int, Outcome] = {}
        # caller side (guarded by _cond): echo handle and the session it was opened in
        self._echo: tuple[int, int] | None = None

    _role = "host client"

    # -- lifecycle ------------------------------------------------------

    def start(self) -> None:
        self._new_runtime(self.bus, self._bus_event, self._port_event).start()

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
            port = runtime.port
            if port.status is not PortStatus.UP:
                gone = "gone" if port.status is PortStatus.DOWN else "waited for"
                raise TransportError(
                    f"{self.name}: no board answered within {timeout_s:g} s; its port is "
                    f"{gone} ({port.reason})"
                )
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

        handle = self._wait(self._issue(start, Future()), timeout_s)
        assert isinstance(handle, int)
        return handle

    def close(self, handle: int) -> None:
        """DEVCLOSE (no reply)."""
        self.runtime.call(lambda: self.bus.close(handle))

    def submit(
        self, handle: int, func: int, payload: bytes = b"", *, timeout_s: float | None = None
    ) -> Future[object]:
        """DEVCALL without waiting; the future's result is a ``CallResult``."""
        return self._devcall(handle, func, payload, timeout_s, Future())

    def call(
        self, handle: int, func: int, payload: bytes = b"", *, timeout_s: float | None = None
    ) -> CallResult:
        """DEVCALL and wait: ``DevcallError`` for a negative status, ``DevcallTimeout``,
        or ``SessionReset`` when the board restarted meanwhile."""
        reply: Completion[object] = Completion()
        result = self._wait(
            self._devcall(handle, func, payload, timeout_s, reply), timeout_s, read_here=True
        )
        assert isinstance(result, CallResult)
        return result

    def result(self, future: Future[object], timeout_s: float | None = None) -> CallResult:
        """Wait for a ``submit`` future (the loop thread reads the replies meanwhile: with
        calls in flight it overlaps that with this thread's next submissions)."""
        result = self._wait(future, timeout_s)
        assert isinstance(result, CallResult)
        return result

    def ping(self, payload: bytes = b"", *, timeout_s: float | None = None) -> CallResult:
        """One DEVCALL round trip to the board's ``echo`` device (opened on first use, and
        again in every new session).  A board that is away or restarting costs this
        call (``DevcallTimeout``, ``SessionReset``), not the caller's loop."""
        with self._cond:
            echo = self._echo if self._echo and self._echo[1] == self._sessions else None
            session = self._sessions
        if echo is None:
            wait_s = 5.0 if timeout_s is None else timeout_s
            try:
                self.wait_ready(wait_s)
            except TransportError as exc:
                if self.runtime.error is not None:
                    raise  # the link itself failed: nothing to wait for
                raise DevcallTimeout(f"{self.name}: no board to ping within {wait_s:g} s") from exc
            with self._cond:
                session = self._sessions
            handle = self.open("echo", timeout_s=timeout_s)
            with self._cond:
                self._echo = (handle, session)
        else:
            handle = echo[0]
        try:
            return self.call(handle, EchoFunc.ECHO, payload, timeout_s=timeout_s)
        except LocalProtocolError as exc:
            with self._cond:
                ended = self._sessions != session
            if ended:  # the handle went with the session meanwhile
                raise SessionReset(f"{self.name}: the session reset before the call") from exc
            raise

    def statistics(self) -> BusStatistics:
        return self.runtime.call(self.bus.statistics)

    def _devcall(
        self, handle: int, func: int, payload: bytes, timeout_s: float | None, outcome: OutcomeT
    ) -> OutcomeT:
        def start(now: float) -> int:
            return self.bus.call(handle, func, payload, now=now, timeout_s=timeout_s)

        return self._issue(start, outcome)

    def _issue(self, start: Callable[[float], int], outcome: OutcomeT) -> OutcomeT:
        """Start a request with the cores; ``outcome`` is set when it completes.  A
        ``Future`` for what callers hold on to (``submit``), a ``Completion`` for a
        request waited for at once (``call``)."""

        def run() -> None:
            if isinstance(outcome, Future) and not outcome.set_running_or_notify_cancel():
                return
            try:
                call_id = start(time.monotonic())
            except IraError as exc:
                outcome.set_exception(exc)
                return
            self._pending[call_id] = outcome

        self.runtime.post(run)
        return outcome

    def _wait(self, future: Outcome, timeout_s: float | None, *, read_here: bool = False) -> object:
        """The future's outcome; ``read_here``: read the reply on this thread (one call
        waited for at a time: no hand-off from the loop thread)."""
        limit = (self.bus.config.call_timeout_s if timeout_s is None else timeout_s) + _GRACE_S
        try:
            if read_here:
                return self.runtime.wait(future, limit)
            return future.result(timeout=limit)
        except FutureTimeout:
            self.runtime.raise_if_failed()
            raise DevcallTimeout(
                f"{self.name}: no outcome within {limit:g} s; the link runtime is not responding"
            ) from None

    # -- the loop thread ------------------------------------------------

    def _port_event(self, event: PortEvent) -> None:
        with self._cond:
            self._changes += 1
            self._cond.notify_all()
        if self._on_port_event is not None:
            self._on_port_event(self, event)

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
                    self._sessions += 1  # the session's handles are gone with it
                    self._cond.notify_all()
            case LinkDown() | LinkUp() | SignalReceived() | WindowUpdated():
                pass
            case _:
                return
        if self._on_event is not None:
            self._on_event(self, event)


class HostService:
    """A host serving several links in one process: one ``HostClient`` each.

    Links can be added and removed while it runs (``add``, ``remove``), as a host
    that follows the boards being plugged in does (``ira.runtime.watch``)."""

    def __init__(
        self,
        links: Sequence[str | Transport],
        *,
        link_config: LinkConfig | None = None,
        bus_config: BusConfig | None = None,
        on_event: HostListener | None = None,
        virtio_clients: Sequence[VirtioClients | None] | None = None,
        on_port_event: PortListener | None = None,
        give_up_after_s: float | None = None,
    ) -> None:
        """``virtio_clients``: one mapping per link (see ``HostClient``);
        ``give_up_after_s``: see ``LinkService``.  A link whose port goes away is
        reopened while the others are served; one that fails (see ``failed``)
        does not stop the others."""
        per_link = list(virtio_clients or [None] * len(links))
        if len(per_link) != len(links):
            raise LocalProtocolError("virtio_clients needs one entry per link")
        self._link_config = link_config
        self._bus_config = bus_config
        self._on_event = on_event
        self._on_port_event = on_port_event
        self._give_up_after_s = give_up_after_s
        self._running = False
        self.clients = [
            self._client(link, clients) for link, clients in zip(links, per_link, strict=True)
        ]

    def _client(self, link: str | Transport, clients: VirtioClients | None) -> HostClient:
        return HostClient(
            link,
            link_config=self._link_config,
            bus_config=self._bus_config,
            on_event=self._on_event,
            virtio_clients=clients,
            on_port_event=self._on_port_event,
            give_up_after_s=self._give_up_after_s,
        )

    def __enter__(self) -> HostService:
        started: list[HostClient] = []
        try:
            for client in self.clients:
                client.__enter__()
                started.append(client)
        except BaseException:
            for client in reversed(started):
                client.__exit__(None, None, None)
            raise
        self._running = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        for client in reversed(self.clients):
            client.__exit__(exc_type, exc, tb)

    def add(self, link: str | Transport, virtio_clients: VirtioClients | None = None) -> HostClient:
        """Serve one more link (started now if the service runs)."""
        client = self._client(link, virtio_clients)
        if self._running:
            client.__enter__()
        self.clients.append(client)
        return client

    def remove(self, client: HostClient) -> None:
        """Stop serving one link: its devices are dropped and its port closed."""
        self.clients.remove(client)
        if self._running:
            client.__exit__(None, None, None)

    def serving(self, client: HostClient) -> bool:
        """False once ``client``'s link stopped on an error (``failed`` says which)."""
        return client.runtime.error is None

    def failed(self) -> list[tuple[HostClient, BaseException]]:
        """The links whose runtime stopped on an error, with it (the others go on)."""
        return [
            (client, client.runtime.error)
            for client in self.clients
            if client.runtime.error is not None
        ]

    def raise_if_failed(self) -> None:
        """Raise the first error of a link that stopped (all of them, for a service
        that must not go on without any)."""
        for client in self.clients:
            client.runtime.raise_if_failed()
