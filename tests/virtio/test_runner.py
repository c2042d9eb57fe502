"""``SequenceRunner`` alone: a sequence of steps run over a fake bus, reply by reply.

The fake bus only numbers the requests; each test plays the bus's events back
by hand, with explicit ``now``, and reads what the sequence saw and how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ira.busmodel.events import (
    CallCompleted,
    CallFailed,
    DeviceOpened,
    SignalReceived,
    WindowAttached,
)
from ira.busmodel.window import Side, Window
from ira.errors import DevcallError, DevcallTimeout
from ira.virtio.calls import GetStatus, SetStatus
from ira.virtio.runner import SequenceRunner
from ira.virtio.steps import (
    Attach,
    Call,
    InitFailed,
    Outcome,
    ResetNeeded,
    Steps,
    status_of,
)

DEVICE = 7
HANDLE = 0x40


@dataclass
class FakeBus:
    """Records each request and answers it with the next call id."""

    requests: list[tuple[object, ...]] = field(default_factory=list)
    next_id: int = 100

    def _id(self, request: tuple[object, ...]) -> int:
        self.requests.append(request)
        self.next_id += 1
        return self.next_id

    def open(self, device_id: int, *, now: float, timeout_s: float | None) -> int:
        return self._id(("open", device_id, now))

    def call(
        self, handle: int, func: int, payload: bytes, *, now: float, timeout_s: float | None
    ) -> int:
        return self._id(("call", handle, func, payload, now))

    def attach(
        self,
        handle: int,
        shm_id: int,
        window: Window,
        *,
        now: float,
        signal: bool,
        timeout_s: float | None,
    ) -> int:
        return self._id(("attach", handle, shm_id, signal, now))


class Rig:
    def __init__(self) -> None:
        self.bus = FakeBus()
        self.ended: list[float] = []
        self.failed: list[tuple[InitFailed, float]] = []
        self.runner = SequenceRunner(
            self.bus,
            timeout_s=1.0,
            ended=self.ended.append,
            failed=lambda exc, now: self.failed.append((exc, now)),
        )
        self.seen: list[Outcome] = []

    @property
    def last_id(self) -> int:
        return self.bus.next_id

    def opened(self, now: float) -> None:
        self.runner.handle_event(DeviceOpened(self.last_id, DEVICE, HANDLE), now=now)

    def completed(self, payload: bytes, now: float, *, status: int = 0) -> None:
        event = CallCompleted(self.last_id, DEVICE, 0, status, payload, 0.01)
        self.runner.handle_event(event, now=now)


WINDOW = Window(9, 64, side=Side.HOST)


def test_replies_resume_the_sequence_in_order() -> None:
    rig = Rig()

    def sequence() -> Steps:
        rig.seen.append((yield Call(SetStatus(1))))
        rig.seen.append((yield Attach(3, WINDOW, True)))
        rig.seen.append((yield Call(GetStatus())))

    rig.runner.open(DEVICE, sequence(), now=1.0)
    assert rig.bus.requests == [("open", DEVICE, 1.0)]
    assert rig.runner.running and rig.runner.handle is None
    rig.opened(now=2.0)
    assert rig.runner.handle == HANDLE
    rig.completed(b"\x01", now=3.0)
    rig.runner.handle_event(WindowAttached(rig.last_id, DEVICE, 9, 5), now=4.0)
    rig.completed(b"\x03", now=5.0)

    assert [r[0] for r in rig.bus.requests] == ["open", "call", "attach", "call"]
    assert rig.bus.requests[1] == ("call", HANDLE, SetStatus.func, b"\x01", 2.0)
    assert rig.bus.requests[2] == ("attach", HANDLE, 3, True, 3.0)
    assert rig.seen == [
        Outcome(0, b"\x01", SetStatus.func),
        Outcome(0, b""),
        Outcome(0, b"\x03", GetStatus.func),
    ]
    assert rig.ended == [5.0] and rig.failed == []
    assert not rig.runner.running


def test_a_negative_status_is_an_outcome_for_the_sequence() -> None:
    rig = Rig()

    def sequence() -> Steps:
        rig.seen.append((yield Call(GetStatus())))

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.0)
    rig.runner.handle_event(CallFailed(rig.last_id, DEVICE, DevcallError(-5, "no")), now=1.0)
    assert rig.seen == [Outcome(-5, b"", GetStatus.func)]
    assert rig.ended == [1.0] and rig.failed == []


def test_a_request_that_failed_ends_the_sequence() -> None:
    rig = Rig()

    def sequence() -> Steps:
        rig.seen.append((yield Call(GetStatus())))

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.0)
    rig.runner.handle_event(CallFailed(rig.last_id, DEVICE, DevcallTimeout("late")), now=2.5)
    assert rig.seen == [] and rig.ended == []
    [(exc, now)] = rig.failed
    assert type(exc) is InitFailed and str(exc) == "request failed: late" and now == 2.5
    assert not rig.runner.running


def test_an_open_that_failed_ends_the_sequence() -> None:
    rig = Rig()

    def sequence() -> Steps:
        rig.seen.append((yield Call(GetStatus())))

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.runner.handle_event(CallFailed(rig.last_id, DEVICE, DevcallTimeout("late")), now=1.0)
    [(exc, _)] = rig.failed
    assert str(exc) == "open failed: late"
    assert rig.bus.requests == [("open", DEVICE, 0.0)] and rig.runner.handle is None


def test_events_not_awaited_are_ignored() -> None:
    rig = Rig()

    def sequence() -> Steps:
        rig.seen.append((yield Call(GetStatus())))

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.0)
    awaited = rig.last_id
    rig.runner.handle_event(CallCompleted(awaited + 1, DEVICE, 0, 0, b"\x07", 0.0), now=1.0)
    rig.runner.handle_event(CallCompleted(awaited - 1, DEVICE, 0, 0, b"\x07", 0.0), now=1.0)
    rig.runner.handle_event(SignalReceived(DEVICE, 9, 5), now=1.0)
    assert rig.seen == [] and rig.runner.running
    rig.completed(b"\x01", now=2.0)
    rig.completed(b"\x01", now=3.0)  # the same reply again: nothing waits for it
    assert rig.seen == [Outcome(0, b"\x01", GetStatus.func)]
    assert rig.ended == [2.0]


def test_a_sequence_that_ends_at_once() -> None:
    rig = Rig()

    def sequence() -> Steps:
        return
        yield Call(GetStatus())  # a generator all the same

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.5)
    assert rig.ended == [0.5] and rig.bus.requests == [("open", DEVICE, 0.0)]
    rig.runner.start(sequence(), now=0.75)
    assert rig.ended == [0.5, 0.75]


@pytest.mark.parametrize("error", [InitFailed, ResetNeeded])
def test_a_sequence_that_gives_up_on_a_reply(error: type[InitFailed]) -> None:
    rig = Rig()

    def sequence() -> Steps:
        status = status_of((yield Call(GetStatus())), "status")
        raise error(f"status {status:#x}")

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.0)
    rig.completed(b"\x40", now=1.0)
    [(exc, now)] = rig.failed
    assert type(exc) is error and str(exc) == "status 0x40" and now == 1.0
    assert rig.ended == [] and not rig.runner.running


def test_a_reader_gives_up_on_a_negative_status() -> None:
    rig = Rig()

    def sequence() -> Steps:
        status_of((yield Call(GetStatus())), "status")

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.0)
    rig.runner.handle_event(CallFailed(rig.last_id, DEVICE, DevcallError(-22, "bad")), now=1.0)
    [(exc, _)] = rig.failed
    assert str(exc) == "status: status -22"


def test_start_replaces_the_running_sequence_and_its_reply_is_ignored() -> None:
    rig = Rig()

    def first() -> Steps:
        rig.seen.append((yield Call(GetStatus())))

    def second() -> Steps:
        rig.seen.append((yield Call(SetStatus(0))))

    rig.runner.open(DEVICE, first(), now=0.0)
    rig.opened(now=0.0)
    stale = rig.last_id
    rig.runner.start(second(), now=1.0)
    rig.runner.handle_event(CallCompleted(stale, DEVICE, 0, 0, b"\x0f", 0.0), now=2.0)
    assert rig.seen == [] and rig.runner.running
    rig.completed(b"\x00", now=3.0)
    assert rig.seen == [Outcome(0, b"\x00", SetStatus.func)] and rig.ended == [3.0]


def test_a_callback_may_start_the_next_sequence() -> None:
    bus = FakeBus()
    seen: list[str] = []

    def then() -> Steps:
        yield Call(GetStatus())
        seen.append("then")

    def first() -> Steps:
        yield Call(SetStatus(0))
        seen.append("first")

    def ended(now: float) -> None:
        if not seen[1:]:
            runner.start(then(), now=now)

    runner = SequenceRunner(bus, timeout_s=None, ended=ended, failed=lambda exc, now: None)
    runner.open(DEVICE, first(), now=0.0)
    runner.handle_event(DeviceOpened(bus.next_id, DEVICE, HANDLE), now=0.0)
    runner.handle_event(CallCompleted(bus.next_id, DEVICE, 0, 0, b"\x00", 0.0), now=1.0)
    assert seen == ["first"] and runner.running
    runner.handle_event(CallCompleted(bus.next_id, DEVICE, 0, 0, b"\x00", 0.0), now=2.0)
    assert seen == ["first", "then"] and not runner.running


def test_stop_and_forget() -> None:
    rig = Rig()

    def sequence() -> Steps:
        rig.seen.append((yield Call(GetStatus())))

    rig.runner.open(DEVICE, sequence(), now=0.0)
    rig.opened(now=0.0)
    rig.runner.stop()
    rig.completed(b"\x01", now=1.0)
    assert not rig.runner.running and rig.seen == [] and rig.ended == []
    assert rig.runner.handle == HANDLE
    rig.runner.forget()
    assert rig.runner.handle is None
