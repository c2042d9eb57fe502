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
driver through the event window when it has one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ira.busmodel.device import Attachment, Device, Handle
from ira.busmodel.window import Side
from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.virtio.calls import (
    DEVICE_ID_ATTR,
    EVENT,
    EVENT_BYTES,
    EVENT_SHM,
    U8,
    U16,
    U32,
    U32_PAIR,
    VIRTIO_TYPE,
    QueueSetup,
    VirtioFunc,
    unpack,
    unpack_prefix,
)
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
from ira.virtio.ring import MAX_QUEUE_SIZE, QueueAddresses, QueueBroken
from ira.virtio.status import StatusWrite, decide
from ira.wire.bus import Status

log = logging.getLogger(__name__)
S = DeviceStatus


@dataclass(slots=True, eq=False)
class _Queue:
    max_size: int
    setup: QueueSetup | None = None
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
        self._counts: Counter[str] = Counter()
        self._calls: dict[int, Callable[[bytes], tuple[int, bytes]]] = {
            VirtioFunc.DEVICE_FEATURES: self._device_features,
            VirtioFunc.DRIVER_FEATURES: self._get_driver_features,
            VirtioFunc.SET_DRIVER_FEATURES: self._set_driver_features,
            VirtioFunc.STATUS: self._get_status,
            VirtioFunc.SET_STATUS: self._set_status,
            VirtioFunc.CONFIG_READ: self._config_read,
            VirtioFunc.CONFIG_WRITE: self._config_write,
            VirtioFunc.GENERATION: lambda p: self._fixed(p, U32.pack(self._generation)),
            VirtioFunc.QUEUE_COUNT: lambda p: self._fixed(p, U16.pack(len(self._queues))),
            VirtioFunc.QUEUE_MAX: self._queue_max,
            VirtioFunc.QUEUE_SET: self._queue_set,
            VirtioFunc.QUEUE_ENABLE: self._queue_enable,
            VirtioFunc.RESET: lambda p: self._fixed(p, b"", reset=True),
        }

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
            self._queue_broken(index, exc)
            return False
        self._counts["virtio_notify" if wanted else "virtio_notify_suppressed"] += 1
        att = self._attachment(q.setup.notify_window)
        if att is not None and att.signal is not None:
            att.signal.notify()
        return True

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
        self._counts["needs_reset"] += 1
        self._post_event(notify=True)

    def statistics(self) -> dict[str, int]:
        counts = dict(self._counts)
        for i, q in enumerate(self._queues):
            if q.ring is not None:
                for key, value in q.ring.statistics().items():
                    counts[f"queue{i}_{key}"] = value
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
        if attachment.signal is not None:
            window_id = window.window_id
            attachment.signal.handler = lambda: self._on_signal(window_id)
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
        run = self._calls.get(func)
        if run is None:
            return Status.ENOSYS, b""
        self._counts[f"call_{VirtioFunc(func).name.lower()}"] += 1
        try:
            return run(payload)
        except RemoteProtocolError:
            self._counts["bad_calls"] += 1
            return Status.EINVAL, b""

    # -- DEVCALLs ---------------------------------------------------------------

    def _fixed(self, payload: bytes, reply: bytes, *, reset: bool = False) -> tuple[int, bytes]:
        if payload:
            raise RemoteProtocolError("this call takes no payload")
        if reset:
            self._reset()
        return Status.OK, reply

    def _device_features(self, payload: bytes) -> tuple[int, bytes]:
        (select,) = unpack(U32, payload)
        return Status.OK, U32.pack(feature_word(self.device_features, select))

    def _get_driver_features(self, payload: bytes) -> tuple[int, bytes]:
        (select,) = unpack(U32, payload)
        return Status.OK, U32.pack(feature_word(self._driver_features, select))

    def _set_driver_features(self, payload: bytes) -> tuple[int, bytes]:
        select, word = unpack(U32_PAIR, payload)
        if not self._status & S.DRIVER or self._status & (S.FEATURES_OK | S.FAILED):
            return Status.EPERM, b""
        if select >= FEATURE_WORDS:
            return (Status.OK if word == 0 else Status.EINVAL), b""
        self._driver_features = with_feature_word(self._driver_features, select, word)
        return Status.OK, b""

    def _get_status(self, payload: bytes) -> tuple[int, bytes]:
        return self._fixed(payload, U8.pack(self._status))

    def _set_status(self, payload: bytes) -> tuple[int, bytes]:
        (requested,) = unpack(U8, payload)
        match decide(self._status, requested):
            case StatusWrite.RESET:
                self._reset()
            case StatusWrite.REFUSE:
                self._counts["status_refused"] += 1
                return Status.EINVAL, U8.pack(self._status)
            case StatusWrite.ACCEPT:
                self._set_bits(requested)
            case StatusWrite.CHECK_FEATURES:
                if self._features_acceptable():
                    self._features = self._driver_features
                    self._set_bits(requested)
                else:
                    self._counts["features_refused"] += 1
                    self._set_bits(requested & ~S.FEATURES_OK)
            case StatusWrite.GO_LIVE:
                self._set_bits(requested)
                self._go_live()
        return Status.OK, U8.pack(self._status)

    def _config_read(self, payload: bytes) -> tuple[int, bytes]:
        offset, length = unpack(U32_PAIR, payload)
        if offset + length > len(self._config):
            return Status.ERANGE, b""
        return Status.OK, U32.pack(self._generation) + bytes(self._config[offset : offset + length])

    def _config_write(self, payload: bytes) -> tuple[int, bytes]:
        (offset,), data = unpack_prefix(U32, payload)
        if offset + len(data) > len(self._config):
            return Status.ERANGE, b""
        status = self.config_written(offset, data)
        return status, (U32.pack(self._generation) if status >= 0 else b"")

    def _queue_max(self, payload: bytes) -> tuple[int, bytes]:
        (index,) = unpack(U16, payload)
        size = self._queues[index].max_size if index < len(self._queues) else 0
        return Status.OK, U16.pack(size)

    def _queue_state_error(self, index: int) -> int | None:
        if index >= len(self._queues):
            return Status.ERANGE
        if self._status & (S.DRIVER_OK | S.FAILED) or not self._status & S.FEATURES_OK:
            return Status.EPERM  # queues are set up after FEATURES_OK, before DRIVER_OK
        if self._queues[index].ring is not None:
            return Status.EPERM  # enabled: only a reset changes it
        return None

    def _queue_set(self, payload: bytes) -> tuple[int, bytes]:
        setup = QueueSetup.decode(payload)
        error = self._queue_state_error(setup.queue)
        if error is not None:
            return error, b""
        q = self._queues[setup.queue]
        size = setup.size
        if not 1 <= size <= q.max_size or size & (size - 1):
            return Status.EINVAL, b""
        notify = self._attachment(setup.notify_window)
        if notify is None or notify.signal is None:
            return Status.EINVAL, b""
        q.setup = setup
        return Status.OK, b""

    def _queue_enable(self, payload: bytes) -> tuple[int, bytes]:
        (index,) = unpack(U16, payload)
        error = self._queue_state_error(index)
        if error is not None:
            return error, b""
        q = self._queues[index]
        if q.setup is None:
            return Status.EPERM, b""
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
            return Status.EINVAL, b""
        return Status.OK, b""

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
        self._counts["driver_ok"] += 1
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
            self._counts["resets"] += 1
            self.device_reset()
        self._post_event(notify=False)

    def _on_signal(self, window_id: int) -> None:
        for i, q in enumerate(self._queues):
            if q.setup is not None and q.setup.notify_window == window_id:
                self._run_queue(i)

    def _run_queue(self, index: int) -> None:
        ring = self.queue(index)
        if ring is None:
            self._counts["notify_ignored"] += 1  # not live: buffers wait for DRIVER_OK
            return
        try:
            self.queue_notified(index, ring)
        except QueueBroken as exc:
            self._queue_broken(index, exc)
            return
        self.interrupt(index)

    def _queue_broken(self, index: int, exc: QueueBroken) -> None:
        self._counts[f"queue_broken_{exc.fault}"] += 1
        self.needs_reset(f"queue {index}: {exc}")

    def _attachment(self, window_id: int) -> Attachment | None:
        return None if self._handle is None else self._handle.attachments.get(window_id)

    def _post_event(self, *, notify: bool) -> None:
        att = self._event
        if att is None or att.window.closed:
            return
        att.window.write(0, EVENT.pack(self._generation, self._status))
        if notify and att.signal is not None:
            att.signal.notify()
        else:
            att.window.flush()
