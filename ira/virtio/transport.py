"""virtio over the bus, board side: a bus device of type ``virtio`` (DESIGN §5).

A virtio device model subclasses ``VirtioDevice``, names its virtio device id
(§5), its device-specific features, the maximum size of each queue and its
configuration space, and overrides the hooks it needs::

    class Entropy(VirtioDevice):
        virtio_id = 4
        queue_sizes = (64,)

        def queue_notified(self, index, queue):
            while (chain := queue.pop()) is not None:
                data = self.rng.randbytes(chain.writable_bytes)
                queue.write(chain, data)
                queue.push(chain, len(data))

The transport does the rest through the DEVCALLs of ``ira.virtio.calls``:
feature negotiation, the device status state machine (``ira.virtio.status``),
configuration space with its generation counter, queue setup in the host's
windows, reset.

Notifications are bus signals: a queue's notify window's signal carries the
driver's available-buffer notifications to the board and the device's
used-buffer notifications back.  ``queue_notified`` runs when the driver
notifies (and once per queue at DRIVER_OK, for chains added before it, which
the device must not touch earlier, §2.1.2); what it pushed is published and
the driver notified when it returns (or earlier with ``interrupt()``).

A notification is only a hint: a device may look at its rings any time.  A
SIGNAL waits behind everything sent before it on the link, so on a busy slow
line it arrives long after the ring update it announces.  With bus v2 the
transport therefore also runs a queue when the driver's flush of the window
holding its available ring has been applied whole (``Window.on_update``,
after the last WINDOW message of the flush, so never with an index ahead of
the entries it publishes), if the device is live, has not disabled the
queue's notifications (``notifications()``) and chains are there; counted as
``ring_update_runs``.  A broken ring found so sets DEVICE_NEEDS_RESET as any
other.  The driver's SIGNAL still comes and finds the work done.

The rings keep virtio's suppression fields (NO_NOTIFY/NO_INTERRUPT, EVENT_IDX)
exactly, but over a link the decision ``publish()`` takes reads a replica
that may lag the peer's latest writes: the store-load barrier §2.7.13 asks
for before reading the peer's flags cannot be had without a round trip.  So
the transport notifies after every publish that exposed something and lets
the bus signal suppress instead: it sends at most one SIGNAL in flight, none
while the peer is busy, and never loses one (``ira.busmodel.signal``).  The
ring's own decisions are counted (``statistics()``).

A queue the driver breaks (``QueueBroken``) sets DEVICE_NEEDS_RESET (§2.1.2):
the device stops using its queues until the driver resets it, and tells the
driver through the event window when it has one.  A driver that gives up on
the device sets FAILED (§2.1): the device says so in one line, counts it
(``driver_failed``) and accepts nothing but a reset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import assert_never

from ira.busmodel.device import Attachment, Device, Handle
from ira.busmodel.window import Side
from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.virtio.calls import (
    DEVICE_ID_ATTR,
    EVENT_BYTES,
    EVENT_SHM,
    MAX_QUEUE_SIZE,
    VIRTIO_TYPE,
    ConfigRead,
    ConfigReadReply,
    ConfigWrite,
    DeviceFeatures,
    DriverFeatures,
    EmptyReply,
    EventRecord,
    FeaturesReply,
    GenerationReply,
    GetGeneration,
    GetStatus,
    QueueCount,
    QueueCountReply,
    QueueEnable,
    QueueMax,
    QueueMaxReply,
    QueueSet,
    Reply,
    Request,
    Reset,
    SetDriverFeatures,
    SetStatus,
    StatusReply,
    VirtioFunc,
    decode_request,
    encode,
)
from ira.virtio.counters import DeviceStatistics
from ira.virtio.device import VirtqueueDevice
from ira.virtio.features import (
    FEATURE_WORDS,
    TRANSPORT_FEATURES,
    DeviceStatus,
    Feature,
    feature_word,
    with_feature_word,
)
from ira.virtio.memory import MemoryMap, WindowMemory
from ira.virtio.ring import QueueAddresses, QueueBroken
from ira.virtio.status import StatusWrite, decide
from ira.wire.bus import Status

log = logging.getLogger(__name__)
S = DeviceStatus


@dataclass(slots=True, eq=False)
class _Queue:
    max_size: int
    setup: QueueSet | None = None
    ring: VirtqueueDevice | None = None


class VirtioDevice(Device):
    """Base class of a virtio device model on the board (see the module docstring)."""

    type = VIRTIO_TYPE
    version = 1
    #: the virtio device id (§5): 1 network, 3 console, 4 entropy, ...
    virtio_id: int = 0
    #: everything offered: device-type bits and the transport's (VERSION_1, EVENT_IDX, INDIRECT)
    device_features: int = TRANSPORT_FEATURES
    #: the largest size of each queue (a power of two up to 32768)
    queue_sizes: tuple[int, ...] = ()

    def __init__(self, config: bytes = b"") -> None:
        for size in self.queue_sizes:
            if not 1 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
                raise LocalProtocolError(f"bad queue size {size}")
        if not self.device_features & Feature.VERSION_1.mask:
            raise LocalProtocolError("a virtio 1.x device offers VIRTIO_F_VERSION_1")
        self._config = bytearray(config)
        self._generation = 0
        self._status = S(0)
        self._driver_features = 0
        self._features = 0
        self._queues = [_Queue(size) for size in self.queue_sizes]
        self._handle: Handle | None = None
        self._memory = MemoryMap()
        self._signalled: dict[int, Callable[[], None]] = {}
        self._event: Attachment | None = None
        self._counts = DeviceStatistics()

    # -- for device authors -------------------------------------------------

    @property
    def status(self) -> DeviceStatus:
        return self._status

    @property
    def features(self) -> int:
        """The negotiated features (0 until FEATURES_OK)."""
        return self._features

    @property
    def live(self) -> bool:
        """DRIVER_OK, and neither NEEDS_RESET nor FAILED: the device may use its queues."""
        return self._status & (S.DRIVER_OK | S.DEVICE_NEEDS_RESET | S.FAILED) == S.DRIVER_OK

    @property
    def config(self) -> bytes:
        return bytes(self._config)

    @property
    def generation(self) -> int:
        return self._generation

    def queue(self, index: int) -> VirtqueueDevice | None:
        """Queue ``index`` if it is enabled and the device is live."""
        if not self.live or not 0 <= index < len(self._queues):
            return None
        return self._queues[index].ring

    def interrupt(self, index: int) -> bool:
        """Publish what was pushed on queue ``index`` and notify the driver; True if any."""
        q = self._queues[index]
        if not self.live or q.ring is None or q.setup is None or not q.ring.unpublished:
            return False
        try:
            wanted = q.ring.publish()
        except QueueBroken as exc:
            self.queue_failed(index, exc)
            return False
        if wanted:
            self._counts.virtio_notify += 1
        else:
            self._counts.virtio_notify_suppressed += 1
        att = self._attachment(q.setup.notify_window)
        if att is not None and att.signal is not None:
            att.signal.notify()
        return True

    def notifications(self, index: int, *, enabled: bool) -> bool:
        """Ask for available buffer notifications of queue ``index``, or not.

        Both virtio's hint (§2.7.10) and the bus signal's receiver follow:
        while disabled the driver sends at most one SIGNAL, which waits here
        unanswered; enabling runs the queue for it now if one came (or tells
        the driver, which then notifies what it made available meanwhile).
        Enabling returns True if chains are already available.
        """
        q = self._queues[index]
        if not self.live or q.ring is None or q.setup is None:
            return False
        att = self._attachment(q.setup.notify_window)
        try:
            if not enabled:
                q.ring.disable_notifications()
                waiting = False
            else:
                waiting = q.ring.enable_notifications()
        except QueueBroken as exc:
            self.queue_failed(index, exc)
            return False
        if att is not None and att.signal is not None:
            if enabled:
                att.signal.enable()
            else:
                att.signal.disable()
        return waiting

    def set_config(self, offset: int, data: bytes) -> None:
        """Change the configuration space; the generation moves and the driver is told."""
        if offset < 0 or offset + len(data) > len(self._config):
            raise LocalProtocolError(f"config {offset}+{len(data)} outside {len(self._config)}")
        self._config[offset : offset + len(data)] = data
        self._generation = (self._generation + 1) & 0xFFFFFFFF
        self._post_event(notify=True)

    def needs_reset(self, reason: str) -> None:
        """Enter DEVICE_NEEDS_RESET (§2.1.2): stop using the queues until the driver resets."""
        if self._status & S.DEVICE_NEEDS_RESET:
            return
        log.info("virtio device %d needs a reset: %s", self.virtio_id, reason)
        self._status |= S.DEVICE_NEEDS_RESET
        self._counts.needs_reset += 1
        self._post_event(notify=True)

    def statistics(self) -> DeviceStatistics:
        counts = self._counts.copy()
        counts.queues = tuple(None if q.ring is None else q.ring.statistics() for q in self._queues)
        return counts

    # -- hooks ------------------------------------------------------------------

    def accept_features(self, features: int) -> bool:
        """May the driver use ``features`` (already a subset of the offer, with VERSION_1)?"""
        return True

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        """The driver notified queue ``index`` (or DRIVER_OK was set): pop and push chains."""

    def driver_ok(self) -> None:
        """DRIVER_OK was set: the device is live."""

    def device_reset(self) -> None:
        """The device was reset (§2.4): forget any state of the driver's."""

    def config_written(self, offset: int, data: bytes) -> int:
        """The driver writes configuration space; return a status (read-only by default)."""
        return Status.EPERM

    # -- the bus device -----------------------------------------------------------

    def attributes(self) -> Mapping[str, str]:
        return {DEVICE_ID_ATTR: str(self.virtio_id)}

    def open(self, handle: Handle, *, now: float) -> int:
        if handle.version != self.version:
            return Status.EPROTONOSUPPORT
        if self._handle is not None:
            return Status.EBUSY  # one driver at a time
        self._handle = handle
        self._reset()
        return Status.OK

    def close(self, handle: Handle, *, now: float) -> None:
        if handle is self._handle:
            self._reset()
            self._handle = None

    def attach(self, handle: Handle, attachment: Attachment, *, now: float) -> int:
        window = attachment.window
        if attachment.shm_id == EVENT_SHM:
            if attachment.signal is None or not window.writable_by(Side.BOARD, 0, EVENT_BYTES):
                return Status.EINVAL
            self._event = attachment
            self._post_event(notify=False)
            return Status.OK
        self._memory.add(WindowMemory(window))
        window_id = window.window_id
        if attachment.signal is not None:
            attachment.signal.handler = lambda: self._on_signal(window_id)
        window.on_update = lambda: self._on_ring_update(window_id)
        return Status.OK

    def detach(self, handle: Handle, attachment: Attachment, *, now: float) -> None:
        window_id = attachment.window.window_id
        if attachment is self._event:
            self._event = None
            return
        self._memory.remove(window_id)
        for i, q in enumerate(self._queues):
            if q.setup is None:
                continue
            s = q.setup
            used = {s.notify_window, s.desc >> 32, s.avail >> 32, s.used >> 32}
            if window_id in used:
                if q.ring is not None and self._status & S.DRIVER_OK:
                    self.needs_reset(f"a window of queue {i} was detached")
                q.setup, q.ring = None, None

    def call(self, handle: Handle, func: int, payload: bytes, *, now: float) -> tuple[int, bytes]:
        if handle is not self._handle:
            return Status.EBADF, b""
        try:
            function = VirtioFunc(func)
        except ValueError:
            return Status.ENOSYS, b""
        self._counts.calls[function] += 1
        try:
            request = decode_request(func, payload)
        except RemoteProtocolError:
            self._counts.bad_calls += 1
            return Status.EINVAL, b""
        status, reply = self._run(request)
        return status, (b"" if reply is None else encode(reply))

    # -- DEVCALLs ---------------------------------------------------------------

    def _run(self, request: Request) -> tuple[int, Reply | None]:
        """Carry out one decoded request: a status and the reply (None: empty payload)."""
        match request:
            case DeviceFeatures(select=select):
                return Status.OK, FeaturesReply(feature_word(self.device_features, select))
            case DriverFeatures(select=select):
                return Status.OK, FeaturesReply(feature_word(self._driver_features, select))
            case SetDriverFeatures():
                return self._set_driver_features(request)
            case GetStatus():
                return Status.OK, StatusReply(self._status)
            case SetStatus():
                return self._set_status(request.status)
            case ConfigRead():
                return self._config_read(request)
            case ConfigWrite():
                return self._config_write(request)
            case GetGeneration():
                return Status.OK, GenerationReply(self._generation)
            case QueueCount():
                return Status.OK, QueueCountReply(len(self._queues))
            case QueueMax(queue=index):
                size = self._queues[index].max_size if index < len(self._queues) else 0
                return Status.OK, QueueMaxReply(size)
            case QueueSet():
                return self._queue_set(request), EmptyReply()
            case QueueEnable():
                return self._queue_enable(request.queue), EmptyReply()
            case Reset():
                self._reset()
                return Status.OK, EmptyReply()
            case _:
                assert_never(request)

    def _set_driver_features(self, request: SetDriverFeatures) -> tuple[int, Reply | None]:
        if not self._status & S.DRIVER or self._status & (S.FEATURES_OK | S.FAILED):
            return Status.EPERM, None
        if request.select >= FEATURE_WORDS:
            return (Status.OK if request.bits == 0 else Status.EINVAL), EmptyReply()
        self._driver_features = with_feature_word(
            self._driver_features, request.select, request.bits
        )
        return Status.OK, EmptyReply()

    def _set_status(self, requested: int) -> tuple[int, Reply | None]:
        match decide(self._status, requested):
            case StatusWrite.RESET:
                self._reset()
            case StatusWrite.REFUSE:
                self._counts.status_refused += 1
                return Status.EINVAL, StatusReply(self._status)
            case StatusWrite.ACCEPT:
                self._set_bits(requested)
            case StatusWrite.CHECK_FEATURES:
                if self._features_acceptable():
                    self._features = self._driver_features
                    self._set_bits(requested)
                else:
                    self._counts.features_refused += 1
                    self._set_bits(requested & ~S.FEATURES_OK)
            case StatusWrite.GO_LIVE:
                self._set_bits(requested)
                self._go_live()
            case StatusWrite.FAIL:
                needed_reset = bool(self._status & S.DEVICE_NEEDS_RESET)
                self._set_bits(requested)
                self._counts.driver_failed += 1
                log.warning(
                    "virtio device %d: the driver gave up on it (FAILED%s); it waits for a reset",
                    self.virtio_id,
                    ", after DEVICE_NEEDS_RESET" if needed_reset else "",
                )
        return Status.OK, StatusReply(self._status)

    def _config_read(self, request: ConfigRead) -> tuple[int, Reply | None]:
        end = request.offset + request.length
        if end > len(self._config):
            return Status.ERANGE, None
        data = bytes(self._config[request.offset : end])
        return Status.OK, ConfigReadReply(self._generation, data)

    def _config_write(self, request: ConfigWrite) -> tuple[int, Reply | None]:
        if request.offset + len(request.data) > len(self._config):
            return Status.ERANGE, None
        status = self.config_written(request.offset, request.data)
        return status, (GenerationReply(self._generation) if status >= 0 else None)

    def _queue_state_error(self, index: int) -> int | None:
        if index >= len(self._queues):
            return Status.ERANGE
        if self._status & (S.DRIVER_OK | S.FAILED) or not self._status & S.FEATURES_OK:
            return Status.EPERM  # queues are set up after FEATURES_OK, before DRIVER_OK
        if self._queues[index].ring is not None:
            return Status.EPERM  # enabled: only a reset changes it
        return None

    def _queue_set(self, setup: QueueSet) -> int:
        error = self._queue_state_error(setup.queue)
        if error is not None:
            return error
        q = self._queues[setup.queue]
        size = setup.size
        if not 1 <= size <= q.max_size or size & (size - 1):
            return Status.EINVAL
        notify = self._attachment(setup.notify_window)
        if notify is None or notify.signal is None:
            return Status.EINVAL
        q.setup = setup
        return Status.OK

    def _queue_enable(self, index: int) -> int:
        error = self._queue_state_error(index)
        if error is not None:
            return error
        q = self._queues[index]
        if q.setup is None:
            return Status.EPERM
        s = q.setup
        try:
            q.ring = VirtqueueDevice(
                self._memory,
                s.size,
                QueueAddresses(s.desc, s.avail, s.used),
                event_idx=bool(self._features & Feature.EVENT_IDX.mask),
                indirect=bool(self._features & Feature.INDIRECT_DESC.mask),
            )
        except LocalProtocolError:
            return Status.EINVAL
        return Status.OK

    # -- state ------------------------------------------------------------------

    def _features_acceptable(self) -> bool:
        features = self._driver_features
        if features & ~self.device_features:
            return False  # not offered (§2.2.1)
        if not features & Feature.VERSION_1.mask:
            return False  # no legacy interface here (§2.2.3)
        return self.accept_features(features)

    def _set_bits(self, requested: int) -> None:
        keep = self._status & S.DEVICE_NEEDS_RESET
        self._status = S(requested & ~S.DEVICE_NEEDS_RESET) | keep
        self._post_event(notify=False)

    def _go_live(self) -> None:
        self._counts.driver_ok += 1
        self.driver_ok()
        for i, q in enumerate(self._queues):
            if q.ring is not None:
                self._run_queue(i)

    def _reset(self) -> None:
        """Device reset (§2.4): status 0, features and queues forgotten."""
        was_initialised = bool(self._status)
        self._status = S(0)
        self._driver_features = 0
        self._features = 0
        for q in self._queues:
            q.setup, q.ring = None, None
        if was_initialised:
            self._counts.resets += 1
            self.device_reset()
        self._post_event(notify=False)

    def _on_signal(self, window_id: int) -> None:
        for i, q in enumerate(self._queues):
            if q.setup is not None and q.setup.notify_window == window_id:
                self._run_queue(i)

    def _on_ring_update(self, window_id: int) -> None:
        """The driver's flush of ``window_id`` is all here: run the queues whose available
        ring it holds and that have chains, as a notification would (if not disabled)."""
        for i, q in enumerate(self._queues):
            if q.setup is None or q.setup.avail >> 32 != window_id:
                continue
            ring = self.queue(i)
            if ring is None or not ring.notifications_enabled:
                continue
            try:
                waiting = ring.pending()
            except QueueBroken as exc:
                self.queue_failed(i, exc)
                continue
            if waiting:
                self._counts.ring_update_runs += 1
                self._run_queue(i)

    def _run_queue(self, index: int) -> None:
        ring = self.queue(index)
        if ring is None:
            self._counts.notify_ignored += 1  # not live: buffers wait for DRIVER_OK
            return
        try:
            self.queue_notified(index, ring)
        except QueueBroken as exc:
            self.queue_failed(index, exc)
            return
        self.interrupt(index)

    def queue_failed(self, index: int, exc: QueueBroken) -> None:
        """Queue ``index`` broke (``exc`` says why): count it and need a reset (§2.1.2)."""
        self._counts.queue_broken[exc.fault] += 1
        self.needs_reset(f"queue {index}: {exc}")

    def _attachment(self, window_id: int) -> Attachment | None:
        return None if self._handle is None else self._handle.attachments.get(window_id)

    def _post_event(self, *, notify: bool) -> None:
        att = self._event
        if att is None or att.window.closed:
            return
        att.window.write(0, encode(EventRecord(self._generation, self._status)))
        if notify and att.signal is not None:
            att.signal.notify()
        else:
            att.window.flush()
