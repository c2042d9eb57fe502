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
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from ira.errors import IraError, LinkClosed, PortGone, RemoteProtocolError
from ira.link.config import VERSION_MAX_ENV, LinkConfig, parse_version_max
from ira.link.core import Link, LinkStatistics
from ira.link.events import (
    AuthRefused,
    Channel,
    HandshakeRefused,
    LinkDown,
    LinkEvent,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.link.refusals import SUMMARY_INTERVAL_S, RefusalSummary, refusal_totals
from ira.runtime.backlog import LinkBacklog
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
#: bytes offered to one write of a stream transport, between these bounds (see _flush)
MIN_WRITE_BYTES = 1 << 12
MAX_WRITE_BYTES = 1 << 16
#: a read of at least this many bytes is followed by another without ``select``
READ_AGAIN_BYTES = 1 << 10
#: most reads before the cores run (a busy line must not starve timers and writes)
READS_PER_TURN = 16
#: the loop leaves the port to a caller waiting for a reply, and for this long after,
#: looking at least this often whether it still does (see ``_await``)
READER_LINGER_S = 0.005


def counters_line(stats: LinkStatistics) -> str:
    """A link's frame and loss counters as ``name=value`` words, for the log line at
    stop (``bench/venet.py`` reads them from the log)."""
    srtt = "-" if stats.srtt_s is None else str(round(stats.srtt_s * 1000))
    return (
        f"frames_sent={stats.frames_sent} segments_sent={stats.segments_sent} "
        f"ack_frames_sent={stats.ack_frames_sent} "
        f"segments_retransmitted={stats.segments_retransmitted} "
        f"retransmission_timeouts={stats.retransmission_timeouts} "
        f"spurious_timeouts={stats.spurious_timeouts} "
        f"tail_probes={stats.tail_probes} tail_copies={stats.tail_copies} "
        f"drop_duplicate={stats.drop_duplicate} srtt_ms={srtt}"
    )


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
        self.core = Link(cfg, rng=rng or random.Random(), now=now)
        #: what the core holds unacknowledged, for devices that pace themselves by it
        self.backlog = LinkBacklog(self.core)
        self.upper = upper
        self._on_event = on_event
        self._on_upper_event = on_upper_event
        #: link events for callers that read them (when neither an upper core nor
        #: ``on_event`` consumes them)
        self.events: queue.SimpleQueue[LinkEvent] = queue.SimpleQueue()
        #: sends (payload, channel) and calls, in the order they were made
        self._inbox: deque[tuple[bytes, Channel] | Callable[[], None]] = deque()
        #: wakes the loop when it sleeps in select (see _wake)
        self._bell = Doorbell()
        #: held by whichever thread runs the cores: the loop, or a caller that found it asleep
        self._owner = threading.Lock()
        #: when the sleeping loop will wake up at the latest (see _run_inline)
        self._sleep_deadline: float | None = None
        #: held by the one caller that watches the port for a reply itself (see _await)
        self._watcher = threading.Lock()
        #: when a caller last watched the port
        self._watched_at = -1e9
        self._next_deadline: float | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._rx: deque[bytes] = deque()
        self._out: deque[bytes] = deque()
        self._out_offset = 0
        self._write_bytes = MAX_WRITE_BYTES
        self._refusals = RefusalSummary(self.name, now=now, interval_s=refusal_summary_s)
        #: HELLO refusals already logged one by one (the rest go into the summary)
        self._refusals_logged: set[tuple[bool, int]] = set()

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
        self._inbox.append(item)
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
        deadline = self._turn(now)
        sleeping = self._sleep_deadline
        if (
            self._out
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
                self._read(now)  # more, if any, at the caller's next look
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

    def _lose(self, transport: Transport, exc: PortGone) -> None:
        """``transport`` went away (any thread): the loop closes it and reopens the port
        (without an opener the runtime stops with ``exc``)."""
        if self._ports.lose(transport, exc):
            self._bell.ring(always=True)

    def _close_lost(self, now: float) -> None:
        """On the loop thread: close the transport that went away, report the link down."""
        self._ports.close_lost(now)
        self._out.clear()
        self._out_offset = 0
        self._rx.clear()
        self.core.transport_lost(now=now)

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
                deadline = self._turn(now)
                if self._current() is not None:
                    return
                bell.arm()
                if self._inbox or stop.is_set():
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
                self._lose(transport, exc)
                continue
            except LinkClosed:
                if self._current() is not transport or self._stop.is_set():
                    continue  # closed by the loop (a lost port) or by stop()
                raise
            if data:
                self._rx.append(data)
                self._wake()

    def _loop(self) -> None:
        """The loop over an open port (``_run_loop``) or while it is gone (``_run_absent``)."""
        owner = self._owner
        owner.acquire()
        try:
            while not self._stop.is_set():
                if self._is_lost():
                    self._close_lost(time.monotonic())
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
        core = self.core
        inbox, rx = self._inbox, self._rx
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
            fresh = wrote_chunk or (fd is None and bool(self._out))
            wrote_chunk = False
            if readable:
                got, readable = self._read(now)
                fresh = fresh or got
            if fresh or inbox or rx or deadline is None or deadline <= now:
                while rx:
                    core.receive_data(rx.popleft(), now=now)
                deadline = self._turn(now)
                if readable:
                    continue
            # sleep, unless work arrived meanwhile (see Doorbell)
            bell.arm()
            if inbox or rx or stop.is_set() or self._is_lost():
                bell.disarm()
                continue
            if fd is None and self._out:
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
                ready_r, ready_w, _ = select.select(watch, wlist if self._out else (), (), wait)
            finally:
                owner.acquire()
            bell.disarm()
            deadline = self._next_deadline
            if ready_r and ready_r[0] == wake_r:
                bell.drain()
                readable = len(ready_r) > 1
            else:
                readable = bool(ready_r)
            wrote_chunk = self._flush() if ready_w else False

    def _read(self, now: float) -> tuple[bool, bool]:
        """Up to ``READS_PER_TURN`` reads into the core: (anything came, the port may
        hold more — the last read was big)."""
        transport, core = self.transport, self.core
        if transport is None or self._is_lost():
            return False, False
        got = False
        for _ in range(READS_PER_TURN):
            try:
                data = transport.recv(0)
            except PortGone as exc:
                self._lose(transport, exc)
                return got, False
            if data:
                core.receive_data(data, now=now)
                got = True
            if len(data) < READ_AGAIN_BYTES:
                return got, False
        return got, True

    def _deadline(self) -> float | None:
        deadline = self.core.next_deadline()
        if self.upper is not None:
            upper = self.upper.next_deadline()
            if upper is not None and (deadline is None or upper < deadline):
                return upper
        return deadline

    def _turn(self, now: float) -> float | None:
        """Run sends, calls, timers and events, write what is due; return the next deadline."""
        core = self.core
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            if isinstance(item, tuple):
                core.send_message(item[0], item[1])
                self.backlog.handed(len(item[0]))
            else:
                item()
        upper = self.upper
        deadline = self._next_deadline
        if deadline is not None and deadline <= now:
            due = core.next_deadline()
            if due is not None and due <= now:
                core.handle_timeout(now=now)
            if upper is not None:
                due = upper.next_deadline()
                if due is not None and due <= now:
                    upper.handle_timeout(now=now)
        ports = self._ports
        if ports.pending_events:
            ports.report_events()
        if now >= self._refusals.due:
            self._summarize_refusals(now)
        # events for callers go out after this turn's writes: the waiting thread
        # then finds the GIL free sooner
        ready: list[LinkEvent] = []
        on_event = self._on_event
        while (event := core.next_event()) is not None:
            if type(event) is not MessageReceived:
                self._log_event(event)
            if upper is not None:
                try:
                    upper.handle_link_event(event, now=now)
                except RemoteProtocolError as exc:
                    # the peer broke the protocol above the link: the session
                    # cannot be trusted any more; reset it (never stop for it)
                    self._log.warning("resetting the session: %s", exc)
                    core.reset_session(str(exc), now=now)
            if on_event is not None:
                on_event(event)
            elif upper is None:
                ready.append(event)
        if upper is not None:
            if self._on_upper_event is not None:
                while (upper_event := upper.next_event()) is not None:
                    self._on_upper_event(upper_event)
            backlog = self.backlog
            backlog.poll()  # acknowledgements may let a paced device send more
            for channel, message in upper.messages_to_send():
                core.send_message(message, channel)
                backlog.handed(len(message))
        out = self._out
        if out and ports.fd is None:
            self._flush()  # no descriptor to wait on: try again each turn
        if self._current() is None or self._is_lost():
            # the port is gone: what the core sends meanwhile is lost, as on a dead line
            # (in DOWN the sender is paused: only probes and HELLOs go, and they return)
            core.data_to_send(now=now)
            self._next_deadline = deadline = self._deadline()
        elif len(out) <= 1:
            # at most one chunk waits behind the one being written: the line never
            # runs dry between batches, and frames are cut only shortly before they
            # can go out (control messages overtake bulk data not yet cut)
            chunks = core.data_to_send(now=now)
            # the bookkeeping before the write: once the peer has its frame, this
            # thread competes with the peer's threads for the interpreter lock
            self._next_deadline = deadline = self._deadline()
            if chunks:
                out.extend(chunks)
                self._flush()
        else:
            self._next_deadline = deadline = self._deadline()
        if ready:
            put = self.events.put
            for event in ready:
                put(event)
        return deadline

    def _flush(self) -> bool:
        """Write as much of the output as the transport takes now.

        Returns True when at least one chunk (one packet) went out completely.
        """
        transport = self.transport
        if transport is None or self._is_lost():
            return False
        try:
            return self._write(transport)
        except PortGone as exc:
            self._lose(transport, exc)
            return False

    def _write(self, transport: Transport) -> bool:
        out = self._out
        timeout = 0.0 if self._ports.fd is not None else 0.1
        done = False
        if transport.packet:
            while out:
                if transport.send(out[0], timeout) == 0:
                    break
                out.popleft()
                done = True
            return done
        while out:
            head = out[0]
            offset = self._out_offset
            size = self._write_bytes
            piece = head if offset == 0 and len(head) <= size else head[offset : offset + size]
            n = transport.send(piece, timeout)
            if n == 0:
                break
            # offer about twice what the transport took last time: a pty takes a few
            # KiB, a socket more; copying much more than that into each offered
            # slice would cost more than the write
            if n < len(piece):
                self._write_bytes = max(MIN_WRITE_BYTES, 2 * n)
            elif len(piece) == size:
                self._write_bytes = min(MAX_WRITE_BYTES, 2 * size)
            offset += n
            if offset >= len(head):
                out.popleft()
                offset = 0
                done = True
            self._out_offset = offset
        return done

    def _summarize_refusals(self, now: float) -> None:
        link = dataclasses.asdict(self.core.statistics())
        upper = self.upper.statistics().as_dict() if self.upper is not None else None
        line = self._refusals.report(refusal_totals(link, upper), now=now)
        if line is not None:
            self._log.warning("%s", line)

    def _log_event(self, event: LinkEvent) -> None:
        match event:
            case SessionStarted():
                self._log.info("session up (peer epoch %016x)", event.peer_epoch)
            case PeerRestarted():
                self._log.info(
                    "peer restarted; %d unacknowledged messages discarded",
                    event.discarded_messages,
                )
            case LinkDown():
                self._log.info("link down: nothing heard for %.1f s", event.silent_s)
            case LinkUp():
                self._log.info("link up again after %.1f s; session resumed", event.down_s)
            case SessionLost():
                self._log.info("session lost (%s); offering a new one", event.reason)
            case HandshakeRefused():
                # each kind once at WARNING; repeats are in the refusal summary
                key = (event.by_peer, event.reason)
                if key not in self._refusals_logged:
                    self._refusals_logged.add(key)
                    self._log.warning("handshake refused: %s", event.detail)
            case AuthRefused():
                self._log.warning(
                    "refused %d frames (pre-shared key): %s", event.refused, event.reason
                )
            case _:
                pass
