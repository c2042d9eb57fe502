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
