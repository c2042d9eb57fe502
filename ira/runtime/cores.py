"""The cores of one link runtime and what one turn does with them.

``Cores`` holds the link core, the upper core (if any), what waits for them (sends
and calls in order, bytes read) and what they wrote (chunks of output).  A
``turn`` runs what is queued, the timers that are due and the events, and writes
what the transport takes; ``read`` feeds the link core from the port.  It has no
thread or lock of its own: whoever holds the runtime's owner lock (``LinkRuntime``:
the loop, or a caller that found it asleep) calls it.  Its log lines (link events,
the refusal summary) go to the runtime's log.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections import deque
from collections.abc import Callable

from ira.errors import PortGone, RemoteProtocolError
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
from ira.link.refusals import RefusalSummary, refusal_totals
from ira.runtime.backlog import LinkBacklog
from ira.runtime.plumbing import Doorbell, Upper
from ira.runtime.portkeeper import PortKeeper
from ira.transports.base import Transport

#: bytes offered to one write of a stream transport, between these bounds (see flush)
MIN_WRITE_BYTES = 1 << 12
MAX_WRITE_BYTES = 1 << 16
#: a read of at least this many bytes is followed by another without ``select``
READ_AGAIN_BYTES = 1 << 10
#: most reads before the cores run (a busy line must not starve timers and writes)
READS_PER_TURN = 16


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


class Cores:
    """The link core and the core above it, fed and drained one turn at a time.

    Called only by the thread that holds the runtime's owner lock, except
    ``inbox`` and ``rx``, which other threads append to (then wake the loop).
    """

    def __init__(
        self,
        core: Link,
        upper: Upper | None,
        ports: PortKeeper,
        *,
        bell: Doorbell,
        log: logging.LoggerAdapter[logging.Logger],
        refusals: RefusalSummary,
        on_event: Callable[[LinkEvent], None] | None,
        on_upper_event: Callable[[object], None] | None,
    ) -> None:
        self.core = core
        self.upper = upper
        #: what the core holds unacknowledged, for devices that pace themselves by it
        self.backlog = LinkBacklog(core)
        self._ports = ports
        self._bell = bell
        self._log = log
        self._on_event = on_event
        self._on_upper_event = on_upper_event
        #: link events for callers that read them (when neither an upper core nor
        #: ``on_event`` consumes them)
        self.events: queue.SimpleQueue[LinkEvent] = queue.SimpleQueue()
        #: sends (payload, channel) and calls, in the order they were made
        self.inbox: deque[tuple[bytes, Channel] | Callable[[], None]] = deque()
        #: bytes read by a thread that does not run the cores (the reader thread)
        self.rx: deque[bytes] = deque()
        #: chunks of output the transport has not taken yet (the head maybe in part)
        self.out: deque[bytes] = deque()
        self._out_offset = 0
        self._write_bytes = MAX_WRITE_BYTES
        #: the cores' next deadline, as the last turn left it
        self.next_deadline: float | None = None
        self._refusals = refusals
        #: HELLO refusals already logged one by one (the rest go into the summary)
        self._refusals_logged: set[tuple[bool, int]] = set()

    def lose(self, transport: Transport, exc: PortGone) -> None:
        """``transport`` went away (any thread): the loop closes it and reopens the port
        (without an opener the runtime stops with ``exc``)."""
        if self._ports.lose(transport, exc):
            self._bell.ring(always=True)

    def close_lost(self, now: float) -> None:
        """On the loop thread: close the transport that went away, report the link down;
        what was read or waits to be written for it is dropped."""
        self._ports.close_lost(now)
        self.out.clear()
        self._out_offset = 0
        self.rx.clear()
        self.core.transport_lost(now=now)

    def read(self, now: float) -> tuple[bool, bool]:
        """Up to ``READS_PER_TURN`` reads into the core: (anything came, the port may
        hold more — the last read was big)."""
        transport, core = self._ports.transport, self.core
        if transport is None or self._ports.is_lost():
            return False, False
        got = False
        for _ in range(READS_PER_TURN):
            try:
                data = transport.recv(0)
            except PortGone as exc:
                self.lose(transport, exc)
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

    def turn(self, now: float) -> float | None:
        """Run sends, calls, timers and events, write what is due; return the next deadline."""
        core = self.core
        inbox = self.inbox
        while inbox:
            item = inbox.popleft()
            if isinstance(item, tuple):
                core.send_message(item[0], item[1])
                self.backlog.handed(len(item[0]))
            else:
                item()
        upper = self.upper
        deadline = self.next_deadline
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
        out = self.out
        if out and ports.fd is None:
            self.flush()  # no descriptor to wait on: try again each turn
        if ports.current() is None or ports.is_lost():
            # the port is gone: what the core sends meanwhile is lost, as on a dead line
            # (in DOWN the sender is paused: only probes and HELLOs go, and they return)
            core.data_to_send(now=now)
            self.next_deadline = deadline = self._deadline()
        elif len(out) <= 1:
            # at most one chunk waits behind the one being written: the line never
            # runs dry between batches, and frames are cut only shortly before they
            # can go out (control messages overtake bulk data not yet cut)
            chunks = core.data_to_send(now=now)
            # the bookkeeping before the write: once the peer has its frame, this
            # thread competes with the peer's threads for the interpreter lock
            self.next_deadline = deadline = self._deadline()
            if chunks:
                out.extend(chunks)
                self.flush()
        else:
            self.next_deadline = deadline = self._deadline()
        if ready:
            put = self.events.put
            for event in ready:
                put(event)
        return deadline

    def flush(self) -> bool:
        """Write as much of the output as the transport takes now.

        Returns True when at least one chunk (one packet) went out completely.
        """
        transport = self._ports.transport
        if transport is None or self._ports.is_lost():
            return False
        try:
            return self._write(transport)
        except PortGone as exc:
            self.lose(transport, exc)
            return False

    def _write(self, transport: Transport) -> bool:
        out = self.out
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
