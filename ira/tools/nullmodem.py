"""The virtual null-modem: two pty paths bridged, throttled and faulty on request.

Theory of operation
-------------------
``NullModem`` opens two pseudo-terminals in raw mode and keeps only their
master ends.  The slave paths (``path_a``, ``path_b``) are what programs open
with pyserial, exactly like ``/dev/ttyUSB0``; the null-modem itself holds no
slave open, so "nobody has this end open" is visible on the master (poll
reports a hang-up, reads fail with EIO).

One worker thread runs one ``poll`` loop over both masters and carries each
direction (A→B, B→A) through the same pipeline::

    read the source master  →  inject faults  →  pending (bounded)
        →  pace at baud/10 bytes per second (token bucket)  →  sink

The sink is the destination master, or nothing when the cable is unplugged
or the destination board is off (bytes discarded, counted).  When the
destination cannot take bytes the pending buffer fills and the source is not
read any more: backpressure, as with hardware flow control.  Nothing is ever
dropped except by an injected fault, an unplug or a board that is off.

* **Unthrottled** (``baud=None``) the loop moves whole reads (up to 64 KiB)
  and touches no byte in Python unless a fault is configured.
* **Throttled** each direction releases at most ``baud/10`` bytes per second
  (10 bits per byte on the wire); the bucket holds at most 10 ms worth of
  bytes, and no more than 256 bytes wait inside the null-modem beyond that,
  so no standing queue builds up here (the sender's pty buffer holds the rest,
  like a UART driver's transmit buffer).
* **Faults** follow the model of ``ira.link.faults`` (bit flips, drops,
  duplications, error bursts; seeded per direction and fault kind, so the same
  seed and bytes give the same faults however the stream is cut into reads).
* **Board off**: when no process has a slave open, the bytes sent toward it
  are discarded and the master is probed every 10 ms; as soon as somebody
  opens it again it carries bytes again (a board process restarting works).
* **Unplug**: ``unplug(duration_s)`` (or the schedule ``unplug_every_s`` /
  ``unplug_for_s``) silences both directions: what is in flight and whatever
  is sent meanwhile is lost, at line pace.
* **Pull a port**: ``pull(end, duration_s)`` makes one end's port go away as a
  pulled USB-serial adapter does: its pty master is closed (the program that
  has the port open reads end-of-file, writes fail with EIO) and the pty node
  disappears; after ``duration_s`` (or at ``plug(end)``) a new pty takes its
  place.  ``symlink(end, path)`` keeps a stable name (``/dev/serial/by-id/…``
  style) pointing at the end's current pty: it vanishes while the port is
  pulled and points at the new pty when it is back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from ira.errors import ConfigError, TransportError
from ira.link.faults import ByteFaults, DirectionStatistics, FaultCounters, FaultModel

__all__ = ["DirectionStatistics", "NullModem", "NullModemConfig", "NullModemStatistics"]

log = logging.getLogger(__name__)

#: most bytes read from a master at once, and what an unthrottled direction may hold
_CHUNK_BYTES = 65536
#: what a throttled direction may hold beyond the bytes the bucket lets out
_THROTTLED_PENDING_BYTES = 256
#: the token bucket holds at most this much line time
_BUCKET_S = 0.01
#: reads in a row from one source while its destination keeps up
_READS_PER_TURN = 64
#: how often an end that is off (no slave open) is probed for a new opener
_PROBE_S = 0.01
#: longest sleep of the loop when nothing is due (stop and unplug wake it at once)
_IDLE_S = 0.5

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLHUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


@dataclass(frozen=True, slots=True)
class NullModemConfig:
    """How the virtual cable behaves.  Every fault is off by default."""

    #: line rate in bits per second, 10 bits per byte; None carries bytes as fast as possible
    baud: int | None = None
    #: bit error rate: probability that each bit is flipped
    ber: float = 0.0
    #: probability that each byte is lost
    drop: float = 0.0
    #: probability that each byte is delivered twice
    dup: float = 0.0
    #: probability, at each byte, that an error burst starts
    burst_rate: float = 0.0
    #: bytes corrupted by one burst (the byte where it starts included)
    burst_bytes: int = 8
    #: seed of the fault generators; None picks one (see ``NullModem.seed``)
    seed: int | None = None
    #: unplug the cable every this many seconds (None: only on ``unplug()``)
    unplug_every_s: float | None = None
    #: how long each scheduled unplug lasts, in seconds
    unplug_for_s: float = 2.0

    def __post_init__(self) -> None:
        if self.baud is not None and self.baud <= 0:
            raise ConfigError(f"baud must be a positive number of bits per second, got {self.baud}")
        FaultModel(self.ber, self.drop, self.dup, self.burst_rate, self.burst_bytes)  # validates
        if self.unplug_every_s is not None and not self.unplug_every_s > 0:
            raise ConfigError(f"unplug period must be positive, got {self.unplug_every_s}")
        if not self.unplug_for_s > 0:
            raise ConfigError(f"unplug duration must be positive, got {self.unplug_for_s}")
        if self.unplug_every_s is not None and self.unplug_for_s >= self.unplug_every_s:
            raise ConfigError(
                f"--unplug-for {self.unplug_for_s:g} is not shorter than --unplug-every "
                f"{self.unplug_every_s:g}: the cable would never be plugged back in; "
                "make the unplug shorter than the period"
            )

    @property
    def faults(self) -> FaultModel:
        """The byte-level fault model of each direction."""
        return FaultModel(self.ber, self.drop, self.dup, self.burst_rate, self.burst_bytes)

    @property
    def faulty(self) -> bool:
        """True when any byte-level fault is configured."""
        return self.faults.any


@dataclass(frozen=True, slots=True)
class NullModemStatistics:
    """Counters of both directions."""

    a_to_b: DirectionStatistics
    b_to_a: DirectionStatistics
    #: unplug periods started (by ``unplug()`` or the schedule)
    unplugs: int


class _Bucket:
    """Token bucket pacing one direction at ``rate`` bytes per second."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.depth = max(1.0, rate * _BUCKET_S)
        self.tokens = self.depth
        self._last = now

    def available(self, now: float) -> int:
        self.tokens = min(self.depth, self.tokens + (now - self._last) * self.rate)
        self._last = now
        return int(self.tokens)

    def wait_s(self, want: int) -> float:
        """Seconds until ``want`` bytes (at most a quarter bucketful) may go.

        Waking well before the bucket is full means a late wake-up loses no
        line time, so a busy direction runs at the full rate.
        """
        need = min(float(want), max(1.0, self.depth / 4)) - self.tokens
        return max(0.0, need / self.rate)


@dataclass(slots=True)
class _End:
    label: str
    master: int
    path: str
    off: bool = True
    next_probe: float = 0.0
    mask: int = -1  # what the poller has registered; -1: not registered
    #: a stable name pointing at ``path`` (see ``NullModem.symlink``)
    link: str | None = None
    #: pulled (master closed, no pty) until this time; None: present
    pulled_until: float | None = None


@dataclass(slots=True)
class _Direction:
    label: str
    src: _End
    dst: _End
    faults: ByteFaults | None
    bucket: _Bucket | None
    limit: int
    pending: bytearray = field(default_factory=bytearray)
    #: the destination took less than offered: wait for the poller, not the clock
    blocked: bool = False
    counters: FaultCounters = field(default_factory=FaultCounters)


def _point(link: str, target: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing what is there atomically."""
    tmp = f"{link}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _open_end(label: str) -> _End:
    master, slave = os.openpty()
    try:
        tty.setraw(master)
        tty.setraw(slave)
        path = os.ttyname(slave)
    except BaseException:
        os.close(master)
        raise
    finally:
        # the null-modem holds no slave: "nobody has it open" must be visible
        os.close(slave)
    os.set_blocking(master, False)
    return _End(label, master, path)


class NullModem:
    """A virtual null-modem cable between two pty paths; a context manager.

    ::

        with NullModem(NullModemConfig(baud=115200, drop=0.01, seed=1)) as cable:
            a = open_serial(cable.path_a)
            b = open_serial(cable.path_b)
            cable.wait_until_open()  # bytes sent toward an end nobody has open are lost
            ...
            print(cable.statistics())

    The worker thread starts on entry and is joined on exit; its first error
    is raised from ``__exit__`` (or ``stop()``).
    """

    def __init__(self, config: NullModemConfig | None = None) -> None:
        self.config = config if config is not None else NullModemConfig()
        #: the seed of the fault generators (the configured one, or the one picked)
        self.seed = self.config.seed
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(2**32)
        self._lock = threading.Lock()
        self._stopping = False
        self._unplug_until = 0.0
        self._unplugs = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ends: tuple[_End, _End] | None = None
        self._dirs: tuple[_Direction, _Direction] | None = None
        self._wake_r = self._wake_w = -1
        #: pull and plug requests for the worker, by end label (None: plug now)
        self._pulls: dict[str, float | None] = {}

    # -- public ----------------------------------------------------------------

    @property
    def path_a(self) -> str:
        """The pty path of end A (open it like any serial port)."""
        return self._started()[0].path

    @property
    def path_b(self) -> str:
        """The pty path of end B."""
        return self._started()[1].path

    def start(self) -> None:
        """Create the ptys and start the worker thread."""
        if self._thread is not None:
            raise TransportError("this null-modem was already started; create a new one")
        try:
            a = _open_end("A")
        except OSError as exc:
            raise TransportError(f"cannot create a pty for the null-modem: {exc}") from exc
        try:
            b = _open_end("B")
        except OSError as exc:
            os.close(a.master)
            raise TransportError(f"cannot create a pty for the null-modem: {exc}") from exc
        self._ends = (a, b)
        self._dirs = (self._direction(a, b), self._direction(b, a))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="ira-nullmodem", daemon=True)
        self._thread.start()
        log.info("null-modem A=%s B=%s config=%s seed=%s", a.path, b.path, self.config, self.seed)

    def stop(self) -> None:
        """Stop the worker, close the ptys, and raise the worker's error if it failed."""
        thread = self._thread
        if thread is None or self._ends is None:
            return
        with self._lock:
            already = self._stopping
            self._stopping = True
        if not already:
            self._wake()
            thread.join()
            for end in self._ends:
                if end.master >= 0:
                    os.close(end.master)
                if end.link is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(end.link)
            os.close(self._wake_r)
            os.close(self._wake_w)
        error, self._error = self._error, None
        if error is not None:
            if isinstance(error, OSError):
                raise TransportError(f"null-modem failed: {error}") from error
            raise error

    def unplug(self, duration_s: float) -> None:
        """Silence both directions for ``duration_s`` seconds, as if the cable were pulled."""
        if not duration_s > 0:
            raise ConfigError(f"unplug duration must be positive, got {duration_s}")
        with self._lock:
            self._unplug_until = max(self._unplug_until, time.monotonic() + duration_s)
        self._wake()

    def symlink(self, end: str, path: str) -> None:
        """Keep ``path`` a symlink to the pty of ``end`` ("A" or "B"), across ``pull``s."""
        target = self._end(end)
        with self._lock:
            target.link = path
            if target.pulled_until is None:
                _point(path, target.path)

    def pull(self, end: str, duration_s: float | None = None) -> None:
        """Make the port of ``end`` go away (as a pulled USB adapter), for ``duration_s``
        seconds or until ``plug(end)``; returns once it is gone."""
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"pull duration must be positive, got {duration_s}")
        target = self._end(end)
        until = float("inf") if duration_s is None else time.monotonic() + duration_s
        with self._lock:
            self._pulls[target.label] = until
        self._wake()
        self._settle(lambda: target.pulled_until is not None, f"pulling end {target.label}")

    def plug(self, end: str) -> str:
        """Bring the port of a pulled ``end`` back (a new pty); returns its path."""
        target = self._end(end)
        with self._lock:
            self._pulls[target.label] = None
        self._wake()
        self._settle(lambda: target.pulled_until is None, f"plugging end {target.label}")
        return target.path

    def _end(self, end: str) -> _End:
        ends = self._started()
        for candidate in ends:
            if candidate.label == end.upper():
                return candidate
        raise ConfigError(f"a null-modem end is 'A' or 'B', not {end!r}")

    def _settle(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            with self._lock:
                if done() and not self._pulls:
                    return
            if self._thread is None or not self._thread.is_alive():
                raise TransportError(f"the null-modem is not running ({what})")
            if time.monotonic() >= deadline:
                raise TransportError(f"the null-modem did not finish {what} within 5 s")
            time.sleep(_PROBE_S / 4)

    def wait_until_open(self, timeout_s: float = 5.0) -> None:
        """Wait until the null-modem has seen both ends opened (bytes toward a closed end are lost).

        Raises ``TransportError`` when an end is still closed after ``timeout_s``.
        """
        ends = self._started()
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                closed = [end for end in ends if end.off]
            if not closed:
                return
            if self._thread is None or not self._thread.is_alive():
                raise TransportError("the null-modem is not running")
            if time.monotonic() >= deadline:
                names = ", ".join(f"{end.label} ({end.path})" for end in closed)
                raise TransportError(f"nobody opened null-modem end {names} within {timeout_s} s")
            time.sleep(_PROBE_S / 4)

    def statistics(self) -> NullModemStatistics:
        """Counters of both directions so far."""
        dirs = self._started_dirs()
        with self._lock:
            return NullModemStatistics(
                dirs[0].counters.snapshot(), dirs[1].counters.snapshot(), self._unplugs
            )

    def __enter__(self) -> NullModem:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._ends is None:
            return "<NullModem (not started)>"
        return f"<NullModem A={self._ends[0].path} B={self._ends[1].path}>"

    # -- set-up ----------------------------------------------------------------

    def _started(self) -> tuple[_End, _End]:
        if self._ends is None:
            raise TransportError("the null-modem is not started: use it as a context manager")
        return self._ends

    def _started_dirs(self) -> tuple[_Direction, _Direction]:
        if self._dirs is None:
            raise TransportError("the null-modem is not started: use it as a context manager")
        return self._dirs

    def _direction(self, src: _End, dst: _End) -> _Direction:
        label = f"{src.label}->{dst.label}"
        config = self.config
        assert self.seed is not None
        faults = ByteFaults(config.faults, self.seed, label) if config.faulty else None
        now = time.monotonic()
        if config.baud is None:
            return _Direction(label, src, dst, faults, None, _CHUNK_BYTES)
        bucket = _Bucket(config.baud / 10.0, now)
        limit = _THROTTLED_PENDING_BYTES + int(bucket.depth)
        return _Direction(label, src, dst, faults, bucket, limit)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already pending, or closing
            os.write(self._wake_w, b"\0")

    # -- the worker --------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the thread's boundary: handed to stop()
            log.debug("null-modem worker failed", exc_info=True)
            self._error = exc

    def _loop(self) -> None:
        ends = self._started()
        dirs = self._started_dirs()
        poller = select.poll()
        poller.register(self._wake_r, _POLLIN)
        config = self.config
        start = time.monotonic()
        next_scheduled = None if config.unplug_every_s is None else start + config.unplug_every_s
        was_unplugged = False
        for end in ends:
            end.off = self._hung_up(end.master)
            end.next_probe = start + _PROBE_S
        while True:
            now = time.monotonic()
            with self._lock:
                if self._stopping:
                    return
                if next_scheduled is not None and config.unplug_every_s is not None:
                    while next_scheduled <= now:
                        until = next_scheduled + config.unplug_for_s
                        self._unplug_until = max(self._unplug_until, until)
                        next_scheduled += config.unplug_every_s
                unplugged = now < self._unplug_until
                if unplugged and not was_unplugged:
                    self._unplugs += 1
                    for d in dirs:
                        d.counters.bytes_lost_unplugged += len(d.pending)
                        d.pending.clear()
                was_unplugged = unplugged
                self._pull_and_plug(poller, ends, dirs, now)
                for end in ends:
                    if end.pulled_until is not None:
                        continue
                    if end.off and now >= end.next_probe:
                        end.off = self._hung_up(end.master)
                        end.next_probe = now + _PROBE_S
                        if not end.off:
                            log.info("null-modem end %s (%s) opened", end.label, end.path)
                timeout = _IDLE_S
                for d in dirs:
                    timeout = min(timeout, self._pump(d, now, unplugged))
                for end in ends:
                    if end.pulled_until is not None:
                        timeout = min(timeout, max(0.0, end.pulled_until - now))
                    elif end.off:
                        timeout = min(timeout, max(0.0, end.next_probe - now))
                if unplugged:
                    timeout = min(timeout, self._unplug_until - now)
                if next_scheduled is not None:
                    timeout = min(timeout, next_scheduled - now)
            self._register(poller, dirs)
            events = poller.poll(max(0.0, timeout) * 1000.0)
            for fd, revents in events:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                for d in dirs:
                    if d.dst.master == fd and revents & _POLLOUT:
                        d.blocked = False
                    if d.src.master == fd and revents & (_POLLIN | _POLLHUP):
                        with self._lock:
                            self._read(d, hung_up=bool(revents & _POLLHUP))

    def _pull_and_plug(
        self,
        poller: select.poll,
        ends: tuple[_End, _End],
        dirs: tuple[_Direction, _Direction],
        now: float,
    ) -> None:
        """Carry out ``pull``/``plug`` requests and plug ends whose time came (lock held)."""
        for end in ends:
            request = self._pulls.pop(end.label, end.pulled_until)
            if request is not None and now < request:
                if end.pulled_until is None:
                    self._remove_port(poller, end, dirs)
                end.pulled_until = request
            elif end.pulled_until is not None:
                fresh = _open_end(end.label)
                end.master, end.path = fresh.master, fresh.path
                end.off, end.next_probe, end.mask = True, now + _PROBE_S, -1
                end.pulled_until = None
                if end.link is not None:
                    _point(end.link, end.path)
                log.info("null-modem end %s plugged back in as %s", end.label, end.path)

    def _remove_port(
        self, poller: select.poll, end: _End, dirs: tuple[_Direction, _Direction]
    ) -> None:
        """Close the end's master: its pty goes away, its opener reads EOF and gets EIO."""
        if end.mask != -1:
            poller.unregister(end.master)
            end.mask = -1
        os.close(end.master)
        end.master = -1
        end.off = True
        for d in dirs:
            if d.src is end or d.dst is end:
                d.counters.bytes_lost_board_off += len(d.pending)
                d.pending.clear()
                d.blocked = False
        if end.link is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(end.link)
        log.info("null-modem end %s (%s) pulled", end.label, end.path)

    def _register(self, poller: select.poll, dirs: tuple[_Direction, _Direction]) -> None:
        """Poll each end that is on for what its directions need (hang-ups always)."""
        masks: dict[int, int] = {}
        for d in dirs:
            if not d.src.off and len(d.pending) < d.limit:
                masks[d.src.master] = masks.get(d.src.master, 0) | _POLLIN
            if not d.dst.off and d.pending and (d.bucket is None or d.blocked):
                masks[d.dst.master] = masks.get(d.dst.master, 0) | _POLLOUT
        for end in (dirs[0].src, dirs[1].src):
            mask = -1 if end.off else masks.get(end.master, 0)
            if mask == end.mask:
                continue
            if mask == -1:
                poller.unregister(end.master)
            else:
                poller.register(end.master, mask)
            end.mask = mask

    @staticmethod
    def _hung_up(master: int) -> bool:
        probe = select.poll()
        probe.register(master, 0)
        return any(revents & select.POLLHUP for _, revents in probe.poll(0))

    def _read(self, d: _Direction, *, hung_up: bool) -> None:
        """Read what the source has (all of it when it hung up), then pump it on.

        While the destination takes everything, keep reading (up to a budget,
        so that the other direction gets its turn) instead of polling again.
        """
        for _ in range(_READS_PER_TURN):
            room = max(d.limit - len(d.pending), 0)
            if hung_up:
                room = _CHUNK_BYTES  # take what the closing end left behind
            if room == 0:
                return
            try:
                data = os.read(d.src.master, room)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                log.info("null-modem end %s (%s) closed", d.src.label, d.src.path)
                d.src.off = True
                d.src.next_probe = time.monotonic() + _PROBE_S
                return
            if not data:
                return
            d.counters.bytes_in += len(data)
            if d.faults is not None:
                data = d.faults.apply(data, d.counters)
            unplugged = time.monotonic() < self._unplug_until
            if not d.pending and d.bucket is None and not d.dst.off and not unplugged:
                # fast path: straight through when the destination takes it
                written = self._write(d, data)
                if written < len(data):
                    d.pending += data[written:]
                    if not hung_up:
                        return
            else:
                d.pending += data
                self._pump(d, time.monotonic(), unplugged)
                if not hung_up:
                    return

    def _pump(self, d: _Direction, now: float, unplugged: bool) -> float:
        """Move pending bytes to the sink; return how long until this direction needs a turn."""
        if not d.pending:
            return _IDLE_S
        allowed = len(d.pending)
        if d.bucket is not None:
            allowed = min(allowed, d.bucket.available(now))
        discarding = unplugged or d.dst.off
        if discarding:
            d.blocked = False
        if allowed > 0:
            if unplugged:
                d.counters.bytes_lost_unplugged += allowed
                del d.pending[:allowed]
                taken = allowed
            elif d.dst.off:
                d.counters.bytes_lost_board_off += allowed
                del d.pending[:allowed]
                taken = allowed
            else:
                chunk = d.pending if allowed == len(d.pending) else d.pending[:allowed]
                taken = self._write(d, chunk)
                del d.pending[:taken]
            if d.bucket is not None:
                d.bucket.tokens -= taken
        if not d.pending or d.blocked:
            return _IDLE_S  # nothing to do, or the poller reports when the destination takes more
        if d.bucket is None:
            return 0.0 if discarding else _IDLE_S
        return d.bucket.wait_s(len(d.pending))

    def _write(self, d: _Direction, data: bytes | bytearray) -> int:
        try:
            written = os.write(d.dst.master, data)
        except BlockingIOError:
            written = 0
        d.blocked = written < len(data)
        d.counters.bytes_out += written
        return written
