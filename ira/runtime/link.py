"""The runtime: drives one link core (and optionally the layer above it) over a transport.

One thread at a time runs the protocol state: the link core and, when given,
an *upper* core (the bus connector or bus) that consumes link events and
produces messages.  That thread holds the runtime's owner lock: the loop
thread, except while it sleeps in ``select``.  Other threads talk to the
cores only through ``send``, ``post`` and ``call`` (run a function with the
cores and wait for its result) and the event queue, so the cores need no
locks of their own.  With ``on_upper_event`` the loop drains the upper core's
own events (``next_event()``) into that callback before it sends the upper
core's messages; without it they stay in the core.  With ``on_event`` link
events go to that callback instead of the queue.

Selectable transports are served by one ``select`` loop: read when readable,
write when writable (never blocking on a write while the peer waits for us to
read), wake for the core's next deadline.  Transports without a descriptor get
a reader thread that only hands bytes over.

The loop is built for a Python process where every thread shares one
interpreter lock, and where handing work from one thread to another costs as
much as the work: ``send`` and ``post`` append to one queue (in call order);
a caller that finds the loop asleep takes the owner lock and runs the turn
itself — the message is on the wire before ``send`` returns, and the loop is
woken only if it must keep an earlier deadline or write what the transport
did not take — otherwise the loop is woken through its pipe if it sleeps.
The other way round, a caller waiting for a reply (``next_event``, ``wait``)
watches the port itself and reads the reply on its own thread; meanwhile,
and for ``READER_LINGER_S`` after, the loop leaves the port alone.
What a read brought is answered (ACKs, replies, events) in the same turn; a
big read is followed by another before ``select`` is asked; the cores run only
when something may have changed for them; and at most one chunk of output
waits behind the one being written, so a batch of frames is cut only shortly
before it can go out.  Callbacks (``on_event``, ``on_upper_event``, ``post``ed
functions) therefore run on the loop thread or on a calling thread, never two
at once; they must not wait for the runtime (``call`` from a callback would
wait for itself).

The runtime is a context manager: threads start on entry and are joined on
exit, and the first worker exception is re-raised to the caller.

This module holds the threads: who runs a turn and when (the loop, a caller),
and how the loop sleeps.  What a turn does with the cores is ``Cores``
(``ira.runtime.cores``); the port as it goes and comes back is ``PortKeeper``
(``ira.runtime.portkeeper``); the upper core's interface, ``Completion`` and
``Doorbell`` are in ``ira.runtime.plumbing`` (all re-exported here).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from ira.errors import IraError, LinkClosed, PortGone
from ira.link.config import VERSION_MAX_ENV, LinkConfig, parse_version_max
from ira.link.core import Link, LinkStatistics
from ira.link.events import Channel, LinkEvent
from ira.link.refusals import SUMMARY_INTERVAL_S, RefusalSummary
from ira.runtime.cores import Cores, counters_line
from ira.runtime.plumbing import Completion, Doorbell, Upper, UpperStatistics
from ira.runtime.port import PortEvent, PortState, TransportOpener
from ira.runtime.portkeeper import PortKeeper
from ira.transports import packet_scheme
from ira.transports.base import Transport

__all__ = [
    "Completion",
    "Doorbell",
    "LinkRuntime",
    "Upper",
    "UpperStatistics",
    "counters_line",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the loop wakes at least this often even with no deadline (to notice stop requests)
MAX_WAIT_S = 0.5
#: the loop leaves the port to a caller waiting for a reply, and for this long after,
#: looking at least this often whether it still does (see ``_await``)
READER_LINGER_S = 0.005


class LinkRuntime:
    """Runs a ``Link`` over a ``Transport`` in a background thread.

    Given a ``TransportOpener`` the runtime reopens the transport when it goes
    away (``PortGone``) and waits for it when it is not there yet; given an open
    ``Transport`` it stops when that goes away.
    """

    def __init__(
        self,
        transport: Transport | TransportOpener,
        config: LinkConfig | None = None,
        *,
        upper: Upper | None = None,
        rng: random.Random | None = None,
        on_event: Callable[[LinkEvent], None] | None = None,
        on_upper_event: Callable[[object], None] | None = None,
        on_port_event: Callable[[PortEvent], None] | None = None,
        give_up_after_s: float | None = None,
        refusal_summary_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        """``on_port_event``: told when the port goes, is waited for, or is back (on
        the thread that runs the cores); ``give_up_after_s``: stop with an error when
        the port stayed away this long (default: reopen forever); ``refusal_summary_s``:
        at most one WARNING line about refused input this often (``RefusalSummary``).
        ``IRA_LINK_VERSION_MAX`` in the environment caps the link protocol version
        offered (checked before the port is opened)."""
        cap_text = os.environ.get(VERSION_MAX_ENV, "")
        version_cap = parse_version_max(cap_text) if cap_text else None
        now = time.monotonic()
        self.name = transport.name
        self._log = logging.LoggerAdapter(log, {"link": self.name})
        #: the open transport, or the way to open it again
        self._ports = ports = PortKeeper(
            transport,
            log=self._log,
            on_port_event=on_port_event,
            give_up_after_s=give_up_after_s,
            now=now,
        )
        first = ports.transport
        # a port waited for from the start: its scheme says how frames travel
        packet = packet_scheme(self.name) if first is None else first.packet
        cfg = config or LinkConfig(packet=packet)
        if version_cap is not None and version_cap < cfg.version_max:
            cfg = dataclasses.replace(cfg, version_max=version_cap)
        if cfg.packet != packet and cfg.psk is not None:
            # a key (--psk-file, a profile's) says nothing of framing: the transport's
            cfg = dataclasses.replace(cfg, packet=packet)
        ports.adopt(cfg)
        #: wakes the loop when it sleeps in select (see _wake)
        self._bell = Doorbell()
        self._cores = cores = Cores(
            Link(cfg, rng=rng or random.Random(), now=now),
            upper,
            ports,
            bell=self._bell,
            log=self._log,
            refusals=RefusalSummary(self.name, now=now, interval_s=refusal_summary_s),
            on_event=on_event,
            on_upper_event=on_upper_event,
        )
        self.core = cores.core
        #: what the core holds unacknowledged, for devices that pace themselves by it
        self.backlog = cores.backlog
        self.upper = upper
        #: link events for callers that read them (when neither an upper core nor
        #: ``on_event`` consumes them)
        self.events = cores.events
        #: held by whichever thread runs the cores: the loop, or a caller that found it asleep
        self._owner = threading.Lock()
        #: when the sleeping loop will wake up at the latest (see _run_inline)
        self._sleep_deadline: float | None = None
        #: held by the one caller that watches the port for a reply itself (see _await)
        self._watcher = threading.Lock()
        #: when a caller last watched the port
        self._watched_at = -1e9
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> PortState:
        """Whether the transport is open now, since when, and why not (any thread)."""
        return self._ports.state

    @property
    def transport(self) -> Transport | None:
        """The open transport (None while the port is gone or waited for)."""
        return self._ports.transport

    # --- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> LinkRuntime:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._error is not None and exc is None:
            raise self._error

    def start(self) -> None:
        loop = threading.Thread(target=self._guard(self._loop), name=f"ira-link {self.name}")
        self._threads.append(loop)
        if self.transport is None or self._ports.fd is None:
            # transports without a descriptor get a reader thread (a reopened one may too)
            reader = threading.Thread(target=self._guard(self._reader), name=f"ira-rx {self.name}")
            self._threads.append(reader)
        for t in self._threads:
            t.daemon = True
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._bell.ring(always=True)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self._threads.clear()
        self._log.info(
            "link counters at stop (%s): %s", self.name, counters_line(self.core.statistics())
        )
        self._ports.close()
        self._bell.close()

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the loop, if any."""
        return self._error

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # the runtime boundary: re-raised in the caller
                self._fail(exc)

        return run

    def _fail(self, exc: BaseException) -> None:
        """The cores raised: the runtime stops, and ``exc`` is what its users see."""
        if self._error is None:
            self._error = exc
        self._stop.set()
        self._bell.ring(always=True)

    # --- calls from other threads ---------------------------------------------------

    def _wake(self) -> None:
        """Wake the loop if it sleeps (or is about to) in ``select`` (see ``Doorbell``)."""
        self._bell.ring()

    def _check_running(self) -> None:
        if self._stop.is_set():
            self.raise_if_failed()
            raise LinkClosed(f"{self.name}: the link runtime is stopped")

    def _submit(self, item: tuple[bytes, Channel] | Callable[[], None]) -> None:
        self._cores.inbox.append(item)
        if self._bell.armed and self._owner.acquire(blocking=False):
            try:
                self._run_inline()
            except BaseException as exc:  # as on the loop thread: the runtime stops
                self._fail(exc)
                raise
            finally:
                self._owner.release()
        else:
            self._wake()

    def _run_inline(self) -> None:
        """Run a turn on the calling thread while the loop sleeps in ``select``.

        The loop is woken only when it must do something the turn left to it:
        write output the transport did not take, or keep a deadline earlier
        than the one it sleeps toward.
        """
        if self._stop.is_set() or not self._bell.armed:
            self._wake()
            return
        self._caller_turn(time.monotonic())

    def _caller_turn(self, now: float) -> None:
        """A turn on a calling thread while the loop sleeps; wake the loop only for
        output the transport did not take, a deadline before it looks again, or a
        port that went away."""
        deadline = self._cores.turn(now)
        sleeping = self._sleep_deadline
        if (
            self._cores.out
            or self._is_lost()
            or (deadline is not None and (sleeping is None or deadline < sleeping))
        ):
            self._wake()

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` with the cores soon: on the loop thread, or on this one if the loop sleeps."""
        self._check_running()
        self._submit(fn)

    def call(self, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run ``fn`` on the loop thread and return its result."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except IraError as exc:
                future.set_exception(exc)

        self.post(run)
        return future.result(timeout=timeout_s)

    def send(self, payload: bytes, channel: Channel = Channel.CONTROL) -> None:
        """Queue a message to the peer (thread-safe; in order with ``post``)."""
        self._check_running()
        self._submit((payload, channel))

    def statistics(self) -> LinkStatistics:
        return self.call(self.core.statistics)

    def next_event(self, timeout_s: float | None = None) -> LinkEvent | None:
        """The next link event (when no upper core consumes them), or None on timeout."""
        events = self.events
        if events.empty():
            timeout_s = self._await(lambda: not events.empty(), timeout_s)
        try:
            event = events.get(timeout=timeout_s)
        except queue.Empty:
            return None
        self.raise_if_failed()
        return event

    def wait(self, future: Future[T] | Completion[T], timeout_s: float | None = None) -> T:
        """``future.result(timeout_s)`` for an outcome the cores complete (a reply)."""
        if not future.done():
            timeout_s = self._await(future.done, timeout_s)
        return future.result(timeout=timeout_s)

    def _await(self, done: Callable[[], bool], timeout_s: float | None) -> float | None:
        """Wait until ``done()``, reading the port on this thread; returns the time left.

        A reply is read by the thread that waits for it, not handed over by the
        loop thread (in a Python process that hand-off costs about as much as
        the protocol work).  One caller at a time watches the port; while it
        does, and for ``READER_LINGER_S`` after, the loop watches only its
        wake-up pipe and its deadlines.  Returns at once, without waiting, when
        another caller watches, the transport has no descriptor or is gone.
        """
        transport, fd = self.transport, self._ports.fd
        if transport is None or fd is None or not self._watcher.acquire(blocking=False):
            return timeout_s
        end = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while not done() and not self._stop.is_set() and self._current() is transport:
                wait = READER_LINGER_S
                if end is not None:
                    wait = min(wait, end - time.monotonic())
                    if wait <= 0:
                        break
                try:
                    readable, _, _ = select.select([fd], (), (), wait)
                except (OSError, ValueError):  # closed by stop() or a lost port meanwhile
                    break
                if readable:
                    self._read_here(transport)
        finally:
            self._watched_at = time.monotonic()
            self._watcher.release()
        return None if end is None else max(0.0, end - time.monotonic())

    def _read_here(self, transport: Transport) -> None:
        """What the loop does when the port is readable, on the calling thread."""
        with self._owner:
            if self._stop.is_set() or self._current() is not transport:
                return
            try:
                now = time.monotonic()
                self._cores.read(now)  # more, if any, at the caller's next look
                self._caller_turn(now)
            except BaseException as exc:  # as on the loop thread: the runtime stops
                self._fail(exc)
                raise

    # --- a port that comes and goes ---------------------------------------------------

    def _is_lost(self) -> bool:
        """The transport went away and the loop has not closed it yet."""
        return self._ports.is_lost()

    def _current(self) -> Transport | None:
        """The open transport, or None while the port is away."""
        return self._ports.current()

    def _run_absent(self) -> None:
        """The loop while the port is gone: timers and calls go on, the port is reopened
        with a backoff (``REOPEN_FIRST_S`` doubling to ``REOPEN_MAX_S``), or at once
        when the opener's watch says it is back (``HotplugHints``)."""
        stop, bell, owner, ports = self._stop, self._bell, self._owner, self._ports
        hints = ports.open_hints(time.monotonic())
        hint_fd = hints.fd
        try:
            while not stop.is_set() and self._current() is None:
                now = time.monotonic()
                ports.look(hints, now)
                deadline = self._cores.turn(now)
                if self._current() is not None:
                    return
                bell.arm()
                if self._cores.inbox or stop.is_set():
                    bell.disarm()
                    continue
                wait = min(
                    MAX_WAIT_S, max(0.0, ports.reopen_at - now), max(0.0, hints.poll_at - now)
                )
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
                self._sleep_deadline = now + wait
                rlist = [bell.fileno()] if hint_fd is None else [bell.fileno(), hint_fd]
                owner.release()
                try:
                    ready, _, _ = select.select(rlist, (), (), wait)
                finally:
                    owner.acquire()
                bell.disarm()
                bell.drain()
                hints.hinted = hint_fd is not None and hint_fd in ready
        finally:
            hints.close()

    # --- the loop -----------------------------------------------------------------------

    def _reader(self) -> None:
        """Reads transports without a descriptor (the loop reads the others)."""
        while not self._stop.is_set():
            transport = self.transport
            if transport is None or self._ports.fd is not None or self._is_lost():
                self._stop.wait(0.05)
                continue
            try:
                data = transport.recv(0.1)
            except PortGone as exc:
                self._cores.lose(transport, exc)
                continue
            except LinkClosed:
                if self._current() is not transport or self._stop.is_set():
                    continue  # closed by the loop (a lost port) or by stop()
                raise
            if data:
                self._cores.rx.append(data)
                self._wake()

    def _loop(self) -> None:
        """The loop over an open port (``_run_loop``) or while it is gone (``_run_absent``)."""
        owner = self._owner
        owner.acquire()
        try:
            while not self._stop.is_set():
                if self._is_lost():
                    self._cores.close_lost(time.monotonic())
                if self._current() is None:
                    self._run_absent()
                    continue
                fd = self._ports.fd
                wake_r = self._bell.fileno()
                rlist = [wake_r] if fd is None else [wake_r, fd]
                wlist = [] if fd is None else [fd]
                self._run_loop(fd, rlist, wlist)
        finally:
            owner.release()

    def _run_loop(self, fd: int | None, rlist: list[int], wlist: list[int]) -> None:
        """One turn: read, run the cores, write; sleep in ``select`` only when idle.

        What the reads of a turn brought is answered (ACKs, replies) in that turn.
        A big read is followed by another at once, without asking ``select``: on a
        busy line more has usually arrived, and a read that finds nothing costs
        less than a ``select``.  The cores run only when something may have
        changed for them: bytes arrived, a call or a timer is due, or a chunk of
        output was written out (room for the next).  Returns when the runtime
        stops or the port went away.
        """
        stop = self._stop
        cores = self._cores
        core = cores.core
        inbox, rx, out = cores.inbox, cores.rx, cores.out
        bell = self._bell
        wake_r = bell.fileno()
        owner = self._owner
        readable = False
        wrote_chunk = False
        deadline: float | None = None
        while not stop.is_set():
            if self._is_lost():
                return
            now = time.monotonic()
            # a chunk went out (room for the next), or output waits on a transport
            # that has no descriptor to wait on (the turn's flush waits a little)
            fresh = wrote_chunk or (fd is None and bool(out))
            wrote_chunk = False
            if readable:
                got, readable = cores.read(now)
                fresh = fresh or got
            if fresh or inbox or rx or deadline is None or deadline <= now:
                while rx:
                    core.receive_data(rx.popleft(), now=now)
                deadline = cores.turn(now)
                if readable:
                    continue
            # sleep, unless work arrived meanwhile (see Doorbell)
            bell.arm()
            if inbox or rx or stop.is_set() or self._is_lost():
                bell.disarm()
                continue
            if fd is None and out:
                wait = 0.0  # the turn's flush waits for room itself
            elif deadline is None:
                wait = MAX_WAIT_S
            else:
                wait = min(MAX_WAIT_S, max(0.0, deadline - now))
            watch = rlist
            if fd is not None and (
                self._watcher.locked() or now - self._watched_at < READER_LINGER_S
            ):
                watch = rlist[:1]  # a caller reads the port (see _await)
                wait = min(wait, READER_LINGER_S)
            self._sleep_deadline = now + wait  # when it will look again, whatever for
            owner.release()
            try:
                ready_r, ready_w, _ = select.select(watch, wlist if out else (), (), wait)
            finally:
                owner.acquire()
            bell.disarm()
            deadline = cores.next_deadline
            if ready_r and ready_r[0] == wake_r:
                bell.drain()
                readable = len(ready_r) > 1
            else:
                readable = bool(ready_r)
            wrote_chunk = cores.flush() if ready_w else False
