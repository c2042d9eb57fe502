"""Bus benchmarks: every figure is a ratio against a baseline measured in the same run.

A board (``BoardService``, the stock devices) and a host (``HostClient``) run in
this process over one unthrottled virtual null-modem.

* latency: median round trip of a 64-byte DEVCALL to the board's ``echo``
  device, as the caller sees it, divided by the median raw pyserial
  ping-pong of 64 bytes on an unthrottled null-modem of the same kind
  (``RawPingPong`` of bench/link.py); blocks of raw pings and DEVCALLs
  alternate, as in bench/link.py, so that both see the same machine;
* pipelining: DEVCALLs per second to the ``counter`` device with many calls
  in flight (``HostClient.submit``/``result``); also given as calls completed
  per raw ping-pong round trip;
* the bus's own cost: a ``Bus`` and a ``Connector`` driven against each other
  directly (no link, no threads), 64-byte DEVCALLs to ``echo`` one at a
  time; the time per call in each of the three steps (host: call and encode;
  board: decode, run the device, encode the reply; host: decode the reply and
  report ``CallCompleted``), also as a share of the raw ping-pong;
* signals: SIGNAL messages the board sends per event that the ``counter``
  device posts through its window (shm-signal coalescing), in two cases:
  *steady*, one event per turn of the board's loop with the host idle (what
  a receiver that keeps up costs; depends on timing), and *under load*,
  bursts of 100 events per turn while the host is busy with pipelined
  DEVCALLs (the acceptance scenario, end to end).  In both, the host must
  see the last event (none lost).

Usage: ``python bench/bus.py [--json] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from link import PING_BLOCKS, RawPingPong

from ira import native
from ira.busmodel.bus import Bus
from ira.busmodel.connector import Connector
from ira.busmodel.devices.counting import CounterFunc, CounterShm, CountingDevice
from ira.busmodel.devices.echo import Echo, EchoFunc
from ira.busmodel.events import (
    BusEvent,
    CallCompleted,
    DeviceOpened,
    SignalReceived,
    WindowAttached,
)
from ira.busmodel.window import Window
from ira.link.events import Channel, MessageReceived, SessionStarted
from ira.runtime import BoardService, HostClient
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.wire.bus import SignalNotify

#: calls kept in flight by the pipelining benchmark
IN_FLIGHT = 256
#: how long any single wait of the benchmark may take
WAIT_S = 30.0


class Listener:
    """Host events the benchmark waits for (called on the host's loop thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.attached: dict[int, WindowAttached] = {}
        self.window: Window | None = None
        #: signal notifications run on the host, and the event count the last one saw
        self.notifications = 0
        self.last_seen = 0

    def __call__(self, client: HostClient, event: BusEvent) -> None:
        with self._cond:
            match event:
                case WindowAttached():
                    self.attached[event.call_id] = event
                case SignalReceived() if self.window is not None:
                    # the loop thread owns the window, so it may read it here
                    (self.last_seen,) = struct.unpack("<Q", self.window.read(0, 8))
                    self.notifications += 1
                case _:
                    return
            self._cond.notify_all()

    def wait(self, ready: Callable[[], bool]) -> None:
        with self._cond:
            if not self._cond.wait_for(ready, WAIT_S):
                raise SystemExit(f"benchmark stalled: nothing happened for {WAIT_S:g} s")


def latency(host: HostClient, count: int) -> tuple[float, float]:
    """Median raw ping-pong and 64-byte DEVCALL round trip to ``echo``, in alternating blocks."""
    echo = host.open("echo")
    msg = os.urandom(64)

    def devcall() -> float:
        start = time.perf_counter()
        result = host.call(echo, EchoFunc.ECHO, msg)
        elapsed = time.perf_counter() - start
        if result.payload != msg:
            raise SystemExit("echo returned something else")
        return elapsed

    for _ in range(20):  # warm up
        devcall()
    raw: list[float] = []
    calls: list[float] = []
    block = max(1, count // PING_BLOCKS)
    with RawPingPong() as raw_pair:
        for _ in range(PING_BLOCKS):
            raw.extend(raw_pair.ping() for _ in range(block))
            calls.extend(devcall() for _ in range(block))
    return statistics.median(raw), statistics.median(calls)


def _deliver(messages: list[tuple[Channel, bytes]], to: Bus | Connector) -> None:
    for channel, data in messages:
        to.handle_link_event(MessageReceived(channel, data), now=0.0)


def sans_io(count: int) -> tuple[float, float, float]:
    """Seconds per 64-byte DEVCALL to ``echo`` in the bus model alone, by step (best of 5)."""
    board, host = Connector(), Bus()
    board.add_device(Echo(), now=0.0)
    session = SessionStarted(1, 2, 0, 4096, 1)
    board.handle_link_event(session, now=0.0)
    host.handle_link_event(session, now=0.0)
    for _ in range(3):  # registration and replay
        _deliver(host.messages_to_send(), board)
        _deliver(board.messages_to_send(), host)
    host.open(host.devices()[0].device_id, now=0.0)
    _deliver(host.messages_to_send(), board)
    _deliver(board.messages_to_send(), host)
    opened = [ev for ev in iter(host.next_event, None) if isinstance(ev, DeviceOpened)]
    handle = opened[0].handle
    msg = os.urandom(64)
    clock = time.perf_counter
    best: tuple[float, float, float] | None = None
    for _ in range(6):  # the first round warms up
        send = serve = complete = 0.0
        for _ in range(count):
            t0 = clock()
            host.call(handle, EchoFunc.ECHO, msg, now=1.0)
            out = host.messages_to_send()
            t1 = clock()
            for channel, data in out:
                board.handle_link_event(MessageReceived(channel, data), now=1.0)
            while board.next_event() is not None:
                pass
            back = board.messages_to_send()
            t2 = clock()
            for channel, data in back:
                host.handle_link_event(MessageReceived(channel, data), now=1.0)
            event = host.next_event()
            host.next_deadline()
            t3 = clock()
            if not isinstance(event, CallCompleted) or event.payload != msg:
                raise SystemExit(f"echo answered {event!r}")
            send, serve, complete = send + t1 - t0, serve + t2 - t1, complete + t3 - t2
        steps = (send / count, serve / count, complete / count)
        if best is None or sum(steps) < sum(best):
            best = steps
    assert best is not None
    return best


def pipelined(host: HostClient, handle: int, total: int) -> float:
    """DEVCALLs per second to ``counter`` with up to ``IN_FLIGHT`` in flight."""
    window: list[Future[object]] = []
    start = time.perf_counter()
    for _ in range(total):
        window.append(host.submit(handle, CounterFunc.INCREMENT))
        if len(window) >= IN_FLIGHT:
            host.result(window.pop(0))
    for future in window:
        host.result(future)
    return total / (time.perf_counter() - start)


def attach_events(host: HostClient, listener: Listener, handle: int) -> None:
    """Attach the counter's EVENTS window with a signal; its notifications reach ``listener``."""
    window = host.runtime.call(lambda: host.bus.create_window(8, device_length=8))
    listener.window = window
    call_id = host.runtime.call(
        lambda: host.bus.attach(
            handle, CounterShm.EVENTS, window, now=time.monotonic(), signal=True
        )
    )
    listener.wait(lambda: call_id in listener.attached)


def post_events(board: BoardService, counter: CountingDevice, events: int, burst: int) -> None:
    """Post ``events`` events, ``burst`` at a time, each burst in one turn of the board's loop."""
    for _ in range(events // burst):
        board.call(lambda c: counter.post(burst))


def signals_per_event(
    board: BoardService,
    host: HostClient,
    listener: Listener,
    counter: CountingDevice,
    events: int,
    burst: int,
    load_handle: int | None,
) -> dict[str, float]:
    """SIGNAL messages per posted event; with ``load_handle`` the host pipelines calls meanwhile."""
    before_signals = board.statistics().sent.get(SignalNotify, 0)
    before_notes = listener.notifications
    first = board.call(lambda c: counter.events) + 1
    stop = threading.Event()
    calls = 0

    def load() -> None:
        nonlocal calls
        assert load_handle is not None
        pending: list[Future[object]] = []
        while not stop.is_set():
            pending.append(host.submit(load_handle, CounterFunc.INCREMENT))
            if len(pending) >= 256:
                host.result(pending.pop(0))
                calls += 1
        for future in pending:
            host.result(future)
            calls += 1

    loader = threading.Thread(target=load) if load_handle is not None else None
    if loader is not None:
        loader.start()
    start = time.perf_counter()
    try:
        post_events(board, counter, events, burst)
    finally:
        stop.set()
        if loader is not None:
            loader.join()
    elapsed = time.perf_counter() - start
    last = first + events - 1
    listener.wait(lambda: listener.last_seen >= last)
    signals = board.statistics().sent.get(SignalNotify, 0) - before_signals
    return {
        "events": events,
        "signal_messages": signals,
        "signals_per_event": signals / events,
        "host_notifications": listener.notifications - before_notes,
        "events_per_s": events / elapsed,
        "load_calls": calls,
    }


def run(quick: bool) -> dict[str, float]:
    q = 4 if quick else 1
    results: dict[str, float] = {}
    send, serve, complete = sans_io(10_000 // q)
    listener = Listener()
    with (
        NullModem(NullModemConfig()) as nm,
        BoardService(nm.path_a) as board,
        HostClient(nm.path_b, on_event=listener) as host,
    ):
        host.wait_ready()
        raw_rtt, devcall_rtt = latency(host, 2000 // q)
        counter_handle = host.open("counter")
        calls_per_s = pipelined(host, counter_handle, 40_000 // q)
        counter_id = board.devices()["counter"]
        counter = board.call(lambda c: c.devices()[counter_id])
        assert isinstance(counter, CountingDevice)
        attach_events(host, listener, counter_handle)
        load_handle = host.open("counter")
        steady = signals_per_event(board, host, listener, counter, 10_000 // q, 1, None)
        loaded = signals_per_event(board, host, listener, counter, 10_000 // q, 100, load_handle)
    results["raw_ping_s"] = raw_rtt
    results["devcall_ping_s"] = devcall_rtt
    results["latency_ratio"] = devcall_rtt / raw_rtt
    results["devcalls_per_s"] = calls_per_s
    results["sans_io_host_send_s"] = send
    results["sans_io_board_s"] = serve
    results["sans_io_host_complete_s"] = complete
    results["sans_io_devcall_s"] = send + serve + complete
    results["sans_io_share_of_raw_ping"] = (send + serve + complete) / raw_rtt
    results["devcalls_per_raw_round_trip"] = calls_per_s * raw_rtt
    for name, figures in (("steady", steady), ("loaded", loaded)):
        for key, value in figures.items():
            results[f"signal_{name}_{key}"] = value
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    r = run(args.quick)
    if args.json:
        # which build of the hot modules ran: compiled or pure Python (ira.native)
        print(json.dumps({**r, "build": native.status()}, sort_keys=True))
        return
    print(f"build: {native.status()}")
    print(
        f"64-byte DEVCALL round trip: {r['devcall_ping_s'] * 1e6:.0f} us vs raw ping-pong "
        f"{r['raw_ping_s'] * 1e6:.0f} us = {r['latency_ratio']:.2f} (target <= 1.5)"
    )
    print(
        f"pipelined DEVCALLs: {r['devcalls_per_s']:,.0f} per second (target >= 20,000) "
        f"= {r['devcalls_per_raw_round_trip']:.2f} calls per raw ping-pong round trip"
    )
    print(
        f"bus model alone, per 64-byte DEVCALL: {r['sans_io_devcall_s'] * 1e6:.2f} us "
        f"(host call {r['sans_io_host_send_s'] * 1e6:.2f}, "
        f"board {r['sans_io_board_s'] * 1e6:.2f}, "
        f"host completion {r['sans_io_host_complete_s'] * 1e6:.2f}) "
        f"= {r['sans_io_share_of_raw_ping']:.3f} of a raw ping-pong"
    )
    for name, case in (("steady", "steady, host idle"), ("loaded", "under load")):
        print(
            f"signals, {case}: {r[f'signal_{name}_signal_messages']:.0f} SIGNAL messages "
            f"for {r[f'signal_{name}_events']:.0f} events "
            f"= {r[f'signal_{name}_signals_per_event']:.3f} per event "
            f"(host notified {r[f'signal_{name}_host_notifications']:.0f} times, none lost)"
        )


if __name__ == "__main__":
    main()
