"""Running a sequence of steps over the bus, one step at a time (DESIGN §5).

Theory of operation
-------------------

A binding's DEVCALL sequences (``ira.virtio.binding``) are generators of
steps (``ira.virtio.steps``): each ``Call`` or ``Attach`` they yield is sent
on the bus, and the generator is resumed with the step's ``Outcome`` when the
bus reports its end.  ``SequenceRunner`` is that loop, for one device:

- ``open()`` opens the device, then runs the sequence on its handle;
  ``start()`` runs one on the handle already open.  One sequence at a time:
  starting another drops the one running, and a reply it still waits for is
  then ignored.
- ``handle_event()`` takes the bus's events of the device: only the reply to
  the call the sequence waits for moves it; any other is ignored.  A DEVCALL
  that returned a negative status is an outcome like any other (the sequence
  decides what it means); a request that did not complete (a timeout, the
  device gone) or an open that failed ends the sequence.
- How a sequence ends is the owner's business, told through two callbacks:
  ``ended(now)`` when the generator returns, ``failed(exc, now)`` with an
  ``InitFailed`` (``ResetNeeded`` if the device asked for a reset) when it
  raised one or a request failed.  The runner has forgotten the sequence by
  then, so a callback may start the next one.

Sans-I/O: the bus queues what is sent; time comes in as ``now``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ira.busmodel.events import (
    CallCompleted,
    CallFailed,
    DeviceEvent,
    DeviceOpened,
    WindowAttached,
)
from ira.busmodel.window import Window
from ira.errors import DevcallError
from ira.virtio.calls import encode
from ira.virtio.steps import Call, InitFailed, Outcome, Steps


class StepBus(Protocol):
    """What the runner asks of the bus (``ira.busmodel.bus.Bus`` is one): the requests."""

    def open(self, device_id: int, *, now: float, timeout_s: float | None) -> int: ...

    def call(
        self, handle: int, func: int, payload: bytes, *, now: float, timeout_s: float | None
    ) -> int: ...

    def attach(
        self,
        handle: int,
        shm_id: int,
        window: Window,
        *,
        now: float,
        signal: bool,
        timeout_s: float | None,
    ) -> int: ...


class SequenceRunner:
    """Runs one device's sequences of steps over the bus (see the module docstring)."""

    def __init__(
        self,
        bus: StepBus,
        *,
        timeout_s: float | None,
        ended: Callable[[float], None],
        failed: Callable[[InitFailed, float], None],
    ) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        #: the device's handle, once open
        self.handle: int | None = None
        self._ended = ended
        self._failed = failed
        self._sequence: Steps | None = None
        self._pending: int | None = None  # call id the sequence waits for
        self._pending_func: int | None = None  # its function, when it is a DEVCALL

    @property
    def running(self) -> bool:
        """A sequence is running (waiting for a reply, or for the device to open)."""
        return self._sequence is not None

    def open(self, device_id: int, sequence: Steps, *, now: float) -> None:
        """Open device ``device_id``, then run ``sequence`` on its handle."""
        self.handle = None
        self._sequence = sequence
        self._pending_func = None
        self._pending = self.bus.open(device_id, now=now, timeout_s=self.timeout_s)

    def start(self, sequence: Steps, *, now: float) -> None:
        """Run ``sequence`` on the open handle, in place of whatever was running."""
        self._pending = None
        self._sequence = sequence
        self._advance(None, now)

    def stop(self) -> None:
        """Drop the running sequence; a reply it waits for will be ignored."""
        self._sequence = None
        self._pending = None
        self._pending_func = None

    def forget(self) -> None:
        """The device's handle is gone: stop, and forget the handle."""
        self.stop()
        self.handle = None

    def handle_event(self, event: DeviceEvent, *, now: float) -> None:
        """Resume the sequence with the reply it waits for; ignore any other event."""
        if not isinstance(event, DeviceOpened | CallCompleted | CallFailed | WindowAttached):
            return
        if event.call_id != self._pending:
            return
        self._pending = None
        func, self._pending_func = self._pending_func, None
        if self.handle is None and not isinstance(event, DeviceOpened):
            error = event.error if isinstance(event, CallFailed) else event
            self._end_failed(InitFailed(f"open failed: {error}"), now)
        elif isinstance(event, DeviceOpened):
            self.handle = event.handle
            self._advance(None, now)
        elif isinstance(event, CallCompleted):
            self._advance(Outcome(event.status, event.payload, func), now)
        elif isinstance(event, WindowAttached):
            self._advance(Outcome(0, b""), now)
        elif isinstance(event.error, DevcallError):
            self._advance(Outcome(event.error.status, b"", func), now)
        else:
            self._end_failed(InitFailed(f"request failed: {event.error}"), now)

    def _advance(self, reply: Outcome | None, now: float) -> None:
        assert self._sequence is not None
        try:
            step = next(self._sequence) if reply is None else self._sequence.send(reply)
        except StopIteration:
            self._sequence = None
            self._ended(now)
            return
        except InitFailed as exc:
            self._end_failed(exc, now)
            return
        assert self.handle is not None
        if isinstance(step, Call):
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

    def _end_failed(self, exc: InitFailed, now: float) -> None:
        self._sequence = None
        self._failed(exc, now)
