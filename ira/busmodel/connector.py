"""The board-side core: a container of devices carried over one link (sans-I/O).

The runtime drives it like every ira core::

    connector.handle_link_event(ev, now=now)   # every event of the link
    for channel, data in connector.messages_to_send():
        link.send(channel, data)
    while (ev := connector.next_event()) is not None: ...

and adds or removes devices at any time with ``add_device``/``remove_device``.
Devices run inside ``handle_link_event`` (see ``ira.busmodel.device``).

Every request the host makes is answered; a request that names anything this
container did not issue (device id, handle, window, signal), or breaks a
limit, gets a negative status and is counted in ``statistics()``; a message
that cannot be decoded is counted and, when it is a request whose call_id can
be read, answered with its reply and ``EBADMSG``; a message that is not a
request is counted and dropped.  Nothing the peer sends can raise out of this
core.
"""

from __future__ import annotations

import logging
from collections import deque

from ira.busmodel.announced import Announced
from ira.busmodel.config import ConnectorConfig
from ira.busmodel.container import Container
from ira.busmodel.counters import ConnectorCounts, ConnectorStatistics, Refusal
from ira.busmodel.device import Attachment, Device, Handle
from ira.busmodel.events import ConnectorEvent, HostRegistered
from ira.busmodel.outbox import Outbox
from ira.busmodel.signal import Signal
from ira.busmodel.state import (
    CONNECTOR_TRANSITIONS,
    ConnectorInput,
    ConnectorState,
    next_state,
)
from ira.busmodel.window import Side, Window
from ira.errors import DevcallError, LocalProtocolError, RemoteProtocolError
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
    Attribute,
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
    Message,
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
    encode,
    encode_devcall_reply,
    error_reply,
    tag_of,
)

log = logging.getLogger(__name__)

_S32_MIN, _S32_MAX = -(1 << 31), (1 << 31) - 1
_NO_REPLY = int(CallFlags.NO_REPLY)


def _status_of(value: int) -> int:
    if not _S32_MIN <= value <= _S32_MAX:
        raise LocalProtocolError(f"device returned status {value}, outside s32")
    return int(value)


class Connector:
    """Board side of the bus model: owns the container and its device models."""

    def __init__(self, config: ConnectorConfig | None = None) -> None:
        self.config = config or ConnectorConfig()
        self._container = Container(self.config.limits, seed=self.config.seed)
        self._max_call_payload_bytes = self.config.limits.max_call_payload_bytes
        self._state = ConnectorState.NO_SESSION
        self._version = 0
        #: the devices the host was told about this session, within its BUS_LIMITS
        self._announced = Announced()
        self._outbox = Outbox()
        self._events: deque[ConnectorEvent] = deque()
        self._counts = ConnectorCounts()

    # -- public state ---------------------------------------------------

    @property
    def state(self) -> ConnectorState:
        return self._state

    @property
    def registered(self) -> bool:
        return self._state is ConnectorState.REGISTERED

    @property
    def version(self) -> int:
        """The negotiated bus version (0 before registration)."""
        return self._version

    def devices(self) -> dict[int, Device]:
        """The devices in the container, by device id."""
        return self._container.devices()

    def handles(self, device_id: int | None = None) -> list[Handle]:
        """Open handles (of one device, or all)."""
        return self._container.handles(device_id)

    # -- devices --------------------------------------------------------

    def add_device(self, device: Device, *, now: float) -> int:
        """Add a device; the host sees DEVADD now (if registered) or at registration."""
        self._devadd(0, device)  # validates type and attributes before anything changes
        device_id = self._container.add_device(device)
        log.info("device %d added: %s v%d", device_id, device.type, device.version)
        if self.registered:
            self._announce(device_id, device)
        return device_id

    def remove_device(self, device_id: int, *, now: float) -> Device:
        """Remove a device: its handles are closed and the host sees DEVDROP."""
        device = self._container.device(device_id)
        if device is None:
            raise LocalProtocolError(f"no device {device_id} in the container")
        for handle in self._container.handles(device_id):
            self._close(handle, now)
        self._container.remove_device(device_id)
        log.info("device %d removed: %s", device_id, device.type)
        if self._announced.drop(device_id):
            self._outbox.send(DevDrop(device_id))
            devices = self._container.devices()
            withheld = self._announced.first_withheld(devices)
            if withheld is not None:
                self._announce(withheld, devices[withheld])
        return device

    def _announce(self, device_id: int, device: Device) -> bool:
        """Send DEVADD unless the host's announced limit is reached (then counted, False)."""
        if not self._announced.admit(device_id):
            log.warning(
                "device %d (%s) not announced: the host keeps at most %d devices",
                device_id,
                device.type,
                self._announced.limit,
            )
            return False
        self._outbox.send(self._devadd(device_id, device))
        return True

    @staticmethod
    def _devadd(device_id: int, device: Device) -> DevAdd:
        msg = DevAdd(
            device_id=device_id,
            version=device.version,
            type=device.type,
            attrs=tuple(Attribute(k, v) for k, v in device.attributes().items()),
        )
        encode(msg)  # LocalProtocolError if the type or attributes break the limits
        return msg

    # -- the sans-I/O verbs ----------------------------------------------

    def handle_link_event(self, ev: LinkEvent, *, now: float) -> None:
        """Consume one event of the link."""
        match ev:
            case MessageReceived(channel=channel, payload=payload):
                self._received(channel, payload, now)
            case SessionStarted():
                self._reset(now)
                self._transition(ConnectorInput.SESSION_STARTED)
            case PeerRestarted() | SessionLost():
                log.info("session ended (%s); closing every handle", type(ev).__name__)
                self._events.append(ev)
                self._reset(now)
                self._transition(ConnectorInput.SESSION_ENDED)
            case LinkDown() | LinkUp():
                self._events.append(ev)

    def messages_to_send(self) -> list[tuple[Channel, bytes]]:
        """Encoded messages for the link, in order, with their channels."""
        return self._outbox.take()

    def next_event(self) -> ConnectorEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """The connector keeps no timers."""
        return None

    def handle_timeout(self, *, now: float) -> None:
        """Nothing to do: the connector keeps no timers (present for the common verbs)."""

    def statistics(self) -> ConnectorStatistics:
        c, k = self._container, self._counts
        return ConnectorStatistics(
            devices=len(c.devices()),
            handles=c.handle_count,
            windows=c.window_count,
            window_bytes=c.window_bytes,
            signals=c.signal_count,
            messages_received=k.messages_received,
            opens=k.opens,
            opens_refused=k.opens_refused,
            calls=k.calls,
            calls_failed=k.calls_failed,
            replies_too_large=k.replies_too_large,
            devices_withheld=self._announced.withheld,
            attaches=k.attaches,
            attaches_refused=k.attaches_refused,
            window_updates_applied=k.window_updates_applied,
            refused=dict(c.refusals),
            sent=dict(self._outbox.sent),
        )

    # -- state ----------------------------------------------------------

    def _transition(self, event: ConnectorInput) -> bool:
        new = next_state(CONNECTOR_TRANSITIONS, self._state, event)
        if new is None:
            return False
        self._state = new
        return True

    def _reset(self, now: float) -> None:
        """Forget the session: close every handle (detaching windows and signals)."""
        for handle in self._container.handles():
            self._close(handle, now)
        self._outbox.clear()
        self._outbox.batch_windows = False
        self._version = 0
        self._announced.reset()

    # -- receiving ------------------------------------------------------

    def _received(self, channel: Channel, payload: bytes, now: float) -> None:
        self._counts.messages_received += 1
        try:
            msg = decode(payload)
        except RemoteProtocolError as exc:
            log.debug("malformed message: %s", exc)
            self._container.refuse(Refusal.MALFORMED)
            self._answer_malformed(payload, channel)
            return
        if isinstance(msg, BusHello):
            self._on_hello(msg)
        elif isinstance(msg, BusLimits):
            self._on_limits(msg)
        elif self._state is not ConnectorState.REGISTERED:
            self._not_registered(msg, channel)
        else:
            self._dispatch(msg, channel, now)

    def _dispatch(self, msg: Message, channel: Channel, now: float) -> None:
        match msg:  # the call first: a match tries its cases in order
            case DevCall():
                self._on_call(msg, channel, now)
            case DevOpen():
                self._on_open(msg, channel, now)
            case DevClose():
                self._on_close(msg, now)
            case ShmAttach():
                self._on_attach(msg, channel, now)
            case ShmDetach():
                self._on_detach(msg, channel, now)
            case WindowUpdate():
                self._on_window(msg)
            case WindowBatch() if self._version >= BUS_VERSION_WINDOWS:
                for update in msg.updates:
                    self._on_window(update)
            case SignalNotify():
                self._on_signal(msg)
            case SignalState():
                self._on_signal_state(msg)
            case _:
                self._container.refuse(Refusal.UNEXPECTED)

    def _answer_malformed(self, payload: bytes, channel: Channel) -> None:
        """Answer a request that could not be decoded with EBADMSG, so its caller
        learns at once instead of waiting out its timeout."""
        call = call_of(payload)
        if call is not None and call[2]:
            self._answer_error(call[0], call[1], Status.EBADMSG, channel)

    def _not_registered(self, msg: Message, channel: Channel) -> None:
        self._container.refuse(Refusal.NOT_REGISTERED)
        wanted = not (isinstance(msg, DevCall) and msg.flags & _NO_REPLY)
        if isinstance(msg, (DevOpen, DevCall, ShmAttach, ShmDetach)) and wanted:
            self._answer_error(tag_of(msg), msg.call_id, Status.ENOTCONN, channel)

    def _answer_error(self, tag: Tag, call_id: int, status: int, channel: Channel) -> None:
        reply = error_reply(tag, call_id, status)
        if reply is not None:
            self._outbox.send(reply, channel)

    def _on_hello(self, msg: BusHello) -> None:
        if self._state is not ConnectorState.AWAITING_HELLO:
            self._container.refuse(Refusal.UNEXPECTED_HELLO)
            return
        limits = self.config.limits
        version = min(self.config.version_max, msg.version_max)
        if version < max(self.config.version_min, msg.version_min):
            self._container.refuse(Refusal.BAD_VERSION)
            self._outbox.send(BusWelcome(Status.EPROTONOSUPPORT, 0, 0, 0, 0, 0, 0))
            self._transition(ConnectorInput.RECV_HELLO_REFUSED)
            return
        self._outbox.send(
            BusWelcome(
                status=Status.OK,
                version=version,
                max_call_payload_bytes=limits.max_call_payload_bytes,
                max_handles=limits.max_handles,
                max_windows=limits.max_windows,
                max_window_bytes=limits.max_window_bytes,
                max_total_window_bytes=limits.max_total_window_bytes,
            )
        )
        self._version = version
        self._outbox.batch_windows = version >= BUS_VERSION_WINDOWS
        if version >= BUS_VERSION_LIMITS:
            self._transition(ConnectorInput.RECV_HELLO_ACCEPTED_V3)  # the replay follows BUS_LIMITS
            return
        self._transition(ConnectorInput.RECV_HELLO_ACCEPTED)
        self._replay()

    def _on_limits(self, msg: BusLimits) -> None:
        if not self._transition(ConnectorInput.RECV_LIMITS):
            self._container.refuse(Refusal.UNEXPECTED)
            return
        self._announced.limit = msg.max_devices
        self._replay()

    def _replay(self) -> None:
        """The DEVADD replay and BUS_SYNCED: registration is complete."""
        for device_id, device in sorted(self._container.devices().items()):
            self._announce(device_id, device)
        count = len(self._announced)
        self._outbox.send(BusSynced(count))
        log.info("host registered (bus v%d), %d devices replayed", self._version, count)
        self._events.append(HostRegistered(self._version, count))

    def _on_open(self, msg: DevOpen, channel: Channel, now: float) -> None:
        device = self._container.device(msg.device_id)
        if device is None:
            self._container.refuse(Refusal.UNKNOWN_DEVICE)
            self._outbox.send(DevOpenReply(msg.call_id, Status.ENODEV, 0), channel)
            return
        if not self._container.can_open():
            self._container.refuse(Refusal.LIMIT)
            self._outbox.send(DevOpenReply(msg.call_id, Status.EMFILE, 0), channel)
            return
        handle = self._container.new_handle(msg.device_id, msg.version)
        try:
            status = _status_of(device.open(handle, now=now))
        except DevcallError as exc:
            status = exc.status
        if status < 0:
            self._container.drop_handle(handle)
            self._counts.opens_refused += 1
            self._outbox.send(DevOpenReply(msg.call_id, status, 0), channel)
            return
        self._counts.opens += 1
        self._outbox.send(DevOpenReply(msg.call_id, status, handle.handle_id), channel)

    def _on_close(self, msg: DevClose, now: float) -> None:
        handle = self._container.handle(msg.handle)
        if handle is None:
            self._container.refuse(Refusal.UNKNOWN_HANDLE)
            return
        self._close(handle, now)

    def _close(self, handle: Handle, now: float) -> None:
        for att in list(handle.attachments.values()):
            self._detach(att, now)
        device = self._container.device(handle.device_id)
        self._container.drop_handle(handle)
        if device is not None:
            device.close(handle, now=now)

    def _on_call(self, msg: DevCall, channel: Channel, now: float) -> None:
        self._counts.calls += 1
        status, out = self._call(msg, now)
        if not msg.flags & _NO_REPLY:
            reply = encode_devcall_reply(msg.call_id, status, out)
            self._outbox.send_encoded(channel, reply, DevCallReply)

    def _call(self, msg: DevCall, now: float) -> tuple[int, bytes]:
        container = self._container
        handle = container.handle(msg.handle)
        device = None if handle is None else container.device(handle.device_id)
        if handle is None or device is None:
            container.refuse(Refusal.UNKNOWN_HANDLE)
            return Status.EBADF, b""
        if len(msg.payload) > self._max_call_payload_bytes:
            container.refuse(Refusal.LIMIT)
            return Status.EMSGSIZE, b""
        try:
            status, out = device.call(handle, msg.func, msg.payload, now=now)
        except DevcallError as exc:
            return _status_of(exc.status), b""
        status = _status_of(status)
        if len(out) > MAX_CALL_PAYLOAD_BYTES:
            self._counts.replies_too_large += 1
            return Status.EMSGSIZE, b""
        if status < 0:
            self._counts.calls_failed += 1
        return status, bytes(out)

    def _on_attach(self, msg: ShmAttach, channel: Channel, now: float) -> None:
        status, signal = self._attach(msg, now)
        self._outbox.send(ShmAttachReply(msg.call_id, status, signal), channel)
        if status >= 0:
            # Only now may the device's flushes and notifications go out: the host
            # learns the signal handle from the reply, which must come first.
            att = self._container.window(msg.window)
            assert att is not None
            att.window.connect(
                self._outbox.send_bulk, flush_ends=self._version >= BUS_VERSION_FLUSH_ENDS
            )
            if att.signal is not None:
                att.signal.connect(self._outbox.send_bulk)

    def _attach(self, msg: ShmAttach, now: float) -> tuple[int, int]:
        handle = self._container.handle(msg.handle)
        device = None if handle is None else self._container.device(handle.device_id)
        limits = self.config.limits
        if handle is None or device is None:
            self._container.refuse(Refusal.UNKNOWN_HANDLE)
            return Status.EBADF, 0
        if not 1 <= msg.size_bytes <= limits.max_window_bytes:
            self._container.refuse(Refusal.LIMIT)
            return Status.EINVAL, 0
        if msg.device_offset + msg.device_length > msg.size_bytes:
            self._container.refuse(Refusal.OUT_OF_BOUNDS)
            return Status.ERANGE, 0
        if self._container.window(msg.window) is not None:
            self._container.refuse(Refusal.WINDOW_EXISTS)
            return Status.EEXIST, 0
        if not self._container.window_room(msg.size_bytes):
            self._container.refuse(Refusal.LIMIT)
            return Status.ENOSPC, 0
        window = Window(
            msg.window,
            msg.size_bytes,
            side=Side.BOARD,
            device_offset=msg.device_offset,
            device_length=msg.device_length,
        )
        signal = None
        if msg.flags & ShmFlags.SIGNAL:
            signal = Signal(self._container.new_signal_id(), release=window.flush)
            window.signal = signal
        att = Attachment(msg.shm_id, window, signal, handle)
        try:
            status = _status_of(device.attach(handle, att, now=now))
        except DevcallError as exc:
            status = exc.status
        if status < 0:
            self._counts.attaches_refused += 1
            window.disconnect()
            return status, 0
        self._container.add_attachment(att)
        self._counts.attaches += 1
        return status, 0 if signal is None else signal.signal_id

    def _on_detach(self, msg: ShmDetach, channel: Channel, now: float) -> None:
        handle = self._container.handle(msg.handle)
        att = None if handle is None else handle.attachments.get(msg.window)
        if handle is None:
            self._container.refuse(Refusal.UNKNOWN_HANDLE)
            status = Status.EBADF
        elif att is None:
            self._container.refuse(Refusal.UNKNOWN_WINDOW)
            status = Status.EBADF
        else:
            self._detach(att, now)
            status = Status.OK
        self._outbox.send(ShmDetachReply(msg.call_id, status), channel)

    def _detach(self, att: Attachment, now: float) -> None:
        device = self._container.device(att.handle.device_id)
        self._container.drop_attachment(att)
        att.window.disconnect()
        if device is not None:
            device.detach(att.handle, att, now=now)

    def _on_window(self, msg: WindowUpdate) -> None:
        att = self._container.window(msg.window)
        if att is None:
            self._container.refuse(Refusal.UNKNOWN_WINDOW)
            return
        status = att.window.apply(msg, writer=Side.HOST)
        if status is Status.ERANGE:
            self._container.refuse(Refusal.OUT_OF_BOUNDS)
        elif status is Status.EPERM:
            self._container.refuse(Refusal.WRONG_WRITER)
        else:
            self._counts.window_updates_applied += 1

    def _on_signal(self, msg: SignalNotify) -> None:
        att = self._container.signal(msg.signal)
        if att is None or att.signal is None:
            self._container.refuse(Refusal.UNKNOWN_SIGNAL)
            return
        att.signal.received_signal()

    def _on_signal_state(self, msg: SignalState) -> None:
        att = self._container.signal(msg.signal)
        if att is None or att.signal is None:
            self._container.refuse(Refusal.UNKNOWN_SIGNAL)
            return
        att.signal.received_state(msg)
