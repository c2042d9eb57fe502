"""The link runtime over real transports: order, wake-ups, partial writes, stop and errors."""

from __future__ import annotations

import contextlib
import logging
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ira.errors import LinkClosed, RemoteProtocolError
from ira.link.config import LinkConfig
from ira.link.events import Channel, LinkEvent, MessageReceived, SessionLost
from ira.runtime import link as runtime_module
from ira.runtime.link import LinkRuntime
from ira.transports.base import Transport
from ira.transports.mem import mem_pair

pytestmark = pytest.mark.timeout(30)


class NoDescriptor:
    """A stream transport with no descriptor that is often momentarily full.

    Every other ``send`` takes nothing (as a pyserial port whose writer buffer
    is full returns 0 after its timeout), the others at most ``limit`` bytes.
    The runtime then reads with a reader thread and must come back, unprompted
    by any descriptor, for the rest of every chunk it writes.
    """

    packet = False

    def __init__(self, inner: Transport, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._full = False
        self.name = f"nodesc:{inner.name}"

    def fileno(self) -> int | None:
        return None

    def recv(self, timeout_s: float | None) -> bytes:
        return self._inner.recv(timeout_s)

    def send(self, data: bytes, timeout_s: float | None) -> int:
        self._full = not self._full
        if self._full:
            return 0
        return self._inner.send(data[: self._limit], timeout_s)

    def close(self) -> None:
        self._inner.close()


def _mem_packet() -> tuple[Transport, Transport]:
    return mem_pair(packet=True)


def _mem_stream() -> tuple[Transport, Transport]:
    return mem_pair(packet=False)


def _no_descriptor() -> tuple[Transport, Transport]:
    a, b = mem_pair(packet=False)
    return NoDescriptor(a, 1000), NoDescriptor(b, 1000)


PAIRS: dict[str, Callable[[], tuple[Transport, Transport]]] = {
    "mem-packet": _mem_packet,
    "mem-stream": _mem_stream,
    "no-descriptor": _no_descriptor,
}


@contextlib.contextmanager
def running(
    ta: Transport,
    tb: Transport,
    on_event_b: Callable[[LinkEvent], None] | None = None,
    config: LinkConfig | None = None,
) -> Iterator[tuple[LinkRuntime, LinkRuntime]]:
    """Both runtimes started; stopped together, so neither sees the other hang up."""
    a = LinkRuntime(ta, config, rng=random.Random(1))
    b = LinkRuntime(tb, config, rng=random.Random(2), on_event=on_event_b)
    a.start()
    b.start()
    try:
        yield a, b
        a.raise_if_failed()
        b.raise_if_failed()
    finally:
        a.stop()
        b.stop()


@pytest.fixture(params=sorted(PAIRS))
def runtimes(request: pytest.FixtureRequest) -> Iterator[tuple[LinkRuntime, LinkRuntime]]:
    with running(*PAIRS[request.param]()) as pair:
        yield pair


def next_message(rt: LinkRuntime, timeout_s: float = 10.0) -> MessageReceived:
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        event = rt.next_event(remaining)
        if isinstance(event, MessageReceived):
            return event
    raise AssertionError("no message within the timeout")


def test_messages_of_every_size_arrive_whole_and_in_order(
    runtimes: tuple[LinkRuntime, LinkRuntime],
) -> None:
    a, b = runtimes
    rng = random.Random(7)
    sent = [
        (rng.choice(list(Channel)), rng.randbytes(rng.choice((0, 1, 63, 1500, 40_000, 200_000))))
        for _ in range(60)
    ]
    for channel, payload in sent:
        a.send(payload, channel)
    received = [next_message(b) for _ in sent]
    for channel in Channel:
        assert [m.payload for m in received if m.channel == channel] == [
            p for c, p in sent if c == channel
        ]


def test_sends_and_calls_run_in_the_order_they_were_made(
    runtimes: tuple[LinkRuntime, LinkRuntime],
) -> None:
    a, _ = runtimes
    queued: list[int] = []

    def record() -> None:
        queued.append(a.core.statistics().messages_queued)

    a.call(lambda: None)  # the session is not needed: messages queue before it
    for _ in range(3):
        a.post(record)
        a.send(b"x")
    a.call(record)
    assert [q - queued[0] for q in queued] == [0, 1, 2, 3]


def test_a_message_sent_while_the_loop_sleeps_goes_out_at_once() -> None:
    """Each round trip needs two wake-ups of a sleeping loop; a missed one costs a timer."""
    b_holder: list[LinkRuntime] = []

    def echo(event: LinkEvent) -> None:  # on B's loop thread
        if isinstance(event, MessageReceived):
            b_holder[0].core.send_message(event.payload, event.channel)

    with running(*mem_pair(packet=False), on_event_b=echo) as (a, b):
        b_holder.append(b)
        a.send(b"up")
        next_message(a)
        samples = []
        for _ in range(50):
            start = time.monotonic()
            a.send(b"ping")
            assert next_message(a).payload == b"ping"
            samples.append(time.monotonic() - start)
    # the keepalive timer (0.25 s) would hide a lost wake-up; the median would show it
    assert statistics.median(samples) < 0.05


class Watched:
    """A transport that records which threads wrote and read, and can swallow a write."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.packet = inner.packet
        self.name = f"watched:{inner.name}"
        self.writers: list[str] = []
        self.readers: list[str] = []
        self.swallow_next = False

    def fileno(self) -> int | None:
        return self._inner.fileno()

    def recv(self, timeout_s: float | None) -> bytes:
        data = self._inner.recv(timeout_s)
        if data:
            self.readers.append(threading.current_thread().name)
        return data

    def send(self, data: bytes, timeout_s: float | None) -> int:
        self.writers.append(threading.current_thread().name)
        if self.swallow_next:  # as a line that loses the frame
            self.swallow_next = False
            return len(data)
        return self._inner.send(data, timeout_s)

    def close(self) -> None:
        self._inner.close()


def _idle(a: LinkRuntime, b: LinkRuntime) -> None:
    """Both sessions up and nothing owed: the loops sleep until a keepalive."""
    a.send(b"up")
    next_message(b)
    time.sleep(0.1)  # past the delayed ACK


def test_a_send_to_an_idle_link_is_written_by_the_calling_thread() -> None:
    ta, tb = mem_pair(packet=True)
    watched = Watched(ta)
    with running(watched, tb) as (a, b):
        _idle(a, b)
        del watched.writers[:]
        a.send(b"now")
        # on the wire before send returned, without a hand-off to the loop thread
        assert watched.writers == [threading.current_thread().name]
        assert next_message(b).payload == b"now"


def test_a_reply_is_read_by_the_thread_that_waits_for_it() -> None:
    def echo(event: LinkEvent) -> None:
        if isinstance(event, MessageReceived):
            b.core.send_message(event.payload, event.channel)

    ta, tb = mem_pair(packet=True)
    watched = Watched(ta)
    with running(watched, tb, on_event_b=echo) as (a, b):
        a.send(b"up")
        assert next_message(a).payload == b"up"
        for _ in range(3):  # the first may still be read by the loop, which watched the port
            del watched.readers[:]
            a.send(b"ping")
            assert next_message(a).payload == b"ping"
        assert watched.readers == [threading.current_thread().name]


def test_the_loop_reads_again_once_no_caller_waits() -> None:
    """A message nobody waits for is still taken in promptly (the loop watches again)."""
    ta, tb = mem_pair(packet=True)
    with running(ta, tb) as (a, b):
        _idle(a, b)
        while a.next_event(0) is not None:  # SessionStarted
            pass
        next_event_time = time.monotonic()
        assert a.next_event(0.05) is None  # this thread watched the port for a while
        time.sleep(0.1)  # past READER_LINGER_S
        b.send(b"unasked")
        # straight from the queue: only the loop thread can have read it
        event = a.events.get(timeout=2.0)
        assert isinstance(event, MessageReceived) and event.payload == b"unasked"
        assert time.monotonic() - next_event_time < 1.0


def test_a_message_sent_by_a_caller_is_still_resent_by_the_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop slept toward a keepalive; the caller's send made an earlier deadline."""
    monkeypatch.setattr(runtime_module, "MAX_WAIT_S", 10.0)  # no periodic wake to hide behind
    config = LinkConfig(packet=True, keepalive_interval_s=2.0, dead_interval_s=6.0)
    ta, tb = mem_pair(packet=True)
    watched = Watched(ta)
    with running(watched, tb, config=config) as (a, b):
        _idle(a, b)
        watched.swallow_next = True
        start = time.monotonic()
        a.send(b"lost once")
        assert next_message(b).payload == b"lost once"
        # the retransmission timer (rto_min_s 50 ms and the round trip), not the
        # keepalive 2 s later
        assert time.monotonic() - start < 1.0
        assert a.statistics().retransmission_timeouts == 1


def test_an_error_in_a_callback_run_by_a_caller_stops_the_runtime() -> None:
    class Boom(Exception):
        pass

    def explode() -> None:
        raise Boom("from a posted function")

    ta, tb = mem_pair(packet=True)
    a = LinkRuntime(ta, rng=random.Random(1))
    with pytest.raises(Boom), a, LinkRuntime(tb, rng=random.Random(2)) as b:
        _idle(a, b)
        with pytest.raises(Boom):
            a.post(explode)  # run at once on this thread: the loop sleeps
        assert isinstance(a.error, Boom)
        a.send(b"after")  # the runtime stopped: raises what stopped it


def test_stop_returns_at_once_and_later_sends_raise() -> None:
    ta, tb = mem_pair(packet=True)
    rt = LinkRuntime(ta, rng=random.Random(1))
    rt.start()
    time.sleep(0.05)  # the loop sleeps in select
    start = time.monotonic()
    rt.stop()
    assert time.monotonic() - start < 0.25
    with pytest.raises(LinkClosed):
        rt.send(b"late")
    tb.close()


def test_an_error_on_the_loop_thread_is_raised_to_the_caller() -> None:
    class Boom(Exception):
        pass

    def explode(event: LinkEvent) -> None:
        raise Boom("from the loop thread")

    ta, tb = mem_pair(packet=True)
    rt = LinkRuntime(ta, rng=random.Random(1), on_event=explode)
    with pytest.raises(Boom), rt, LinkRuntime(tb, rng=random.Random(2)):
        deadline = time.monotonic() + 10.0
        while rt.error is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the session comes up: SessionStarted reaches the callback


class _Strict:
    """An upper core that finds the peer's first message a protocol violation."""

    def __init__(self) -> None:
        self.events: list[LinkEvent] = []

    def handle_link_event(self, event: LinkEvent, *, now: float) -> None:
        self.events.append(event)
        if isinstance(event, MessageReceived) and event.payload == b"bad":
            raise RemoteProtocolError("the peer sent something this layer cannot accept")

    def messages_to_send(self) -> list[tuple[Channel, bytes]]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def handle_timeout(self, *, now: float) -> None:
        pass

    def next_event(self) -> object | None:
        return None

    def statistics(self) -> _NoCounters:
        return _NoCounters()


class _NoCounters:
    def as_dict(self) -> dict[str, int]:
        return {}


def test_a_protocol_error_of_the_layer_above_resets_the_session_not_the_runtime() -> None:
    ta, tb = mem_pair(packet=True)
    upper = _Strict()
    a = LinkRuntime(ta, rng=random.Random(1), upper=upper)
    b = LinkRuntime(tb, rng=random.Random(2))
    a.start()
    b.start()
    try:
        b.send(b"bad")
        deadline = time.monotonic() + 10.0
        while a.statistics().session_resets == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.error is None
        assert a.statistics().session_resets == 1
        # the peer sees this end restart, and the next session carries messages again
        while a.statistics().sessions < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        b.send(b"good")
        while MessageReceived(Channel.CONTROL, b"good") not in upper.events:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert a.error is None
    finally:
        a.stop()  # before b: a must not see its peer hang up (as running() does)
        b.stop()
    lost = [e for e in upper.events if isinstance(e, SessionLost)]
    assert [e.reason for e in lost] == ["the peer sent something this layer cannot accept"]


def test_refused_input_is_summarized_at_warning_at_most_once_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ta, tb = mem_pair(packet=False)
    a = LinkRuntime(ta, rng=random.Random(1), refusal_summary_s=0.2)
    noise = b"\x00" + b"\x05\x01\x02\x03\x04" + b"\x00"  # a COBS chunk whose CRC fails
    with caplog.at_level(logging.WARNING, logger="ira.runtime.link"), a:
        for _ in range(50):
            tb.send(noise, 1.0)
        deadline = time.monotonic() + 10.0
        while a.statistics().drop_bad_crc < 50 or not _summaries(caplog):
            assert time.monotonic() < deadline, "no summary"
            time.sleep(0.05)
        time.sleep(0.5)  # more intervals pass: nothing new is refused, so no new line
        assert a.error is None
        total = 0
        for line in _summaries(caplog):
            m = re.fullmatch(
                rf"refused (\d+) frames from {re.escape(a.name)} in the last [\d.]+ s: "
                r"(\d+) bad CRC",
                line,
            )
            assert m is not None and m.group(1) == m.group(2), line
            total += int(m.group(1))
        assert total == 50
    tb.close()


def _summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]


def test_a_runtime_logs_its_link_counters_when_it_stops(caplog: pytest.LogCaptureFixture) -> None:
    ta, tb = mem_pair(packet=False)
    with caplog.at_level(logging.INFO, logger="ira.runtime.link"), running(ta, tb) as (a, b):
        a.send(b"x" * 100, Channel.BULK)
        assert next_message(b).payload == b"x" * 100
        name = a.name
    lines = [r.getMessage() for r in caplog.records if "link counters at stop" in r.getMessage()]
    assert len(lines) == 2
    mine = next(line for line in lines if f"({name})" in line)
    counters = dict(word.split("=") for word in mine.split(": ", 1)[1].split())
    assert int(counters["segments_sent"]) >= 1
    assert int(counters["frames_sent"]) >= int(counters["segments_sent"])
    assert counters["retransmission_timeouts"] == "0"
