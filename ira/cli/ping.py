"""``ira ping LINK [-c N] [-s SIZE] [-i INTERVAL]``: DEVCALL round trips to ``echo``.

Each ping is one DEVCALL carrying SIZE bytes to the board's ``echo`` device,
timed from the caller's side (queueing to the link thread included).  A line
per reply, then a summary: calls, replies, loss, and min/avg/max/mdev of the
round trips.  A board that goes away or restarts costs the calls it did not
answer (counted as lost); the next call reopens ``echo`` and ping goes on.
Exit status 0 when every call was answered intact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import time

from ira.cli.linkopts import add_psk_argument, link_config
from ira.errors import ConfigError, DevcallError, DevcallTimeout, IraError, SessionReset
from ira.runtime import HostClient
from ira.wire.bus import MAX_CALL_PAYLOAD_BYTES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ping",
        help="DEVCALL echo round trips to a board, ping-style",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("link", metavar="LINK", help="link spec")
    p.add_argument("-c", "--count", type=int, metavar="N", help="stop after N calls")
    p.add_argument("-s", "--size", type=int, default=56, metavar="SIZE", help="payload bytes")
    p.add_argument(
        "-i", "--interval", type=float, default=1.0, metavar="S", help="seconds between calls"
    )
    p.add_argument("-W", "--timeout", type=float, default=2.0, metavar="S", help="per-call timeout")
    add_psk_argument(p)
    p.set_defaults(func=run)


def summary(rtts_s: list[float]) -> tuple[float, float, float, float]:
    """min, avg, max, mdev (as ping computes it) in seconds."""
    n = len(rtts_s)
    avg = sum(rtts_s) / n
    mdev = math.sqrt(max(0.0, sum(r * r for r in rtts_s) / n - avg * avg))
    return min(rtts_s), avg, max(rtts_s), mdev


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise ConfigError("-c must be at least 1")
    if not 0 <= args.size <= MAX_CALL_PAYLOAD_BYTES:
        raise ConfigError(f"-s {args.size}: give 0 to {MAX_CALL_PAYLOAD_BYTES} bytes")
    if not 0 <= args.interval < math.inf:
        raise ConfigError(f"-i {args.interval}: give a number of seconds, 0 or more")
    if not 0 < args.timeout < math.inf:
        raise ConfigError(f"-W {args.timeout}: give a positive number of seconds")
    config = link_config(args.psk_file)
    rtts: list[float] = []
    sent = 0
    with HostClient(args.link, link_config=config) as client:
        echo = client.find("echo")
        print(f"PING {args.link} echo device {echo.device_id}: {args.size} bytes", flush=True)
        started = time.monotonic()
        try:
            while args.count is None or sent < args.count:
                if sent:
                    time.sleep(args.interval)
                sent += 1
                payload = bytes((sent + i) & 0xFF for i in range(args.size))
                t0 = time.monotonic()
                try:
                    result = client.ping(payload, timeout_s=args.timeout)
                except (DevcallError, DevcallTimeout, SessionReset) as exc:
                    print(f"seq={sent}: {exc}", flush=True)
                    continue
                except IraError as exc:  # the link failed: the statistics still follow
                    print(f"seq={sent}: {exc}", flush=True)
                    break
                rtt = time.monotonic() - t0
                if result.payload != payload:
                    print(f"seq={sent}: reply differs from the request", flush=True)
                    continue
                rtts.append(rtt)
                print(
                    f"{len(result.payload)} bytes from {args.link}: seq={sent} "
                    f"time={rtt * 1e3:.3f} ms",
                    flush=True,
                )
        except KeyboardInterrupt:
            pass
        elapsed = time.monotonic() - started
    lost = sent - len(rtts)
    print(f"--- {args.link} ping statistics ---")
    print(
        f"{sent} calls, {len(rtts)} replies, {100 * lost / max(sent, 1):.0f}% lost, "
        f"time {elapsed * 1e3:.0f} ms"
    )
    if rtts:
        lo, avg, hi, mdev = (v * 1e3 for v in summary(rtts))
        print(f"rtt min/avg/max/mdev = {lo:.3f}/{avg:.3f}/{hi:.3f}/{mdev:.3f} ms")
    return 0 if sent and not lost else 1
