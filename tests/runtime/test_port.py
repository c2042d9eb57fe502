"""A link runtime whose port comes and goes (over the null-modem's ptys), and the
doorbell that wakes its loop."""

from __future__ import annotations

import os
import random
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ira.errors import TransportError
from ira.link.events import LinkEvent, LinkUp, MessageReceived, SessionStarted
from ira.runtime.link import Doorbell, LinkRuntime
from ira.runtime.port import (
    REOPEN_MAX_S,
    PortBack,
    PortEvent,
    PortLost,
    PortStatus,
    PortWaiting,
    TransportOpener,
)
from ira.tools.nullmodem import NullModem
from ira.transports import open_transport
from ira.transports.base import Transport
from ira.transports.serial import open_serial

pytestmark = pytest.mark.timeout(30)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_the_doorbell_wakes_only_an_armed_loop_and_once_per_sleep() -> None:
    bell = Doorbell()
    try:
        bell.ring()
        assert not _readable(bell.fileno())  # a busy loop costs a ringer no write
        bell.arm()
        bell.ring()
        bell.ring()
        assert _readable(bell.fileno()) and not bell.armed
        assert os.read(bell.fileno(), 16) == b"\x01"  # one write per sleep
        bell.ring(always=True)
        assert _readable(bell.fileno())
        bell.drain()
        assert not _readable(bell.fileno())
    finally:
        bell.close()
    bell.ring(always=True)  # after close: nothing to wake, no error


def test_ringers_racing_a_sleeping_loop_never_lose_a_wake_up() -> None:
    bell = Doorbell()
    work: list[int] = []
    taken: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() or work:
            while work:
                taken.append(work.pop())
            bell.arm()
            if work:
                bell.disarm()
                continue
            select.select([bell.fileno()], [], [], 1.0)  # a lost wake-up sleeps 1 s
            bell.disarm()
            bell.drain()

    thread = threading.Thread(target=loop)
    thread.start()
    start = time.monotonic()
    for i in range(2000):
        work.append(i)
        bell.ring()
    stop.set()
    bell.ring(always=True)
    thread.join(10)
    bell.close()
    assert sorted(taken) == list(range(2000))
    assert time.monotonic() - start < 5.0


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.events: list[object] = []

    def __call__(self, event: PortEvent | LinkEvent) -> None:
        with self.lock:
            self.events.append(event)
            self.lock.notify_all()

    def wait_for(self, kind: type[object], count: int = 1, timeout_s: float = 10.0) -> bool:
        with self.lock:
            return self.lock.wait_for(
                lambda: sum(type(e) is kind for e in self.events) >= count, timeout_s
            )

    def kinds(self) -> list[type[object]]:
        with self.lock:
            return [type(e) for e in self.events if not isinstance(e, MessageReceived)]

    def messages(self) -> list[bytes]:
        with self.lock:
            return [e.payload for e in self.events if isinstance(e, MessageReceived)]


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[tuple[NullModem, str]]:
    """A null-modem whose end B is also reachable through a stable symlink."""
    with NullModem() as nm:
        link = str(tmp_path / "by-id")
        nm.symlink("B", link)
        yield nm, link


def test_a_pulled_port_is_reopened_and_nothing_sent_is_lost(
    cable: tuple[NullModem, str],
) -> None:
    nm, link = cable
    seen_a, seen_b = Recorder(), Recorder()
    a = LinkRuntime(
        TransportOpener.for_spec(link),
        rng=random.Random(1),
        on_event=seen_a,
        on_port_event=seen_a,
    )
    b = LinkRuntime(open_serial(nm.path_a), rng=random.Random(2), on_event=seen_b)
    with a, b:
        assert seen_a.wait_for(SessionStarted)
        sent = [b"message %d" % i for i in range(300)]
        for payload in sent[:100]:
            a.send(payload)
        nm.pull("B", 1.0)
        assert seen_a.wait_for(PortLost)
        assert a.port.status is PortStatus.DOWN and a.port.reason is not None
        for payload in sent[100:200]:
            a.send(payload)  # while the port is away: kept for when it is back
        assert seen_a.wait_for(PortBack)
        assert a.port.status is PortStatus.UP
        for payload in sent[200:]:
            a.send(payload)
        deadline = time.monotonic() + 10
        while len(seen_b.messages()) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen_b.messages() == sent  # exactly once, in order
        kinds = seen_a.kinds()
        assert kinds.count(SessionStarted) == 1  # the same session throughout
        assert kinds.index(PortLost) < kinds.index(PortBack)


def test_a_port_that_is_not_there_yet_is_waited_for(tmp_path: Path) -> None:
    link = str(tmp_path / "later")
    seen = Recorder()
    a = LinkRuntime(
        TransportOpener.for_spec(link), rng=random.Random(1), on_event=seen, on_port_event=seen
    )
    assert a.port.status is PortStatus.WAITING
    with NullModem() as nm, a, LinkRuntime(open_serial(nm.path_a), rng=random.Random(2)):
        assert seen.wait_for(PortWaiting)
        time.sleep(0.3)
        nm.symlink("B", link)
        assert seen.wait_for(PortBack)
        assert seen.wait_for(SessionStarted)
        assert seen.kinds().count(PortWaiting) == 1


def test_a_port_away_past_give_up_after_stops_the_runtime(tmp_path: Path) -> None:
    a = LinkRuntime(TransportOpener.for_spec(str(tmp_path / "never")), give_up_after_s=0.3)
    start = time.monotonic()
    with pytest.raises(TransportError, match=r"stayed away for 0\.3 s; giving up"), a:
        while a.error is None and time.monotonic() - start < 5:
            time.sleep(0.02)
    assert 0.3 <= time.monotonic() - start < 5


def test_a_port_back_as_something_else_stops_the_runtime_with_one_line(
    cable: tuple[NullModem, str], tmp_path: Path
) -> None:
    nm, link = cable
    a = LinkRuntime(TransportOpener.for_spec(link), rng=random.Random(1))
    plain = tmp_path / "plain"
    plain.write_text("", encoding="utf-8")
    with pytest.raises(TransportError, match="is not a serial port") as info, a:
        nm.pull("B")  # gone for good; the name now points at a file
        os.symlink(plain, link)
        deadline = time.monotonic() + 10
        while a.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "\n" not in str(info.value)


def test_a_port_back_is_reopened_at_once_not_at_the_next_step_of_the_backoff(
    cable: tuple[NullModem, str],
) -> None:
    """The watch of a serial path (inotify on its directory) wakes the runtime when
    the path is made again: the port is opened within a fraction of a second, where
    the backoff alone would try again ``REOPEN_MAX_S`` after its last try."""
    nm, link = cable
    attempts: list[float] = []
    tried = threading.Condition()

    def open_counted() -> Transport:
        with tried:
            attempts.append(time.monotonic())
            tried.notify_all()
        return open_transport(link)

    watch = TransportOpener.for_spec(link).watch
    assert watch is not None
    seen = Recorder()
    back_at: list[float] = []

    def on_port_event(event: PortEvent) -> None:
        if isinstance(event, PortBack):
            back_at.append(time.monotonic())
        seen(event)

    a = LinkRuntime(
        TransportOpener(link, open_counted, watch),
        rng=random.Random(1),
        on_event=seen,
        on_port_event=on_port_event,
    )
    with a, LinkRuntime(open_serial(nm.path_a), rng=random.Random(2)):
        assert seen.wait_for(SessionStarted)
        nm.pull("B")
        assert seen.wait_for(PortLost)
        lost = time.monotonic()
        # until the backoff has reached its cap (tries at +0.1, +0.3, +0.7, +1.5, +3.1 s)
        with tried:
            assert tried.wait_for(lambda: len(attempts) >= 5 and attempts[-1] - lost > 3.0, 15)
            tries = len(attempts)
            assert tried.wait_for(lambda: len(attempts) > tries, 5)  # the next in 2 s
        nm.plug("B")
        plugged = time.monotonic()
        assert seen.wait_for(PortBack, timeout_s=5)
        assert back_at[0] - plugged < 0.5 < REOPEN_MAX_S
        assert seen.wait_for(LinkUp)
