"""The host-side core: proxy devices of one board, reached over one link (sans-I/O).

The runtime drives it like every ira core::

    bus.handle_link_event(ev, now=now)         # every event of the link
    bus.handle_timeout(now=now)                # when now >= bus.next_deadline()
    for channel, data in bus.messages_to_send():
        link.send(channel, data)
    while (ev := bus.next_event()) is not None: ...

On the link's ``SessionStarted`` the bus registers (BUS_HELLO) and learns every
device from the DEVADD replay (``DeviceAdded``, then ``BusReady``); drivers
registered for a device's type are probed.  Requests (``open``, ``call``,
``attach``, ``detach``) return a call id at once; their outcome is an event
(``DeviceOpened``, ``CallCompleted``, ``WindowAttached``, ``WindowDetached``,
or ``CallFailed``) after the reply or the timeout.  When the session resets
(``PeerRestarted``, ``SessionLost``, or a new ``SessionStarted``) every pending
request fails with ``SessionReset`` and every device is removed; the next
session rediscovers them.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable

from ira.busmodel.config import BusConfig
from ira.busmodel.counters import BusCounts, BusStatistics, Refusal, Stale
from ira.busmodel.drivers import DriverRegistry
from ira.busmodel.events import (
    BusEvent,
    BusReady,
    CallCompleted,
    CallFailed,
    DeviceAdded,
    DeviceEvent,
    DeviceInfo,
    DeviceOpened,
    DeviceRemoved,
    RegistrationRefused,
    SignalReceived,
    WindowAttached,
    WindowDetached,
    WindowUpdated,
)
from ira.busmodel.hostwindows import HostWindows, WindowEntry, WindowState
from ira.busmodel.outbox import Outbox
from ira.busmodel.proxies import Proxies
from ira.busmodel.requests import Request, RequestKind, RequestTable
from ira.busmodel.state import BUS_DISCOVERING, BUS_TRANSITIONS, BusInput, BusState, next_state
from ira.busmodel.window import Window
from ira.errors import (
    DevcallError,
    DevcallTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    SessionReset,
)
from ira.link.events import (
    Channel,
    LinkDown,
    LinkEvent,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.wire.bus import (
    BUS_VERSION_FLUSH_ENDS,
    BUS_VERSION_LIMITS,
    BUS_VERSION_WINDOWS,
    MAX_CALL_PAYLOAD_BYTES,
    MAX_WINDOW_BYTES,
    REPLY_OF,
    BusHello,
    BusLimits,
    BusSynced,
    BusWelcome,
    CallFlags,
    DevAdd,
    DevCall,
    DevCallReply,
    DevClose,
    DevDrop,
    DevOpen,
    DevOpenReply,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    ShmFlags,
    SignalNotify,
    SignalState,
    Status,
    Tag,
    WindowBatch,
    WindowUpdate,
    call_of,
    decode,
    encode_devcall,
)

log = logging.getLogger(__name__)

RESET_MESSAGE = "the session reset; the call may or may not have run"

_NO_REPLY = int(CallFlags.NO_REPLY)

#: the request each kind of reply answers (DEVCALL_REPLY has a handler of its own)
_REPLY_KINDS: dict[type[object], RequestKind] = {
    DevOpenReply: RequestKind.OPEN,
    ShmAttachReply: RequestKind.ATTACH,
    ShmDetachReply: RequestKind.DETACH,
}


#: the request each reply tag answers
_KIND_OF_REPLY = {
    Tag.DEVOPEN_REPLY: RequestKind.OPEN,
    Tag.DEVCALL_REPLY: RequestKind.CALL,
    Tag.SHM_ATTACH_REPLY: RequestKind.ATTACH,
    Tag.SHM_DETACH_REPLY: RequestKind.DETACH,
}


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return str(status)


class Bus:
    """Host side of the bus model for one link: proxy devices, drivers, requests."""

    def __init__(
        self, config: BusConfig | None = None, *, drivers: DriverRegistry | None = None
    ) -> None:
        self.config = config or BusConfig()
        self.drivers = drivers or DriverRegistry()
        self._state = BusState.NO_SESSION
        self._welcome: BusWelcome | None = None
        self._proxies = Proxies(self.drivers, self.config.max_devices)
        self._windows = HostWindows()
        self._requests = RequestTable()
        self._outbox = Outbox()
        self._events: deque[BusEvent] = deque()
        self._counts = BusCounts()
        self._refused: Counter[Refusal] = Counter()
        self._stale: Counter[Stale] = Counter()
        self._now = 0.0

    # -- public state ---------------------------------------------------

    @property
    def state(self) -> BusState:
        return self._state

    @property
    def ready(self) -> bool:
        """Registered and the DEVADD replay is complete."""
        return self._state is BusState.READY

    @property
    def version(self) -> int:
        """The negotiated bus version (0 when not registered)."""
        return self._welcome.version if self._welcome else 0

    @property
    def limits(self) -> BusWelcome | None:
        """The board container's limits, from BUS_WELCOME."""
        return self._welcome

    def devices(self) -> list[DeviceInfo]:
        """Every proxy device, by id."""
        return self._proxies.devices()

    def device(self, device_id: int) -> DeviceInfo | None:
        return self._proxies.device(device_id)

    def is_open(self, handle: int) -> bool:
        return self._proxies.device_of(handle) is not None

    # -- requests -------------------------------------------------------

    def open(
        self,
        device_id: int,
        *,
        now: float,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """DEVOPEN at ``version`` (default: the device's); returns the call id."""
        info = self._proxies.device(device_id)
        if info is None:
            raise LocalProtocolError(f"no device {device_id} on this bus")
        call_id = self._request(RequestKind.OPEN, device_id, now, timeout_s)
        self._outbox.send(DevOpen(call_id, device_id, info.version if version is None else version))
        return call_id

    def close(self, handle: int) -> None:
        """DEVCLOSE: the board detaches the handle's windows; no reply."""
        if not self._proxies.closed(handle):
            raise LocalProtocolError(f"handle {handle:#x} is not open")
        self._windows.retire_where(lambda entry: entry.handle == handle)
        self._outbox.send(DevClose(handle))

    def call(
        self,
        handle: int,
        func: int,
        payload: bytes = b"",
        *,
        now: float,
        timeout_s: float | None = None,
        no_reply: bool = False,
        ordered: bool = False,
    ) -> int:
        """DEVCALL; returns the call id.

        ``ordered=True`` sends the call on BULK, behind the window updates
        flushed before it (its reply comes back on BULK too).  ``no_reply``
        calls are carried out once but never answered: no event follows.
        """
        device_id = self._proxies.device_of(handle)
        if device_id is None:
            raise LocalProtocolError(f"handle {handle:#x} is not open")
        welcome = self._welcome
        limit = MAX_CALL_PAYLOAD_BYTES if welcome is None else welcome.max_call_payload_bytes
        if len(payload) > limit:
            raise LocalProtocolError(f"payload of {len(payload)} bytes exceeds {limit}")
        if not no_reply:
            self._check_registered()
        call_id = self._requests.new_call_id()
        # encoded before the request is recorded: a call the wire refuses leaves nothing pending
        data = encode_devcall(call_id, handle, func, _NO_REPLY if no_reply else 0, bytes(payload))
        if not no_reply:
            self._add_request(RequestKind.CALL, call_id, device_id, now, timeout_s, func=func)
        self._outbox.send_encoded(Channel.BULK if ordered else Channel.CONTROL, data, DevCall)
        self._counts.calls += 1
        return call_id

    def create_window(
        self, size_bytes: int, *, device_offset: int = 0, device_length: int = 0
    ) -> Window:
        """A new window (host replica) to write and then ``attach``.

        The board writes ``[device_offset, device_offset+device_length)``; the
        host writes the rest.
        """
        limit = self._welcome.max_window_bytes if self._welcome else MAX_WINDOW_BYTES
        if not 1 <= size_bytes <= limit:
            raise LocalProtocolError(f"window size must be 1..{limit} bytes")
        return self._windows.create(size_bytes, device_offset, device_length)

    def attach(
        self,
        handle: int,
        shm_id: int,
        window: Window,
        *,
        now: float,
        signal: bool = False,
        timeout_s: float | None = None,
    ) -> int:
        """SHM_ATTACH ``window`` as the device's queue/region ``shm_id``; returns the call id.

        Flushes asked for before the attach completes are carried out then.
        """
        device_id = self._proxies.device_of(handle)
        if device_id is None:
            raise LocalProtocolError(f"handle {handle:#x} is not open")
        self._windows.entry(window, WindowState.CREATED)
        call_id = self._request(RequestKind.ATTACH, device_id, now, timeout_s, handle=handle)
        self._requests_window(call_id, window)
        self._windows.attach_started(window, handle, device_id)
        flags = ShmFlags.SIGNAL if signal else ShmFlags.NONE
        self._outbox.send(
            ShmAttach(
                call_id=call_id,
                handle=handle,
                shm_id=shm_id,
                window=window.window_id,
                size_bytes=window.size_bytes,
                device_offset=window.device_offset,
                device_length=window.device_length,
                flags=int(flags),
            )
        )
        return call_id

    def detach(self, window: Window, *, now: float, timeout_s: float | None = None) -> int:
        """SHM_DETACH an attached window; returns the call id."""
        entry = self._windows.entry(window, WindowState.ATTACHED)
        call_id = self._request(
            RequestKind.DETACH, entry.device_id, now, timeout_s, handle=entry.handle
        )
        self._requests_window(call_id, window)
        window.flush()
        window.disconnect()  # no local writes after SHM_DETACH; board updates still apply
        entry.state = WindowState.DETACHING
        self._outbox.send(ShmDetach(call_id, entry.handle, window.window_id))
        return call_id

    def _request(
        self,
        kind: RequestKind,
        device_id: int,
        now: float,
        timeout_s: float | None,
        *,
        handle: int = 0,
    ) -> int:
        self._check_registered()
        call_id = self._requests.new_call_id()
        self._add_request(kind, call_id, device_id, now, timeout_s, handle=handle)
        return call_id

    def _check_registered(self) -> None:
        if self._state not in BUS_DISCOVERING:
            raise LocalProtocolError(f"the bus is not registered ({self._state.value})")

    def _add_request(
        self,
        kind: RequestKind,
        call_id: int,
        device_id: int,
        now: float,
        timeout_s: float | None,
        *,
        func: int = 0,
        handle: int = 0,
    ) -> None:
        timeout = self.config.call_timeout_s if timeout_s is None else timeout_s
        self._requests.add(Request(call_id, kind, device_id, now, now + timeout, func, handle))

    def _requests_window(self, call_id: int, window: Window) -> None:
        request = self._requests.peek(call_id)
        assert request is not None
        request.window = window

    # -- the sans-I/O verbs ----------------------------------------------

    def handle_link_event(self, ev: LinkEvent, *, now: float) -> None:
        """Consume one event of the link."""
        self._now = now
        match ev:
            case MessageReceived(channel=channel, payload=payload):
                self._received(channel, payload, now)
            case SessionStarted():
                if self._state is not BusState.NO_SESSION:
                    self._reset(now)
                self._transition(BusInput.SESSION_STARTED)
                self._outbox.send(BusHello(self.config.version_min, self.config.version_max))
            case PeerRestarted() | SessionLost():
                log.info("session ended (%s); dropping every device", type(ev).__name__)
                self._events.append(ev)
                self._reset(now)
                self._transition(BusInput.SESSION_ENDED)
            case LinkDown() | LinkUp():
                self._events.append(ev)

    def messages_to_send(self) -> list[tuple[Channel, bytes]]:
        """Encoded messages for the link, in order, with their channels."""
        return self._outbox.take()

    def next_event(self) -> BusEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """The earliest request timeout or drivers' timer, or None."""
        deadline = self._requests.next_deadline()
        for driver in self.drivers.timed:
            due = driver.next_deadline()
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        return deadline

    def handle_timeout(self, *, now: float) -> None:
        """Fail every request whose timeout has passed with ``DevcallTimeout``; run the
        drivers' timers that are due."""
        self._now = now
        for request in self._requests.expire(now):
            self._counts.timeouts += 1
            if request.window is not None:
                self._windows.retire(request.window.window_id)
            waited = now - request.issued_at
            error = DevcallTimeout(
                f"{request.kind.value} {request.call_id} to device {request.device_id} "
                f"got no reply in {waited:.3f} s"
            )
            self._emit(CallFailed(request.call_id, request.device_id, error), now)
        for driver in self.drivers.timed:
            due = driver.next_deadline()
            if due is not None and due <= now:
                driver.handle_timeout(self, now=now)

    def statistics(self) -> BusStatistics:
        k = self._counts
        return BusStatistics(
            devices=len(self._proxies),
            handles=self._proxies.handle_count,
            windows=len(self._windows),
            pending_requests=len(self._requests),
            messages_received=k.messages_received,
            calls=k.calls,
            calls_completed=k.calls_completed,
            late_replies=k.late_replies,
            requests_failed=k.requests_failed,
            reset_requests=k.reset_requests,
            timeouts=k.timeouts,
            refused=dict(self._refused),
            stale=dict(self._stale),
            sent=dict(self._outbox.sent),
        )

    # -- state ----------------------------------------------------------

    def _transition(self, event: BusInput) -> bool:
        new = next_state(BUS_TRANSITIONS, self._state, event)
        if new is None:
            return False
        self._state = new
        return True

    def _refuse(self, reason: Refusal) -> None:
        self._refused[reason] += 1

    def _count_problem(self, problem: Refusal | Stale) -> None:
        if isinstance(problem, Refusal):
            self._refused[problem] += 1
        else:
            self._stale[problem] += 1

    def _emit(self, ev: DeviceEvent, now: float) -> None:
        """Report an event about one device, to the caller and to the device's driver."""
        self._events.append(ev)
        driver = self._proxies.driver(ev.device_id)
        if driver is not None:
            driver.handle_event(self, ev, now=now)

    def _reset(self, now: float) -> None:
        """Forget the session: fail every request, drop every device."""
        self._outbox.clear()
        self._outbox.batch_windows = False
        for request in self._requests.drain():
            self._counts.reset_requests += 1
            error = SessionReset(f"{request.kind.value} {request.call_id}: {RESET_MESSAGE}")
            self._emit(CallFailed(request.call_id, request.device_id, error), now)
        self._windows.reset()
        self._proxies.forget_handles()
        for device_id in [info.device_id for info in self._proxies.devices()]:
            self._remove_device(device_id, "session reset", now)
        self._welcome = None

    def _remove_device(self, device_id: int, reason: str, now: float) -> None:
        info, driver = self._proxies.remove(device_id)
        self._windows.retire_where(lambda entry: entry.device_id == device_id)
        log.info("device %d removed (%s): %s", device_id, reason, info.type)
        self._events.append(DeviceRemoved(info, reason))
        if driver is not None:
            driver.remove(self, info, now=now)

    # -- receiving ------------------------------------------------------

    def _received(self, channel: Channel, payload: bytes, now: float) -> None:
        self._counts.messages_received += 1
        try:
            msg = decode(payload)
        except RemoteProtocolError as exc:
            log.debug("malformed message: %s", exc)
            self._refuse(Refusal.MALFORMED)
            self._malformed_reply(payload, now)
            return
        match msg:  # the per-call reply first: a match tries its cases in order
            case DevCallReply():
                self._on_call_reply(msg, now)
            case BusWelcome():
                self._on_welcome(msg)
            case BusSynced():
                self._on_synced(msg)
            case DevAdd():
                self._on_devadd(msg, now)
            case DevDrop():
                self._on_devdrop(msg, now)
            case DevOpenReply() | ShmAttachReply() | ShmDetachReply():
                self._on_reply(msg, now)
            case WindowUpdate():
                self._on_window(msg)
            case WindowBatch() if self.version >= BUS_VERSION_WINDOWS:
                for update in msg.updates:
                    self._on_window(update)
            case SignalNotify() | SignalState():
                self._on_signal(msg)
            case _:
                self._refuse(Refusal.UNEXPECTED)

    def _malformed_reply(self, payload: bytes, now: float) -> None:
        """A reply that could not be decoded fails the request it answers (EBADMSG) at
        once, rather than leave its caller waiting for the timeout."""
        call = call_of(payload)
        if call is None or call[0] in REPLY_OF:
            return
        kind = _KIND_OF_REPLY.get(call[0])
        if kind is None:
            return
        request = self._answered(call[1], kind)
        if request is not None:
            self._fail(request, Status.EBADMSG, now)

    def _on_welcome(self, msg: BusWelcome) -> None:
        if self._state is not BusState.REGISTERING:
            self._refuse(Refusal.UNEXPECTED)
            return
        if msg.status < 0 or not self.config.version_min <= msg.version <= self.config.version_max:
            log.warning("board refused registration: %s", _status_name(msg.status))
            self._transition(BusInput.RECV_WELCOME_REFUSED)
            self._events.append(RegistrationRefused(msg.status))
            return
        self._welcome = msg
        self._outbox.batch_windows = msg.version >= BUS_VERSION_WINDOWS
        self._transition(BusInput.RECV_WELCOME_ACCEPTED)
        if msg.version >= BUS_VERSION_LIMITS:
            self._outbox.send(BusLimits(self.config.max_devices))

    def _on_synced(self, msg: BusSynced) -> None:
        if not self._transition(BusInput.RECV_SYNCED):
            self._refuse(Refusal.UNEXPECTED)
            return
        log.info("bus ready (v%d), %d devices", self.version, len(self._proxies))
        self._events.append(BusReady(self.version, len(self._proxies)))

    def _on_devadd(self, msg: DevAdd, now: float) -> None:
        if self._state not in BUS_DISCOVERING:
            self._refuse(Refusal.UNEXPECTED)
            return
        info = self._proxies.add(msg)
        if isinstance(info, Refusal):
            self._refuse(info)
            return
        log.info("device %d added: %s v%d", info.device_id, info.type, info.version)
        self._events.append(DeviceAdded(info, replayed=self._state is BusState.SYNCING))
        driver = self._proxies.driver(info.device_id)
        if driver is not None:
            driver.probe(self, info, now=now)

    def _on_devdrop(self, msg: DevDrop, now: float) -> None:
        if self._state not in BUS_DISCOVERING or self._proxies.device(msg.device_id) is None:
            self._refuse(Refusal.UNKNOWN_DEVICE)
            return
        self._remove_device(msg.device_id, "dropped", now)

    def _answered(self, call_id: int, kind: RequestKind) -> Request | None:
        """The pending request a reply of ``kind`` answers (now no longer pending), or None
        (counted: a late reply, or one to a call never issued or of another kind)."""
        requests = self._requests
        request = requests.peek(call_id)
        if request is None or request.kind is not kind:
            if request is None and requests.issued(call_id):
                self._counts.late_replies += 1
            else:
                self._refuse(Refusal.UNKNOWN_CALL)
            return None
        requests.pop(call_id)
        return request

    def _on_call_reply(self, msg: DevCallReply, now: float) -> None:
        request = self._answered(msg.call_id, RequestKind.CALL)
        if request is None:
            return
        status = msg.status
        if status < 0:
            self._fail(request, status, now)
            return
        self._counts.calls_completed += 1
        rtt = now - request.issued_at
        ev = CallCompleted(
            request.call_id, request.device_id, request.func, status, msg.payload, rtt
        )
        self._emit(ev, now)

    def _on_reply(self, msg: DevOpenReply | ShmAttachReply | ShmDetachReply, now: float) -> None:
        request = self._answered(msg.call_id, _REPLY_KINDS[type(msg)])
        if request is None:
            return
        if msg.status < 0:
            self._fail(request, msg.status, now)
            return
        match msg:
            case DevOpenReply(handle=handle):
                self._on_opened(request, handle, now)
            case ShmAttachReply(signal=signal_id):
                self._on_attached(request, signal_id, now)
            case ShmDetachReply():
                assert request.window is not None
                self._windows.retire(request.window.window_id)
                ev2 = WindowDetached(request.call_id, request.device_id, request.window.window_id)
                self._emit(ev2, now)

    def _fail(self, request: Request, status: int, now: float) -> None:
        self._counts.requests_failed += 1
        if request.kind is RequestKind.ATTACH and request.window is not None:
            self._windows.attach_failed(request.window)
        elif request.kind is RequestKind.DETACH and request.window is not None:
            self._windows.retire(request.window.window_id)
        error = DevcallError(
            status,
            f"{request.kind.value} {request.call_id} to device {request.device_id} failed: "
            f"{_status_name(status)}",
        )
        self._emit(CallFailed(request.call_id, request.device_id, error), now)

    def _on_opened(self, request: Request, handle: int, now: float) -> None:
        if not self._proxies.opened(handle, request.device_id):
            # The device went away meanwhile (the board closed the handle with it),
            # or the board answered nonsense.
            self._refuse(Refusal.BAD_HANDLE)
            self._fail(request, Status.EBADF, now)
            return
        self._emit(DeviceOpened(request.call_id, request.device_id, handle), now)

    def _on_attached(self, request: Request, signal_id: int, now: float) -> None:
        window = request.window
        assert window is not None
        entry = self._windows.attach_succeeded(
            window,
            signal_id,
            self._outbox.send_bulk,
            self._signal_handler,
            flush_ends=self.version >= BUS_VERSION_FLUSH_ENDS,
            flush_notifies=self.version >= BUS_VERSION_WINDOWS,
            updated=self._update_handler,
        )
        if entry is None:  # closed or removed meanwhile
            self._fail(request, Status.EBADF, now)
            return
        ev = WindowAttached(request.call_id, request.device_id, window.window_id, signal_id or None)
        self._emit(ev, now)

    def _signal_handler(self, entry: WindowEntry, signal_id: int) -> Callable[[], None]:
        def notified() -> None:
            ev = SignalReceived(entry.device_id, entry.window.window_id, signal_id)
            self._emit(ev, self._now)

        return notified

    def _update_handler(self, entry: WindowEntry) -> Callable[[], None]:
        def updated() -> None:
            self._emit(WindowUpdated(entry.device_id, entry.window.window_id), self._now)

        return updated

    def _on_window(self, msg: WindowUpdate) -> None:
        problem = self._windows.received_update(msg)
        if problem is not None:
            self._count_problem(problem)

    def _on_signal(self, msg: SignalNotify | SignalState) -> None:
        problem = self._windows.received_signal(msg)
        if problem is not None:
            self._count_problem(problem)
