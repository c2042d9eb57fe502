"""Link benchmarks: every figure is a ratio against a baseline measured in the same run.

* efficiency: payload goodput of 1,500-byte messages over the null-modem throttled to
  115200 and 921600 baud, divided by the line rate (baud/10 bytes per second);
* throughput: goodput of 64 KiB messages over the unthrottled null-modem, divided by
  the raw throughput of a pty pair of the same kind (raw bytes in 64 KiB writes,
  pyserial-opened ends, same process);
* latency: median round trip of a 64-byte message, divided by the median raw
  pyserial ping-pong of 64 bytes on a pty pair of the same kind;
* the link core alone (``sans_io_round_trip_s``): one 64-byte round trip between
  two ``Link`` cores in one thread, bytes handed over directly (best of five
  runs), also as a share of the raw ping-pong — what the protocol work costs,
  apart from threads, the runtime and the pty;
* link protocol version 2 against version 1 (``IRA_LINK_VERSION_MAX``), alternating:
  efficiency at 115200 baud of each and their ratio (``v2_over_v1_efficiency_115200``);
  the framing bytes per DATA frame (header, CRC, COBS and delimiter, payload excluded)
  of a bulk transfer with small answers, two cores over a simulated 115200-baud line
  (deterministic); and ``ira ping`` (``ira board serve`` and ``ira ping`` as
  processes) over the null-modem at 115200 baud with ``--ber 1e-4 --drop 0.01``:
  p50, p99 and longest of 100 calls of 64 bytes (``noisy_ping_*``; the issue's
  target: p99 <= 0.3 s, none over 1 s).

Fairness: the baseline and the link run the same amount of harness code.  The raw
writer sends one random 64 KiB chunk over and over and the reader counts bytes; the
link sender sends one random 64 KiB payload (behind an 8-byte sequence number) over
and over and the receiver checks each message's number and bytes with ``memcmp``
(``ira linktest`` instead derives every message from a seeded generator, which costs
more per byte than the link does).  Both clocks start once both ends are open (the
link's also once its session is up).  The two kinds of run alternate, and so do
blocks of raw and link pings, so that both see the same machine: latency on a shared
machine drifts 2-3x within minutes.

Usage: ``python bench/link.py [--json] [--quick] [--versions]`` (``--versions``: only
the version 2 against version 1 figures)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType

from ira import native
from ira.link.config import VERSION_MAX_ENV, LinkConfig
from ira.link.core import Link
from ira.link.events import Channel, LinkEvent, MessageReceived, SessionStarted
from ira.link.framing import StreamDeframer, encode_frames
from ira.link.simulate import LineFaults, LinkPair
from ira.runtime.link import LinkRuntime
from ira.tools.linktest import measure
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.transports.base import Transport
from ira.transports.serial import open_serial
from ira.wire.link import Data, check_crc, decode_body
from ira.wire.link2 import Data2

#: bytes of one raw write and of one link message in the throughput runs
CHUNK_BYTES = 65536
#: the link sender keeps at most this many bytes queued beyond what was received
AHEAD_BYTES = 1 << 20
#: the throughput runs alternate raw and link this many times
THROUGHPUT_ROUNDS = 3
#: the pings alternate raw and link blocks this many times
PING_BLOCKS = 10
_SEQ = struct.Struct("<Q")


def _read_exactly(t: Transport, n: int) -> None:
    got = 0
    while got < n:
        got += len(t.recv(1.0))


def _write_all(t: Transport, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = t.send(bytes(view), 1.0)
        view = view[n:]


def _raw_ends(stack: contextlib.ExitStack) -> tuple[Transport, Transport]:
    """Both ends of a fresh unthrottled null-modem, opened and seen open by it.

    Bytes sent toward an end the null-modem has not yet seen open are discarded,
    so a baseline that starts at once can lose its first bytes and wait forever.
    """
    nm = stack.enter_context(NullModem(NullModemConfig()))
    a, b = open_serial(nm.path_a), open_serial(nm.path_b)
    stack.callback(b.close)
    stack.callback(a.close)
    nm.wait_until_open()
    return a, b


def raw_throughput(total: int) -> float:
    """Bytes per second of raw data through the unthrottled null-modem."""
    with contextlib.ExitStack() as stack:
        a, b = _raw_ends(stack)
        chunk = os.urandom(CHUNK_BYTES)
        count = max(1, total // len(chunk))

        def writer() -> None:
            for _ in range(count):
                _write_all(a, chunk)

        start = time.perf_counter()
        t = threading.Thread(target=writer)
        t.start()
        _read_exactly(b, count * len(chunk))
        t.join()
        return count * len(chunk) / (time.perf_counter() - start)


def _wait_for(rt: LinkRuntime, kind: type[LinkEvent]) -> LinkEvent:
    while True:
        event = rt.next_event(5.0)
        if event is None:
            rt.raise_if_failed()
            raise SystemExit(f"benchmark: no {kind.__name__} within 5 s")
        if isinstance(event, kind):
            return event


def link_throughput(total: int) -> float:
    """Payload bytes per second of 64 KiB messages through two link runtimes."""
    with NullModem(NullModemConfig()) as nm, contextlib.ExitStack() as stack:
        a = stack.enter_context(LinkRuntime(open_serial(nm.path_a)))
        b = stack.enter_context(LinkRuntime(open_serial(nm.path_b)))
        a.send(b"up", Channel.BULK)
        _wait_for(b, MessageReceived)
        body = os.urandom(CHUNK_BYTES - _SEQ.size)
        count = max(1, total // CHUNK_BYTES)
        sent = received = 0
        start = time.perf_counter()
        while received < count:
            while sent < count and (sent - received) * CHUNK_BYTES < AHEAD_BYTES:
                a.send(_SEQ.pack(sent) + body, Channel.BULK)
                sent += 1
            event = _wait_for(b, MessageReceived)
            assert isinstance(event, MessageReceived)
            payload = event.payload
            if not (payload.startswith(_SEQ.pack(received)) and payload.endswith(body)):
                raise SystemExit(f"benchmark: message {received} arrived spoiled or out of order")
            received += 1
        elapsed = time.perf_counter() - start
        a.raise_if_failed()
        b.raise_if_failed()
        return count * CHUNK_BYTES / elapsed


class RawPingPong:
    """A pty pair with an echo thread on end B: ``ping()`` times one 64-byte round trip."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._msg = os.urandom(64)

    def __enter__(self) -> RawPingPong:
        self._a, b = _raw_ends(self._stack)

        def echo() -> None:
            while not self._stop.is_set():
                data = b.recv(0.1)
                if data:
                    _write_all(b, data)

        t = threading.Thread(target=echo, name="raw-echo")
        t.start()
        self._stack.callback(t.join)
        self._stack.callback(self._stop.set)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def ping(self) -> float:
        start = time.perf_counter()
        _write_all(self._a, self._msg)
        _read_exactly(self._a, len(self._msg))
        return time.perf_counter() - start


class LinkPingPong:
    """Two link runtimes; B echoes each message on its loop thread: ``ping()`` times one."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._msg = os.urandom(64)

    def __enter__(self) -> LinkPingPong:
        stack = self._stack
        nm = stack.enter_context(NullModem(NullModemConfig()))
        self._a = stack.enter_context(LinkRuntime(open_serial(nm.path_a)))
        b_holder: list[LinkRuntime] = []

        def bounce(event: object) -> None:  # on B's loop thread: echo at once
            if isinstance(event, MessageReceived):
                b_holder[0].core.send_message(event.payload, event.channel)

        b = stack.enter_context(LinkRuntime(open_serial(nm.path_b), on_event=bounce))
        b_holder.append(b)
        self.ping()  # the session comes up
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def ping(self) -> float:
        start = time.perf_counter()
        self._a.send(self._msg, Channel.CONTROL)
        _wait_for(self._a, MessageReceived)
        return time.perf_counter() - start


def raw_ping(count: int) -> float:
    """Median seconds of a 64-byte raw ping-pong (echo thread on the far end)."""
    with RawPingPong() as pair:
        return statistics.median(pair.ping() for _ in range(count))


def link_ping(count: int) -> float:
    """Median seconds of a 64-byte message round trip through two link runtimes."""
    with LinkPingPong() as pair:
        return statistics.median(pair.ping() for _ in range(count))


def sans_io_round_trip(count: int) -> float:
    """Seconds of one 64-byte round trip between two link cores in one thread (best of 5)."""
    now = 0.0
    a = Link(LinkConfig(), rng=random.Random(1), now=now)
    b = Link(LinkConfig(), rng=random.Random(2), now=now)
    for _ in range(10):  # the handshake
        for x, y in ((a, b), (b, a)):
            for chunk in x.data_to_send(now=now):
                y.receive_data(chunk, now=now)
    while a.next_event() is not None or b.next_event() is not None:
        pass
    message = os.urandom(64)

    def run(n: int) -> None:
        nonlocal now
        for _ in range(n):
            now += 1e-4
            a.send_message(message, Channel.CONTROL)
            for chunk in a.data_to_send(now=now):
                b.receive_data(chunk, now=now)
            while (event := b.next_event()) is not None:
                if type(event) is MessageReceived:
                    b.send_message(event.payload, event.channel)
            for chunk in b.data_to_send(now=now):
                a.receive_data(chunk, now=now)
            got = a.next_event()
            assert type(got) is MessageReceived and got.payload == message
            a.next_deadline()
            b.next_deadline()

    run(200)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        run(count)
        best = min(best, (time.perf_counter() - start) / count)
    return best


def latency(count: int) -> tuple[float, float]:
    """Median raw and link round trips, measured in alternating blocks."""
    raw: list[float] = []
    link: list[float] = []
    block = max(1, count // PING_BLOCKS)
    with RawPingPong() as raw_pair, LinkPingPong() as link_pair:
        for _ in range(PING_BLOCKS):
            raw.extend(raw_pair.ping() for _ in range(block))
            link.extend(link_pair.ping() for _ in range(block))
    return statistics.median(raw), statistics.median(link)


def throughput(total: int) -> tuple[float, float]:
    """Median raw and link throughput, measured in alternating runs."""
    raw: list[float] = []
    link: list[float] = []
    share = total // THROUGHPUT_ROUNDS
    for _ in range(THROUGHPUT_ROUNDS):
        raw.append(raw_throughput(share))
        link.append(link_throughput(share))
    return statistics.median(raw), statistics.median(link)


def goodput(baud: int | None, total: int, size: int) -> float:
    with contextlib.ExitStack() as stack:
        nm = stack.enter_context(NullModem(NullModemConfig(baud=baud)))
        report = measure(nm.path_a, nm.path_b, total, (size, size), 1, 600.0, stack)
    if not report["ok"]:
        raise SystemExit(f"benchmark transfer failed: {report}")
    value = report["goodput_bytes_per_s"]
    assert isinstance(value, float)
    return value


@contextlib.contextmanager
def link_version(version: int) -> Iterator[None]:
    """Links made meanwhile (in this process and its children) offer at most ``version``."""
    before = os.environ.get(VERSION_MAX_ENV)
    os.environ[VERSION_MAX_ENV] = str(version)
    try:
        yield
    finally:
        if before is None:
            del os.environ[VERSION_MAX_ENV]
        else:
            os.environ[VERSION_MAX_ENV] = before


def framing_bytes_per_frame(version: int) -> float:
    """Bytes a DATA (DATA2) frame adds to its payload on a byte stream (header, CRC,
    COBS, delimiter): 100 messages of 1,500 bytes one way, 60-byte answers to every
    second one the other way, two cores over a simulated 115200-baud line."""
    config = LinkConfig(version_max=version)
    a = Link(config, rng=random.Random(1), now=0.0)
    b = Link(config, rng=random.Random(2), now=0.0)
    pair = LinkPair(a, b, LineFaults(latency_s=0.001, bytes_per_s=11520.0), random.Random(0))
    deframer, costs = StreamDeframer(1 << 20), []
    write = pair.ab.write

    def tapped(data: bytes, now: float) -> None:
        for raw in deframer.feed(data):
            frame = decode_body(check_crc(raw))
            if isinstance(frame, Data | Data2):
                costs.append(len(encode_frames([raw])) - 1 - len(frame.payload))
        write(data, now)

    pair.ab.write = tapped  # type: ignore[method-assign]
    for i in range(100):
        a.send_message(bytes(1500), Channel.BULK)
        if i % 2:
            b.send_message(bytes(60), Channel.BULK)
    pair.run_until(
        lambda: sum(isinstance(e, MessageReceived) for e in pair.events_b) == 100, timeout_s=60
    )
    assert [e.version for e in pair.events_a if isinstance(e, SessionStarted)] == [version]
    # (encode_frames opens a burst with a delimiter too: one per frame is counted)
    return statistics.mean(costs)


def noisy_ping(version: int, count: int, seed: int) -> list[float]:
    """Seconds of each of ``count`` ``ira ping`` calls of 64 bytes at 115200 baud with
    ``--ber 1e-4 --drop 0.01``, board and ping as processes."""
    ira = shutil.which("ira") or os.path.join(os.path.dirname(sys.executable), "ira")
    config = NullModemConfig(baud=115200, ber=1e-4, drop=0.01, seed=seed)
    with link_version(version), NullModem(config) as nm:
        board = subprocess.Popen(
            [ira, "board", "serve", nm.path_a],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert board.stdout is not None
            for line in board.stdout:
                if "serving on" in line:
                    break
            argv = [ira, "ping", nm.path_b, "-c", str(count), "-i", "0", "-s", "64", "-W", "10"]
            # the registration over that line may take longer than ping's 5 s: retry
            for _ in range(3):
                done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                if done.returncode == 0:
                    break
        finally:
            board.terminate()
            board.wait(10)
    times = [float(t) / 1000 for t in re.findall(r"time=([\d.]+) ms", done.stdout)]
    if len(times) != count:
        raise SystemExit(f"benchmark: ira ping answered {len(times)} of {count}: {done.stderr}")
    return times


def _tail(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    n = len(ordered)
    return {
        "p50_s": ordered[n // 2],
        "p99_s": ordered[-(-n * 99 // 100) - 1],  # nearest rank
        "max_s": ordered[-1],
        "over_1s": float(sum(t > 1.0 for t in ordered)),
    }


def versions(q: int) -> dict[str, float]:
    """Version 2 against version 1 in the same run (see the module docstring)."""
    results: dict[str, float] = {}
    line = 11520.0
    eff: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(2):
        for version in (1, 2):
            with link_version(version):
                eff[version].append(goodput(115200, int(line * 10 / q), 1500) / line)
    for version in (1, 2):
        results[f"efficiency_115200_v{version}"] = statistics.median(eff[version])
        results[f"framing_bytes_per_data_frame_v{version}"] = framing_bytes_per_frame(version)
    results["v2_over_v1_efficiency_115200"] = (
        results["efficiency_115200_v2"] / results["efficiency_115200_v1"]
    )
    for version in (1, 2):
        for name, value in _tail(noisy_ping(version, 100, seed=7)).items():
            results[f"noisy_ping_{name}_v{version}"] = value
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smaller transfers")
    parser.add_argument(
        "--versions", action="store_true", help="only link version 2 against version 1"
    )
    args = parser.parse_args()
    q = 4 if args.quick else 1
    if args.versions:
        figures = versions(q)
        print(json.dumps({**figures, "build": native.status()}, sort_keys=True))
        return
    results: dict[str, float] = {}
    for baud, seconds in ((115200, 20), (921600, 10)):
        line = baud / 10
        results[f"efficiency_{baud}"] = goodput(baud, int(line * seconds / q), 1500) / line
    raw, link = throughput((64 << 20) // q)
    results["raw_pty_bytes_per_s"] = raw
    results["link_bytes_per_s"] = link
    results["throughput_ratio"] = link / raw
    raw_rtt, link_rtt = latency(2000 // q)
    results["raw_ping_s"] = raw_rtt
    results["link_ping_s"] = link_rtt
    results["latency_ratio"] = link_rtt / raw_rtt
    results["sans_io_round_trip_s"] = core = sans_io_round_trip(10_000 // q)
    results["sans_io_share_of_raw_ping"] = core / raw_rtt
    results.update(versions(q))
    if args.json:
        # which build of the hot modules ran: compiled or pure Python (ira.native)
        print(json.dumps({**results, "build": native.status()}, sort_keys=True))
        return
    print(f"build: {native.status()}")
    print(f"efficiency at 115200 baud: {results['efficiency_115200']:.3f} (target >= 0.95)")
    print(f"efficiency at 921600 baud: {results['efficiency_921600']:.3f} (target >= 0.95)")
    print(
        f"64 KiB messages: {link / 1e6:.1f} MB/s vs raw pty {raw / 1e6:.1f} MB/s "
        f"= {results['throughput_ratio']:.2f} (target >= 0.5)"
    )
    print(
        f"64-byte round trip: {link_rtt * 1e6:.0f} us vs raw ping-pong {raw_rtt * 1e6:.0f} us "
        f"= {results['latency_ratio']:.2f} (target <= 1.5)"
    )
    print(
        f"link cores alone, per 64-byte round trip: {core * 1e6:.1f} us "
        f"= {results['sans_io_share_of_raw_ping']:.2f} of a raw ping-pong"
    )
    for name in sorted(k for k in results if k.endswith(("_v1", "_v2")) or "v2_over" in k):
        print(f"{name}: {results[name]:.3f}")


if __name__ == "__main__":
    main()
