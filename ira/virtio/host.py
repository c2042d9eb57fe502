"""virtio over the bus, host side: drivers for ``virtio`` bus devices (DESIGN §5).

``VirtioHostDriver`` is a bus ``Driver`` for the type ``virtio``.  When such a
device appears it reads its virtio device id (the ``virtio_device_id``
attribute) and, if a ``VirtioClient`` is registered for that id, binds them
with a ``VirtioBinding`` that initialises the device as virtio 1.2 §3.1.1
says, one DEVCALL at a time:

1. open the device and reset it (status 0, read back as 0);
2. ACKNOWLEDGE, then DRIVER;
3. read the offered features, selector by selector; apply the host's
   ``FeaturePolicy`` and the client's supported set; write the driver
   features (if a required feature is missing: FAILED);
4. set FEATURES_OK and check, in the status re-read with the reply, that the
   device kept it (else FAILED);
5. read the client's part of the configuration space (``config_bytes``), with
   its generation, into ``binding.config`` (step 7's device-specific setup);
   attach the event window; for each queue learn its maximum size, attach a
   window holding its rings (its signal is the queue's notifications), set
   the queue up and enable it; attach the client's data windows;
6. set DRIVER_OK.

The sequence is a generator that yields each request and is resumed with its
outcome, so the binding stays sans-I/O: the bus's events drive it.  Every
negotiation is kept (``negotiation``) for tools to show.  After DRIVER_OK
the client adds chains to ``binding.queues[i]`` and calls ``kick(i)``; used
buffers arrive through ``VirtioClient.used``.  When the configuration
generation moves (the event window says so) the configuration is read again
and ``VirtioClient.config_changed`` runs with the new bytes in
``binding.config``.  A DEVICE_NEEDS_RESET (seen
through the event window) or a broken queue moves the binding to
NEEDS_RESET; ``reinitialise()`` resets the device and runs the sequence
again, in fresh windows.

Recovery (``RecoveryPolicy``): the host does that by itself.  A binding that
needs a reset logs one line (what failed; the reset planned and when) and
resets the device after a wait that doubles with each reset in a row (0.1 s,
0.2 s, ... up to 10 s), through the bus's timers (``next_deadline`` /
``handle_timeout``), never from inside the callback that noticed the
failure.  A reset that fails counts as the next one of the row.  A device
that stayed ready for ``healthy_s`` starts a new row; after ``max_resets`` in
a row the binding gives up (FAILED, said once) until the device is added
again or ``reinitialise()`` is called.  The binding keeps the count of
failures and of resets, when the last failure was seen and when the next
reset is due (``VirtioDeviceInfo``, ``ira host list``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

from ira.busmodel.bus import Bus
from ira.busmodel.drivers import Driver
from ira.busmodel.events import (
    CallCompleted,
    CallFailed,
    DeviceEvent,
    DeviceInfo,
    DeviceOpened,
    SignalReceived,
    WindowAttached,
)
from ira.busmodel.window import Window
from ira.errors import ConfigError, DevcallError, LocalProtocolError, RemoteProtocolError
from ira.virtio.calls import (
    DEVICE_ID_ATTR,
    EVENT_BYTES,
    EVENT_SHM,
    ConfigRead,
    ConfigReadReply,
    DeviceFeatures,
    FeaturesReply,
    QueueEnable,
    QueueMax,
    QueueMaxReply,
    QueueSet,
    Reply,
    Request,
    SetDriverFeatures,
    SetStatus,
    StatusReply,
    decode_event,
    decode_reply,
    encode,
)
from ira.virtio.driver import UsedBuffer, VirtqueueDriver
from ira.virtio.features import (
    FEATURE_WORDS,
    TRANSPORT_FEATURES,
    DeviceStatus,
    Feature,
    FeaturePolicy,
    Negotiation,
    feature_word,
)
from ira.virtio.memory import MemoryMap, WindowMemory
from ira.virtio.ring import QueueAddresses, QueueBroken, split_layout

log = logging.getLogger(__name__)
S = DeviceStatus


class BindingState(enum.Enum):
    INITIALISING = "initialising"
    READY = "ready"
    NEEDS_RESET = "needs_reset"
    FAILED = "failed"


#: names of the virtio device ids ira knows (virtio 1.2 §5), for log lines
DEVICE_NAMES: Mapping[int, str] = {1: "network", 2: "block", 3: "console", 4: "entropy"}


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """How the host brings back a device that needs a reset (see the module docstring)."""

    #: resets in a row (no healthy spell between them) before the host gives up;
    #: 0: none by itself (the binding stays NEEDS_RESET until ``reinitialise()``)
    max_resets: int = 6
    #: the wait before the first reset of a row; each next one waits twice as long
    first_delay_s: float = 0.1
    #: the longest wait before a reset
    max_delay_s: float = 10.0
    #: a device that stayed ready this long before failing starts a new row
    healthy_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_resets < 0:
            raise ConfigError("max_resets must be 0 (no automatic resets) or more")
        if not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ConfigError("first_delay_s must be between 0 and max_delay_s")
        if self.healthy_s < 0:
            raise ConfigError("healthy_s must not be negative")

    def delay_s(self, attempt: int) -> float:
        """The wait before reset ``attempt`` (1, 2, ...) of a row."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** (attempt - 1))


@dataclass(frozen=True, slots=True)
class VirtioDeviceInfo:
    """What the host knows of one ``virtio`` bus device (a snapshot, for tools)."""

    #: the bus device id
    device_id: int
    #: the virtio device id (virtio 1.2 §5: 1 network, 4 entropy, ...)
    virtio_id: int
    #: the binding's state; None when no client drives this virtio device id
    state: BindingState | None = None
    #: the feature negotiation, once the offer was read
    negotiation: Negotiation | None = None
    #: why the binding failed or needs a reset (the last failure's, once ready again)
    reason: str = ""
    #: failures seen: DEVICE_NEEDS_RESET, a broken queue, a reset that failed
    failures: int = 0
    #: resets the host made by itself to bring the device back
    resets: int = 0
    #: when the last failure was seen (the bus's monotonic clock), or None
    failed_at: float | None = None
    #: when the next reset is due, or None
    retry_at: float | None = None

    @property
    def settled(self) -> bool:
        """Initialisation is over, or never started (no client)."""
        return self.state is not BindingState.INITIALISING


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A data window the client wants attached: ``device_writable`` bytes go device-side."""

    name: str
    size_bytes: int
    device_writable: bool = False


class VirtioClient:
    """A host-side driver for one virtio device type; override what is needed."""

    #: features this driver can use (device-type bits and transport bits)
    supported_features: int = TRANSPORT_FEATURES
    #: the queue sizes wanted (each is cut to what the device allows)
    queue_sizes: tuple[int, ...] = ()
    #: data windows to attach before DRIVER_OK
    windows: tuple[WindowSpec, ...] = ()
    #: bytes of configuration space to read (from offset 0) before DRIVER_OK and after changes
    config_bytes: int = 0

    def ready(self, binding: VirtioBinding, *, now: float) -> None:
        """DRIVER_OK is set: queues and windows are usable."""

    def used(self, binding: VirtioBinding, index: int, used: list[UsedBuffer[object]]) -> None:
        """Chains came back on queue ``index``."""

    def config_changed(self, binding: VirtioBinding) -> None:
        """The device's configuration generation moved (``binding.config`` is re-read)."""

    def failed(self, binding: VirtioBinding, reason: str) -> None:
        """Initialisation failed, or the device needs a reset."""

    def removed(self, binding: VirtioBinding) -> None:
        """The device is gone (DEVDROP, session reset); nothing of the binding is usable."""


@dataclass(frozen=True, slots=True)
class _Call:
    request: Request


@dataclass(frozen=True, slots=True)
class _Attach:
    shm_id: int
    window: Window
    signal: bool


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    payload: bytes
    #: the function of the call answered (None: an attach)
    func: int | None = None


_Step = _Call | _Attach
_Sequence = Generator[_Step, _Reply, None]


class _InitFailed(Exception):
    """Initialisation gave up; the message says why."""


class _ResetNeeded(_InitFailed):
    """The device set DEVICE_NEEDS_RESET during initialisation."""


class VirtioBinding:
    """One virtio device bound to one client (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        device: DeviceInfo,
        client: VirtioClient,
        *,
        policy: FeaturePolicy,
        now: float,
        timeout_s: float | None = None,
        recovery: RecoveryPolicy | None = None,
    ) -> None:
        self.bus = bus
        self.device = device
        self.client = client
        self.policy = policy
        self.timeout_s = timeout_s
        self.recovery = recovery or RecoveryPolicy()
        self.state = BindingState.INITIALISING
        self.handle: int | None = None
        self.negotiation: Negotiation | None = None
        self.queues: list[VirtqueueDriver[object]] = []
        self.windows: dict[str, Window] = {}
        self.memory = MemoryMap()
        self.generation = 0
        #: the first ``client.config_bytes`` of the configuration space, as last read
        self.config = b""
        self.reason = ""
        #: failures seen, and resets made by the host itself (see ``RecoveryPolicy``)
        self.failures = 0
        self.resets = 0
        #: when the last failure was seen, when the next reset is due, when last ready
        self.failed_at: float | None = None
        self.retry_at: float | None = None
        self.ready_at: float | None = None
        self._row = 0  # resets in the current row
        self._recovering = False  # the running sequence is a reset of the host's own
        self._unstamped = False  # a failure seen without a clock: stamped at the next timer
        self._ring_windows: dict[int, int] = {}  # window id -> queue index
        self._event_window: Window | None = None
        self._pending: int | None = None  # call id the sequence waits for
        self._pending_func: int | None = None  # its function, when it is a DEVCALL
        self._sequence: _Sequence | None = None
        self._config_stale = False
        self._now = now
        self._open(now)

    # -- for clients ------------------------------------------------------------

    def kick(self, index: int) -> bool:
        """Publish queue ``index``'s new chains and notify the device; True if any."""
        queue = self.queues[index]
        if self.state is not BindingState.READY or not queue.unpublished:
            return False
        try:
            queue.publish()
        except QueueBroken as exc:
            self._needs_reset(f"queue {index}: {exc}")
            return False
        window = self._ring_window(index)
        if window.signal is not None:
            window.signal.notify()
        return True

    def collect(self, index: int) -> list[UsedBuffer[object]]:
        """Used buffers of queue ``index`` in the replica now, notified or not."""
        if self.state is not BindingState.READY:
            return []
        try:
            return self.queues[index].collect()
        except QueueBroken as exc:
            self._needs_reset(f"queue {index}: {exc}")
            return []

    def interrupts(self, index: int, *, enabled: bool) -> bool:
        """Ask for used buffer notifications of queue ``index``, or not.

        Both virtio's hint (callbacks, §2.7.7) and the bus signal's receiver
        follow: while disabled the device sends at most one SIGNAL, which
        waits here unanswered, so neither side spends a message per buffer;
        enabling answers it (the device then notifies what it used meanwhile).
        Enabling returns True if used buffers are already waiting: collect
        them rather than wait.
        """
        if self.state is not BindingState.READY:
            return False
        queue, signal = self.queues[index], self._ring_window(index).signal
        try:
            if not enabled:
                queue.disable_callbacks()
                waiting = False
            else:
                waiting = queue.enable_callbacks()
        except QueueBroken as exc:
            self._needs_reset(f"queue {index}: {exc}")
            return False
        if signal is not None:
            if enabled:
                signal.enable()
            else:
                signal.disable()
        return waiting

    def request_reset(self, reason: str) -> None:
        """Have the device reset and initialised again, as the recovery does (for a client
        whose device changed what only a reset may change, e.g. virtio-net's MTU).

        Not counted as a failure, but as a reset of the row: a device that keeps
        asking is given up like one that keeps failing."""
        if self.state is BindingState.READY:
            self._needs_reset(reason, failure=False)

    def reinitialise(self, *, now: float) -> list[object]:
        """Reset the device and initialise it again, in fresh windows; returns the lost tokens.

        The old windows are detached; the sequence restarts at the reset
        (status 0) on the same handle, or at the open if there is none.  A
        reset the host planned is called off, and the count of resets in a row
        starts again (also after the host gave up).
        """
        self._row = 0
        self._recovering = False
        return self._restart(now)

    def next_deadline(self) -> float | None:
        """When the planned reset is due (or a failure waits to be stamped), or None."""
        if self._unstamped:
            return self._now
        return self.retry_at

    def handle_timeout(self, *, now: float) -> None:
        """Stamp a failure seen without a clock; make the reset that is due."""
        self._now = now
        if self._unstamped:
            self._schedule(now)
        due = self.retry_at
        if due is None or now < due or self.state is not BindingState.NEEDS_RESET:
            return
        self.retry_at = None
        self._row += 1
        self.resets += 1
        self._recovering = True
        self._restart(now)

    def _restart(self, now: float) -> list[object]:
        self.retry_at = None
        self._unstamped = False
        lost = [token for queue in self.queues for token in queue.detach()]
        windows = [m.window for m in self.memory if isinstance(m, WindowMemory)]
        if self._event_window is not None:
            windows.append(self._event_window)
        if self.handle is not None and self.bus.is_open(self.handle):
            for window in windows:
                if not window.closed:
                    self.bus.detach(window, now=now, timeout_s=self.timeout_s)
        handle = self.handle
        self._forget()
        self.state = BindingState.INITIALISING  # ``reason`` stays: the last failure's
        if handle is None or not self.bus.is_open(handle):
            self._open(now)
        else:
            self.handle = handle
            self._sequence = self._initialise()
            self._advance(None, now)
        return lost

    # -- bus events ---------------------------------------------------------------

    def handle_event(self, event: DeviceEvent, *, now: float) -> None:
        self._now = now
        if isinstance(event, SignalReceived):
            self._signalled(event.window_id, now)
            return
        if not isinstance(event, DeviceOpened | CallCompleted | CallFailed | WindowAttached):
            return
        if event.call_id != self._pending:
            return
        self._pending = None
        func, self._pending_func = self._pending_func, None
        if self.handle is None and not isinstance(event, DeviceOpened):
            self._sequence = None
            self._fail(f"open failed: {getattr(event, 'error', event)}")
        elif isinstance(event, DeviceOpened):
            self.handle = event.handle
            self._advance(None, now)
        elif isinstance(event, CallCompleted):
            self._advance(_Reply(event.status, event.payload, func), now)
        elif isinstance(event, WindowAttached):
            self._advance(_Reply(0, b""), now)
        elif isinstance(event.error, DevcallError):
            self._advance(_Reply(event.error.status, b"", func), now)
        else:
            self._fail(f"request failed: {event.error}")

    def removed(self) -> None:
        """The device is gone (DEVDROP, session reset): nothing of it is usable."""
        for queue in self.queues:
            queue.detach()
        self._forget()
        self.state = BindingState.FAILED
        self.reason = "device removed"
        self.retry_at = None
        self._unstamped = False
        self._recovering = False
        self.client.removed(self)

    # -- the initialisation sequence (§3.1.1) -------------------------------------

    def _open(self, now: float) -> None:
        self._sequence = self._initialise()
        self._pending = self.bus.open(self.device.device_id, now=now, timeout_s=self.timeout_s)

    def _advance(self, reply: _Reply | None, now: float) -> None:
        assert self._sequence is not None
        self._now = now
        try:
            step = next(self._sequence) if reply is None else self._sequence.send(reply)
        except StopIteration:
            self._sequence = None
            if self.state is BindingState.READY and self._config_outdated():
                self._reread_config(now)
            return
        except _ResetNeeded as exc:
            self._sequence = None
            self._needs_reset(str(exc), now)
            return
        except _InitFailed as exc:
            self._sequence = None
            self._fail(str(exc))
            return
        assert self.handle is not None
        if isinstance(step, _Call):
            self._pending_func = step.request.func
            self._pending = self.bus.call(
                self.handle,
                step.request.func,
                encode(step.request),
                now=now,
                timeout_s=self.timeout_s,
            )
        else:
            self._pending = self.bus.attach(
                self.handle,
                step.shm_id,
                step.window,
                now=now,
                signal=step.signal,
                timeout_s=self.timeout_s,
            )

    def _initialise(self) -> _Sequence:
        reply = yield _Call(SetStatus(0))
        status = self._status_of(reply, "reset")
        if status != 0:
            raise _InitFailed(f"status {status:#x} after reset")
        for bits in (S.ACKNOWLEDGE, S.ACKNOWLEDGE | S.DRIVER):
            reply = yield _Call(SetStatus(bits))
            self._status_of(reply, bits.name or "status")
        offered = 0
        for select in range(FEATURE_WORDS):
            reply = yield _Call(DeviceFeatures(select))
            offered |= self._features_of(reply, "device features") << (32 * select)
        supported = self.client.supported_features
        accepted = self.policy.accept(offered, supported)
        allowed = offered & self.policy.allowed
        if not self.policy.acceptable(accepted):
            self.negotiation = Negotiation(offered, allowed, supported, accepted, False)
            yield from self._give_up(S.ACKNOWLEDGE | S.DRIVER)
            raise _InitFailed("a required feature is missing")
        for select in range(FEATURE_WORDS):
            word = feature_word(accepted, select)
            reply = yield _Call(SetDriverFeatures(select, word))
            self._decoded(reply, "driver features")
        reply = yield _Call(SetStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK))
        status = self._status_of(reply, "FEATURES_OK")
        kept = bool(status & S.FEATURES_OK)
        self.negotiation = Negotiation(offered, allowed, supported, accepted, kept)
        if not kept:
            yield from self._give_up(S(status))
            raise _InitFailed("the device refused the features")
        yield from self._read_config()
        yield from self._setup_windows(accepted)
        reply = yield _Call(SetStatus(S(status) | S.DRIVER_OK))
        status = self._status_of(reply, "DRIVER_OK")
        if status & S.DEVICE_NEEDS_RESET:
            raise _ResetNeeded("the device set DEVICE_NEEDS_RESET at DRIVER_OK")
        if not status & S.DRIVER_OK:
            raise _InitFailed(f"status {status:#x} after DRIVER_OK")
        self.state = BindingState.READY
        self.ready_at = self._now
        if self._recovering:
            self._recovering = False
            log.info(
                "%s ready again after %d reset(s) in a row: %s",
                self._what(),
                self._row,
                self.negotiation.describe(),
            )
        else:
            log.info("%s ready: %s", self._what(), self.negotiation.describe())
        self.client.ready(self, now=self._now)

    def _setup_windows(self, features: int) -> Generator[_Step, _Reply, None]:
        event = self.bus.create_window(EVENT_BYTES, device_offset=0, device_length=EVENT_BYTES)
        yield _Attach(EVENT_SHM, event, True)
        self._event_window = event
        sizes: list[int] = []
        for index, wanted in enumerate(self.client.queue_sizes):
            reply = yield _Call(QueueMax(index))
            largest = self._queue_max_of(reply, "queue max")
            if largest == 0:
                raise _InitFailed(f"the device has no queue {index}")
            size = min(wanted, largest)
            lay = split_layout(size)
            ring = self.bus.create_window(
                lay.size_bytes, device_offset=lay.used_offset, device_length=lay.used_bytes
            )
            yield _Attach(1 + index, ring, True)
            self.memory.add(WindowMemory(ring))
            self._ring_windows[ring.window_id] = index
            addrs = QueueAddresses.in_window(ring.window_id, lay)
            setup = QueueSet(index, size, ring.window_id, addrs.desc, addrs.avail, addrs.used)
            self._decoded((yield _Call(setup)), "queue setup")
            self._decoded((yield _Call(QueueEnable(index))), "queue enable")
            sizes.append(size)
        for n, spec in enumerate(self.client.windows):
            length = spec.size_bytes if spec.device_writable else 0
            window = self.bus.create_window(spec.size_bytes, device_offset=0, device_length=length)
            yield _Attach(1 + len(sizes) + n, window, False)
            self.memory.add(WindowMemory(window))
            self.windows[spec.name] = window
        for index, size in enumerate(sizes):
            addrs = QueueAddresses.in_window(self._ring_window(index).window_id, split_layout(size))
            self.queues.append(
                VirtqueueDriver(
                    self.memory,
                    size,
                    addrs,
                    event_idx=bool(features & Feature.EVENT_IDX.mask),
                    indirect=bool(features & Feature.INDIRECT_DESC.mask),
                )
            )

    def _give_up(self, status: DeviceStatus) -> Generator[_Step, _Reply, None]:
        yield _Call(SetStatus(status | S.FAILED))

    def _read_config(self) -> Generator[_Step, _Reply, None]:
        size = self.client.config_bytes
        if not size:
            return
        self._config_stale = False
        reply = self._decoded((yield _Call(ConfigRead(0, size))), "config read")
        assert isinstance(reply, ConfigReadReply)
        if len(reply.data) != size:
            raise _InitFailed(f"config read: {len(reply.data)} bytes, not {size}")
        self.generation = reply.generation
        self.config = reply.data

    def _config_changed(self) -> Generator[_Step, _Reply, None]:
        yield from self._read_config()
        self.client.config_changed(self)

    def _config_outdated(self) -> bool:
        """A change was signalled meanwhile, or the event window shows another generation."""
        event = self._event_window
        if not self.client.config_bytes or event is None:
            return False
        try:
            generation = decode_event(event.read(0, EVENT_BYTES)).generation
        except RemoteProtocolError:
            return self._config_stale
        return self._config_stale or generation != self.generation

    def _reread_config(self, now: float) -> None:
        """Read the configuration again, now or when the running sequence ends."""
        if self._sequence is not None:
            self._config_stale = True
            return
        self._sequence = self._config_changed()
        self._advance(None, now)

    # -- replies --------------------------------------------------------------------

    @staticmethod
    def _decoded(reply: _Reply, what: str) -> Reply:
        """The decoded reply payload; gives up on a negative status or a malformed payload."""
        if reply.status < 0:
            raise _InitFailed(f"{what}: status {reply.status}")
        assert reply.func is not None
        try:
            return decode_reply(reply.func, reply.payload)
        except RemoteProtocolError as exc:
            raise _InitFailed(f"{what}: {exc}") from None

    def _status_of(self, reply: _Reply, what: str) -> int:
        decoded = self._decoded(reply, what)
        assert isinstance(decoded, StatusReply)
        return decoded.status

    def _features_of(self, reply: _Reply, what: str) -> int:
        decoded = self._decoded(reply, what)
        assert isinstance(decoded, FeaturesReply)
        return decoded.bits

    def _queue_max_of(self, reply: _Reply, what: str) -> int:
        decoded = self._decoded(reply, what)
        assert isinstance(decoded, QueueMaxReply)
        return decoded.size

    # -- notifications --------------------------------------------------------------

    def _signalled(self, window_id: int, now: float) -> None:
        event = self._event_window
        if event is not None and window_id == event.window_id:
            try:
                record = decode_event(event.read(0, EVENT_BYTES))
            except RemoteProtocolError as exc:
                if self.state is BindingState.READY:
                    self._needs_reset(f"event window: {exc}", now)
                return
            generation = record.generation
            if record.status & S.DEVICE_NEEDS_RESET and self.state is BindingState.READY:
                self._needs_reset("the device set DEVICE_NEEDS_RESET", now)
            if generation != self.generation:
                if not self.client.config_bytes:
                    self.generation = generation
                    self.client.config_changed(self)
                elif self.state in (BindingState.INITIALISING, BindingState.READY):
                    self._reread_config(now)
            return
        index = self._ring_windows.get(window_id)
        if index is None or self.state is not BindingState.READY:
            return
        try:
            used = self.queues[index].collect()
        except QueueBroken as exc:
            self._needs_reset(f"queue {index}: {exc}", now)
            return
        if used:
            self.client.used(self, index, used)

    # -- state ------------------------------------------------------------------------

    def _ring_window(self, index: int) -> Window:
        for window_id, i in self._ring_windows.items():
            if i == index:
                memory = self.memory.get(window_id)
                assert isinstance(memory, WindowMemory)
                return memory.window
        raise LocalProtocolError(f"no queue {index}")

    def _what(self) -> str:
        virtio_id = dict(self.device.attrs).get(DEVICE_ID_ATTR, "?")
        try:
            name = DEVICE_NAMES.get(int(virtio_id), f"virtio id {virtio_id}")
        except ValueError:
            name = f"virtio id {virtio_id}"
        return f"virtio device {self.device.device_id} ({name})"

    def _needs_reset(self, reason: str, now: float | None = None, *, failure: bool = True) -> None:
        """The device needs a reset: tell the client; plan the reset (see ``RecoveryPolicy``).

        Without ``now`` (a broken queue found by a client's call) the failure is
        stamped, logged and planned at the next timer turn, which is due at once.
        """
        if self.state is BindingState.NEEDS_RESET:
            return  # one failure at a time: the first reason is the one reported
        self.state = BindingState.NEEDS_RESET
        self.reason = reason
        self.failures += failure
        self._recovering = False
        self.client.failed(self, reason)
        if now is None:
            self._unstamped = True
        else:
            self._schedule(now)

    def _schedule(self, now: float) -> None:
        """Stamp the failure; plan the next reset or give up; one log line either way."""
        self._unstamped = False
        self.failed_at = now
        policy = self.recovery
        if self.state is not BindingState.NEEDS_RESET:
            return  # removed or reset meanwhile
        if not policy.max_resets:
            log.warning("%s needs a reset: %s (no automatic resets)", self._what(), self.reason)
            return
        if self.ready_at is not None and now - self.ready_at >= policy.healthy_s:
            self._row = 0
        if self._row >= policy.max_resets:
            self.state = BindingState.FAILED
            self.reason = f"gave up after {self._row} resets in a row: {self.reason}"
            self.retry_at = None
            log.error("%s failed: %s", self._what(), self.reason)
            return
        delay = policy.delay_s(self._row + 1)
        self.retry_at = now + delay
        log.warning(
            "%s needs a reset: %s; resetting it in %.1f s (reset %d of at most %d in a row)",
            self._what(),
            self.reason,
            delay,
            self._row + 1,
            policy.max_resets,
        )

    def _fail(self, reason: str) -> None:
        if self._recovering:  # a reset of the host's own failed: the next one of the row
            self._needs_reset(f"reset failed: {reason}", self._now)
            return
        self.state = BindingState.FAILED
        self.reason = reason
        self.failed_at = self._now
        log.warning("%s failed: %s", self._what(), reason)
        self.client.failed(self, reason)

    def _forget(self) -> None:
        self.queues = []
        self.windows = {}
        self.memory = MemoryMap()
        self._ring_windows = {}
        self._event_window = None
        self._pending = None
        self._sequence = None
        self._config_stale = False
        self.handle = None


class VirtioHostDriver(Driver):
    """The bus driver for ``virtio`` devices: binds each to the client for its device id."""

    def __init__(
        self,
        clients: Mapping[int, Callable[[], VirtioClient]],
        *,
        policy: FeaturePolicy | None = None,
        timeout_s: float | None = None,
        recovery: RecoveryPolicy | None = None,
    ) -> None:
        """``recovery``: how devices that need a reset are brought back (default
        ``RecoveryPolicy()``)."""
        self.clients = dict(clients)
        self.policy = policy or FeaturePolicy()
        self.timeout_s = timeout_s
        self.recovery = recovery or RecoveryPolicy()
        self.bindings: dict[int, VirtioBinding] = {}
        #: the virtio device id of every ``virtio`` device present, by bus device id
        self.virtio_ids: dict[int, int] = {}

    def probe(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        attrs = dict(device.attrs)
        try:
            virtio_id = int(attrs.get(DEVICE_ID_ATTR, ""))
        except ValueError:
            return
        self.virtio_ids[device.device_id] = virtio_id
        make = self.clients.get(virtio_id)
        if make is None:
            return
        self.bindings[device.device_id] = VirtioBinding(
            bus,
            device,
            make(),
            policy=self.policy,
            now=now,
            timeout_s=self.timeout_s,
            recovery=self.recovery,
        )

    def remove(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        self.virtio_ids.pop(device.device_id, None)
        binding = self.bindings.pop(device.device_id, None)
        if binding is not None:
            binding.removed()

    def handle_event(self, bus: Bus, event: DeviceEvent, *, now: float) -> None:
        binding = self.bindings.get(event.device_id)
        if binding is not None:
            binding.handle_event(event, now=now)

    def next_deadline(self) -> float | None:
        """The earliest reset planned by a binding (see ``RecoveryPolicy``), or None."""
        due = [d for b in self.bindings.values() if (d := b.next_deadline()) is not None]
        return min(due, default=None)

    def handle_timeout(self, bus: Bus, *, now: float) -> None:
        for binding in list(self.bindings.values()):
            deadline = binding.next_deadline()
            if deadline is not None and deadline <= now:
                binding.handle_timeout(now=now)

    def statistics(self) -> dict[str, int]:
        """Counters over the bindings present: failures, resets, give-ups, by state."""
        counts = {"virtio_failures": 0, "virtio_resets": 0}
        for b in self.bindings.values():
            counts["virtio_failures"] += b.failures
            counts["virtio_resets"] += b.resets
            key = f"virtio_{b.state.value}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def negotiations(self) -> dict[int, Negotiation]:
        """The negotiated features of every bound device, by bus device id."""
        return {
            device_id: b.negotiation
            for device_id, b in self.bindings.items()
            if b.negotiation is not None
        }

    def devices(self) -> list[VirtioDeviceInfo]:
        """Every ``virtio`` device present, by bus device id, with its binding's state."""
        infos = []
        for device_id, virtio_id in sorted(self.virtio_ids.items()):
            b = self.bindings.get(device_id)
            if b is None:
                infos.append(VirtioDeviceInfo(device_id, virtio_id))
            else:
                infos.append(
                    VirtioDeviceInfo(
                        device_id,
                        virtio_id,
                        b.state,
                        b.negotiation,
                        b.reason,
                        b.failures,
                        b.resets,
                        b.failed_at,
                        b.retry_at,
                    )
                )
        return infos


def bindings_ready(driver: VirtioHostDriver) -> Sequence[VirtioBinding]:
    """The bindings that reached DRIVER_OK."""
    return [b for b in driver.bindings.values() if b.state is BindingState.READY]
