"""Timestamps of a process's TAP, pty and wake-up pipe reads and writes, for ``bench/venet.py
--phases``.

``install(path)`` wraps ``os.read``, ``os.readv`` and ``os.write`` so that each call on a
TAP (``/dev/net/tun``), a pty (``/dev/pts/N``, ``/dev/ptmx``) or a pipe appends one line to
``path``: ``<CLOCK_MONOTONIC ns at return> <pid> <r|w> <tap|pty|pipe> <fd> <bytes> <ns in
the call>``.
CLOCK_MONOTONIC is one clock for every process of the machine, whatever its network
namespace, so the lines of the bench (the null-modem's thread) and of both ``ira``
processes merge into one timeline.  Each line costs one ``os.write`` (a few µs), so a
traced run is a little slower than an untraced one; the bench reports both.

The ``ira`` processes load it through a ``sitecustomize`` module the bench puts on their
``PYTHONPATH`` (``IRA_BENCH_IOTRACE`` names the file); nothing in ``ira`` knows of it.

``ping_timelines`` reads such a trace back: each idle ping's way through both processes and
the null-modem, event by event (``PHASES``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

#: the environment variable naming the trace file
ENV = "IRA_BENCH_IOTRACE"


def _kind(fd: int) -> str | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if target == "/dev/net/tun":
        return "tap"
    if target.startswith("/dev/pts/") or target == "/dev/ptmx":
        return "pty"
    if target.startswith("pipe:"):
        return "pipe"
    return None


def install(path: str) -> Callable[[], None]:
    """Trace this process's TAP, pty and pipe I/O into ``path`` (appending); returns what
    puts the untraced calls back."""
    out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    kinds: dict[int, str | None] = {}
    lock = threading.Lock()
    real_read, real_readv, real_write = os.read, os.readv, os.write
    clock = time.monotonic_ns

    def record(op: str, fd: int, size: int, began: int) -> None:
        stamp = clock()
        kind = kinds.get(fd, "?")
        if kind == "?":
            with lock:
                kind = kinds[fd] = _kind(fd)
        if kind is not None and size >= 0:
            real_write(out, f"{stamp} {pid} {op} {kind} {fd} {size} {stamp - began}\n".encode())

    def wrap(real: Callable[..., Any], op: str, measure: Callable[[Any], int]) -> Any:
        def traced(fd: int, *args: Any) -> Any:
            began = clock()
            result = real(fd, *args)
            if fd != out:
                record(op, fd, measure(result), began)
            return result

        return traced

    os.read = wrap(real_read, "r", len)
    os.readv = wrap(real_readv, "r", int)
    os.write = wrap(real_write, "w", int)

    def uninstall() -> None:
        os.read, os.readv, os.write = real_read, real_readv, real_write
        os.close(out)

    return uninstall


def install_from_environment() -> None:
    """``install`` if ``IRA_BENCH_IOTRACE`` names a file (what the ``sitecustomize`` runs)."""
    path = os.environ.get(ENV)
    if path:
        install(path)


#: the idle ping's phases (``--phases``): name, and the two events of the timeline it spans
PHASES = (
    ("host: TAP read -> pty write", "host_tap_r", "host_pty_w"),
    ("pty -> null-modem read", "host_pty_w", "nm_r"),
    ("null-modem read -> write", "nm_r", "nm_w"),
    ("null-modem write -> board pty read", "nm_w", "board_pty_r"),
    ("board: pty read -> TAP write", "board_pty_r", "board_tap_w"),
    ("board: TAP write (its kernel answers) -> reply read", "board_tap_w", "board_tap_r"),
    ("board: TAP read -> pty write", "board_tap_r", "board_pty_w"),
    ("pty -> null-modem read (back)", "board_pty_w", "nm_r2"),
    ("null-modem read -> write (back)", "nm_r2", "nm_w2"),
    ("null-modem write -> host pty read", "nm_w2", "host_pty_r"),
    ("host: pty read -> TAP write", "host_pty_r", "host_tap_w"),
)


#: a ping whose reply does not reach the host's TAP within this is not counted (a stray frame,
#: or a reply lost): an idle ping over the unthrottled null-modem takes a few milliseconds
TIMELINE_NS = 50_000_000


def ping_timelines(
    trace: list[tuple[int, int, str, str, int, int]], host: int, board: int, nm: int
) -> list[dict[str, float]]:
    """Each ping's timeline (event -> CLOCK_MONOTONIC seconds) from the merged I/O trace:
    the host's TAP read of the request, then each next event after the one before (see
    ``PHASES``); with the pty writes and reads each side made in between (ACKs, ring
    updates) counted.  A ping found only in part is left out."""
    who = {host: "host", board: "board", nm: "nm"}
    events = sorted(
        (t, who[pid], op, kind, size)
        for t, pid, op, kind, _fd, size in trace
        if pid in who and kind in ("tap", "pty")
    )
    order = [
        ("host_tap_r", "host", "r", "tap"),
        ("host_pty_w", "host", "w", "pty"),
        ("nm_r", "nm", "r", "pty"),
        ("nm_w", "nm", "w", "pty"),
        ("board_pty_r", "board", "r", "pty"),
        ("board_tap_w", "board", "w", "tap"),
        ("board_tap_r", "board", "r", "tap"),
        ("board_pty_w", "board", "w", "pty"),
        ("nm_r2", "nm", "r", "pty"),
        ("nm_w2", "nm", "w", "pty"),
        ("host_pty_r", "host", "r", "pty"),
        ("host_tap_w", "host", "w", "tap"),
    ]
    timelines: list[dict[str, float]] = []
    i = 0
    while i < len(events):
        t, side, op, kind, size = events[i]
        i += 1
        if (side, op, kind) != ("host", "r", "tap") or size < 98:  # an ICMP echo or longer
            continue
        line: dict[str, float] = {"host_tap_r": t / 1e9}
        j = i
        for name, want_side, want_op, want_kind in order[1:]:
            # the request and its reply are the same size on both TAPs (an echo)
            while j < len(events) and (
                events[j][1:4] != (want_side, want_op, want_kind)
                or (want_kind == "tap" and events[j][4] != size)
            ):
                j += 1
            if j == len(events) or events[j][0] - t > TIMELINE_NS:
                break
            line[name] = events[j][0] / 1e9
            j += 1
        else:
            stop = line["host_tap_w"] * 1e9
            between = [e for e in events[i:j] if e[0] <= stop and e[3] == "pty"]
            for side_name in ("host", "board"):
                for op in ("r", "w"):
                    line[f"{side_name}_pty_{op}_count"] = sum(
                        1 for e in between if e[1] == side_name and e[2] == op
                    )
            timelines.append(line)
            i = j
    return timelines
