"""One virtio device bound to one host-side client (DESIGN §5).

Theory of operation
-------------------

``VirtioHostDriver`` (``ira.virtio.host``) makes a ``VirtioBinding`` for each
``virtio`` bus device whose virtio device id has a ``VirtioClient``.  The
binding opens the device and initialises it as virtio 1.2 §3.1.1 says, one
DEVCALL at a time (``ira.virtio.initialise``: reset, ACKNOWLEDGE, DRIVER,
features, FEATURES_OK, the client's configuration bytes into
``binding.config``, the event window, the queues and data windows,
DRIVER_OK), and takes over what that sequence returns at DRIVER_OK.  The
binding keeps the state, the bus's events and the recovery.

The sequences run over the bus through a ``SequenceRunner``
(``ira.virtio.runner``), so the binding stays sans-I/O: the bus's events
drive it.  Every negotiation is kept (``negotiation``) for tools to show.
After DRIVER_OK the client adds chains to ``binding.queues[i]`` and calls
``kick(i)``; used buffers arrive through ``VirtioClient.used``, on the
device's notification or (bus v2) as soon as the board's flush of the
queue's ring window is all in the replica (``WindowUpdated``), while the
client has interrupts enabled.  When the configuration generation moves (the
event window says so) the configuration is read again and
``VirtioClient.config_changed`` runs with the new bytes in
``binding.config``.  A DEVICE_NEEDS_RESET (seen through the event window) or
a broken queue moves the binding to NEEDS_RESET; ``reinitialise()`` resets
the device and runs the sequence again, in fresh windows.

Recovery: the host does that by itself, as its ``Recovery`` record decides
(``ira.virtio.recovery``).  A binding that needs a reset logs one line (what
failed; the reset planned and when) and resets the device when the reset is
due, through the bus's timers (``next_deadline`` / ``handle_timeout``),
never from inside the callback that noticed the failure.  After
``max_resets`` in a row the binding gives up (FAILED, said once), sets
FAILED in the device's status too (§2.1: the board sees the driver gave up)
and stays so until the device is added again or ``reinitialise()`` is
called.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import assert_never

from ira.busmodel.bus import Bus
from ira.busmodel.events import DeviceEvent, DeviceInfo, SignalReceived, WindowUpdated
from ira.busmodel.window import Window
from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.virtio.calls import DEVICE_ID_ATTR, EVENT_BYTES, EVENT_SHM, decode_event
from ira.virtio.client import VirtioClient
from ira.virtio.driver import UsedBuffer, VirtqueueDriver
from ira.virtio.features import DeviceStatus, FeaturePolicy, Negotiation
from ira.virtio.initialise import initialise, read_config, set_failed
from ira.virtio.memory import MemoryMap, WindowMemory
from ira.virtio.recovery import Action, Recovery, RecoveryPolicy
from ira.virtio.ring import QueueBroken
from ira.virtio.runner import SequenceRunner
from ira.virtio.steps import Attach, InitFailed, ResetNeeded, Steps
from ira.wire.bus import BUS_VERSION_FLUSH_ENDS

log = logging.getLogger(__name__)
S = DeviceStatus


class BindingState(enum.Enum):
    INITIALISING = "initialising"
    READY = "ready"
    NEEDS_RESET = "needs_reset"
    FAILED = "failed"


#: names of the virtio device ids ira knows (virtio 1.2 §5), for log lines
DEVICE_NAMES: Mapping[int, str] = {1: "network", 2: "block", 3: "console", 4: "entropy"}


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
        #: failures, resets and the next one planned (see ``ira.virtio.recovery``)
        self.recovery = Recovery(recovery or RecoveryPolicy())
        self.state = BindingState.INITIALISING
        self.negotiation: Negotiation | None = None
        self.queues: list[VirtqueueDriver[object]] = []
        self.windows: dict[str, Window] = {}
        self.memory = MemoryMap()
        self.generation = 0
        #: the first ``client.config_bytes`` of the configuration space, as last read
        self.config = b""
        self.reason = ""
        self._ring_windows: dict[int, int] = {}  # window id -> queue index
        self._event_window: Window | None = None
        self._windows_attached: list[Window] = []  # ring and data windows, in attach order
        #: runs the sequences below over the bus, one DEVCALL or attach at a time
        self._runner = SequenceRunner(
            bus, timeout_s=timeout_s, ended=self._sequence_ended, failed=self._sequence_failed
        )
        self._config_stale = False
        self._now = now
        self._runner.open(device.device_id, self._initialise(), now=now)

    @property
    def handle(self) -> int | None:
        """The device's bus handle, once open."""
        return self._runner.handle

    @property
    def failures(self) -> int:
        """Failures seen: DEVICE_NEEDS_RESET, a broken queue, a reset that failed."""
        return self.recovery.failures

    @property
    def resets(self) -> int:
        """Resets the host made by itself to bring the device back."""
        return self.recovery.resets

    @property
    def failed_at(self) -> float | None:
        """When the last failure was seen (the bus's monotonic clock), or None."""
        return self.recovery.failed_at

    @property
    def retry_at(self) -> float | None:
        """When the next reset is due, or None."""
        return self.recovery.retry_at

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
        if window.signal is not None and not window.flush_notifies:
            window.signal.notify()  # from bus v4 the flush's end is the notification
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
        self.recovery.new_row()
        return self._restart(now)

    @property
    def ring_updates(self) -> bool:
        """The peer's flushes of ring windows are announced (bus v2): a client told of
        each by ``ring_updated`` needs no notification to see used buffers."""
        return self.bus.version >= BUS_VERSION_FLUSH_ENDS

    @property
    def now(self) -> float:
        """The time given with the latest bus event, timer or request the binding had
        (what a client that keeps time, such as a rate, reads in its callbacks)."""
        return self._now

    def next_deadline(self) -> float | None:
        """When the planned reset is due (or a failure waits to be stamped), or None."""
        if self.recovery.unstamped:
            return self._now
        return self.recovery.retry_at

    def handle_timeout(self, *, now: float) -> None:
        """Stamp a failure seen without a clock; make the reset that is due."""
        self._now = now
        if self.recovery.unstamped:
            self._schedule(now)
        if not self.recovery.due(now=now):
            return
        if self.state is not BindingState.NEEDS_RESET:
            self.recovery.cancel()  # overtaken (failed, or reset by hand): no timer left
            return
        self.recovery.start_reset()
        self._restart(now)

    def _restart(self, now: float) -> list[object]:
        self.recovery.cancel()
        lost = [token for queue in self.queues for token in queue.detach()]
        windows = list(self._windows_attached)
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
            self._runner.open(self.device.device_id, self._initialise(), now=now)
        else:
            self._run(self._initialise(), now)  # on the same handle
        return lost

    # -- bus events ---------------------------------------------------------------

    def handle_event(self, event: DeviceEvent, *, now: float) -> None:
        self._now = now
        if isinstance(event, SignalReceived):
            self._signalled(event.window_id, now)
            return
        if isinstance(event, WindowUpdated):
            self._ring_updated(event.window_id, now)
            return
        self._runner.handle_event(event, now=now)  # the reply the running sequence waits for

    def removed(self) -> None:
        """The device is gone (DEVDROP, session reset): nothing of it is usable."""
        for queue in self.queues:
            queue.detach()
        self._forget()
        self._runner.forget()
        self.state = BindingState.FAILED
        self.reason = "device removed"
        self.recovery.cancel()
        self.recovery.new_row()
        self.client.removed(self)

    # -- sequences: initialisation (§3.1.1), configuration re-reads -----------------

    def _run(self, sequence: Steps, now: float) -> None:
        self._now = now
        self._runner.start(sequence, now=now)

    def _sequence_ended(self, now: float) -> None:
        if self.state is BindingState.READY and self._config_outdated():
            self._reread_config(now)

    def _sequence_failed(self, exc: InitFailed, now: float) -> None:
        if isinstance(exc, ResetNeeded):
            self._needs_reset(str(exc), now)
        else:
            self._fail(str(exc))

    def _initialise(self) -> Steps:
        setup = yield from initialise(
            self.bus,
            self.client,
            self.policy,
            configure=self._read_config,
            negotiated=self._negotiated,
            attached=self._attached,
        )
        self.negotiation = setup.negotiation
        self.queues = list(setup.queues)
        self.windows = dict(setup.windows)
        self.memory = setup.memory
        self._ring_windows = dict(setup.ring_windows)
        self._event_window = setup.event_window
        self.state = BindingState.READY
        row = self.recovery.ready(now=self._now)
        if row:
            log.info(
                "%s ready again after %d reset(s) in a row: %s",
                self._what(),
                row,
                self.negotiation.describe(),
            )
        else:
            log.info("%s ready: %s", self._what(), self.negotiation.describe())
        self.client.ready(self, now=self._now)

    def _negotiated(self, negotiation: Negotiation) -> None:
        self.negotiation = negotiation

    def _attached(self, step: Attach) -> None:
        """A window of the running initialisation is attached: detach it at the next reset."""
        if step.shm_id == EVENT_SHM:
            self._event_window = step.window  # configuration changes come through it from now
        else:
            self._windows_attached.append(step.window)

    def _read_config(self) -> Steps:
        size = self.client.config_bytes
        if not size:
            return
        self._config_stale = False
        reply = yield from read_config(size)
        self.generation = reply.generation
        self.config = reply.data

    def _config_changed(self) -> Steps:
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
        if self._runner.running:
            self._config_stale = True
            return
        self._run(self._config_changed(), now)

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
        self._collect_used(index, now)

    def _ring_updated(self, window_id: int, now: float) -> None:
        """The board's flush of a ring window is all here: collect what it used, as a
        notification would, unless the client disabled them (§2.7.7; bus v2)."""
        index = self._ring_windows.get(window_id)
        if index is None or self.state is not BindingState.READY:
            return
        if self.queues[index].callbacks_enabled:
            self._collect_used(index, now)
        else:
            self.client.ring_updated(self, index)

    def _collect_used(self, index: int, now: float) -> None:
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
        self.recovery.failed(counted=failure, timed=now is not None)
        self.client.failed(self, reason)
        if now is not None:
            self._schedule(now)

    def _schedule(self, now: float) -> None:
        """Stamp the failure; plan the next reset or give up; one log line either way."""
        if self.state is not BindingState.NEEDS_RESET:  # removed or reset meanwhile
            self.recovery.stamp(now=now)
            return
        plan = self.recovery.plan(now=now)
        match plan.action:
            case Action.WAIT:
                log.warning("%s needs a reset: %s (no automatic resets)", self._what(), self.reason)
            case Action.GIVE_UP:
                self.state = BindingState.FAILED
                self.reason = f"gave up after {plan.attempt} resets in a row: {self.reason}"
                log.error("%s failed: %s", self._what(), self.reason)
                self._tell_failed(now)
            case Action.RESET:
                log.warning(
                    "%s needs a reset: %s; resetting it in %.1f s "
                    "(reset %d of at most %d in a row)",
                    self._what(),
                    self.reason,
                    plan.delay_s,
                    plan.attempt,
                    self.recovery.policy.max_resets,
                )
            case _:
                assert_never(plan.action)

    def _tell_failed(self, now: float) -> None:
        """Have FAILED set in the device's status (§2.1), if it can still be reached."""
        if self.handle is None or not self.bus.is_open(self.handle):
            return
        self._run(set_failed(), now)  # what a running sequence waits for no longer matters

    def _fail(self, reason: str) -> None:
        if self.state is BindingState.FAILED:
            # setting FAILED in the device's status did not work: it is given up all the same
            log.debug("%s: FAILED not set in the device: %s", self._what(), reason)
            return
        if self.recovery.resetting:  # a reset of the host's own failed: the next of the row
            self._needs_reset(f"reset failed: {reason}", self._now)
            return
        self.state = BindingState.FAILED
        self.reason = reason
        self.recovery.cancel()  # a reset planned before this failure is off
        self.recovery.stamp(now=self._now)
        log.warning("%s failed: %s", self._what(), reason)
        self.client.failed(self, reason)

    def _forget(self) -> None:
        self.queues = []
        self.windows = {}
        self.memory = MemoryMap()
        self._ring_windows = {}
        self._event_window = None
        self._windows_attached = []
        self._runner.stop()
        self._config_stale = False
