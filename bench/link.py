"""Link benchmarks: every figure is a ratio against a baseline measured in the same run.

* efficiency: payload goodput of 1,500-byte messages over the null-modem throttled to
  115200 and 921600 baud, divided by the line rate (baud/10 bytes per second);
* throughput: goodput of 64 KiB messages over the unthrottled null-modem, divided by
  the raw throughput of the same pty pair (raw bytes, pyserial-opened ends, same process);
* latency: median round trip of a 64-byte message, divided by the median raw
  pyserial ping-pong on the same pty pair.

Usage: ``python bench/link.py [--json] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import threading
import time

from ira.cli.linktest import measure
from ira.link.events import Channel, MessageReceived
from ira.link.nullmodem import NullModem, NullModemConfig
from ira.link.runtime import LinkRuntime
from ira.link.serialport import open_serial
from ira.link.transport import Transport


def _read_exactly(t: Transport, n: int) -> None:
    got = 0
    while got < n:
        got += len(t.recv(1.0))


def _write_all(t: Transport, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = t.send(bytes(view), 1.0)
        view = view[n:]


def raw_throughput(total: int) -> float:
    """Bytes per second of raw data through the unthrottled null-modem."""
    with NullModem(NullModemConfig()) as nm:
        a, b = open_serial(nm.path_a), open_serial(nm.path_b)
        try:
            chunk = os.urandom(65536)

            def writer() -> None:
                for _ in range(total // len(chunk)):
                    _write_all(a, chunk)

            start = time.perf_counter()
            t = threading.Thread(target=writer)
            t.start()
            _read_exactly(b, total // len(chunk) * len(chunk))
            t.join()
            return total / (time.perf_counter() - start)
        finally:
            a.close()
            b.close()


def raw_ping(count: int) -> float:
    """Median seconds of a 64-byte raw ping-pong (echo thread on the far end)."""
    with NullModem(NullModemConfig()) as nm:
        a, b = open_serial(nm.path_a), open_serial(nm.path_b)
        stop = threading.Event()

        def echo() -> None:
            while not stop.is_set():
                data = b.recv(0.1)
                if data:
                    _write_all(b, data)

        t = threading.Thread(target=echo)
        t.start()
        msg = os.urandom(64)
        samples = []
        try:
            for _ in range(count):
                start = time.perf_counter()
                _write_all(a, msg)
                _read_exactly(a, 64)
                samples.append(time.perf_counter() - start)
        finally:
            stop.set()
            t.join()
            a.close()
            b.close()
        return statistics.median(samples)


def link_ping(count: int) -> float:
    """Median seconds of a 64-byte message round trip through two link runtimes."""
    with NullModem(NullModemConfig()) as nm, contextlib.ExitStack() as stack:
        a = stack.enter_context(LinkRuntime(open_serial(nm.path_a)))
        b_holder: list[LinkRuntime] = []

        def bounce(event: object) -> None:  # on B's loop thread: echo at once
            if isinstance(event, MessageReceived):
                b_holder[0].core.send_message(event.payload, event.channel)

        b = stack.enter_context(LinkRuntime(open_serial(nm.path_b), on_event=bounce))
        b_holder.append(b)
        msg = os.urandom(64)
        samples = []
        # let the session come up
        a.send(msg)
        while not isinstance(a.next_event(5.0), MessageReceived):
            pass
        for _ in range(count):
            start = time.perf_counter()
            a.send(msg, Channel.CONTROL)
            while not isinstance(a.next_event(5.0), MessageReceived):
                pass
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)


def goodput(baud: int | None, total: int, size: int) -> float:
    with contextlib.ExitStack() as stack:
        nm = stack.enter_context(NullModem(NullModemConfig(baud=baud)))
        report = measure(nm.path_a, nm.path_b, total, (size, size), 1, 600.0, stack)
    if not report["ok"]:
        raise SystemExit(f"benchmark transfer failed: {report}")
    value = report["goodput_bytes_per_s"]
    assert isinstance(value, float)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smaller transfers")
    args = parser.parse_args()
    q = 4 if args.quick else 1
    results: dict[str, float] = {}
    for baud, seconds in ((115200, 20), (921600, 10)):
        line = baud / 10
        results[f"efficiency_{baud}"] = goodput(baud, int(line * seconds / q), 1500) / line
    raw = raw_throughput((64 << 20) // q)
    link = goodput(None, (64 << 20) // q, 65536)
    results["raw_pty_bytes_per_s"] = raw
    results["link_bytes_per_s"] = link
    results["throughput_ratio"] = link / raw
    raw_rtt = raw_ping(2000 // q)
    link_rtt = link_ping(2000 // q)
    results["raw_ping_s"] = raw_rtt
    results["link_ping_s"] = link_rtt
    results["latency_ratio"] = link_rtt / raw_rtt
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
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


if __name__ == "__main__":
    main()
