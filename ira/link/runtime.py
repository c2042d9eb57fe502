"""The runtime: drives one link core (and optionally the layer above it) over a transport.

One thread owns all protocol state: the link core and, when given, an *upper*
core (the bus connector or bus) that consumes link events and produces
messages.  Other threads talk to it only through ``call`` (run a function on
the loop thread and wait for its result), ``send`` and the event queue, so the
cores need no locks.  With ``on_upper_event`` the loop drains the upper core's
own events (``next_event()``) into that callback, on the loop thread, before
it sends the upper core's messages; without it they stay in the core.

Selectable transports are served by one ``select`` loop: read when readable,
write when writable (never blocking on a write while the peer waits for us to
read), wake for the core's next deadline.  Transports without a descriptor get
a reader thread that only hands bytes over.

The runtime is a context manager: threads start on entry and are joined on
exit, and the first worker exception is re-raised to the caller.
"""

from __future__ import annotations

import contextlib
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
from typing import Protocol, TypeVar

from ira.errors import IraError, LinkClosed, TransportError
from ira.link.config import LinkConfig
from ira.link.core import Link, LinkStatistics
from ira.link.events import (
    Channel,
    LinkDown,
    LinkEvent,
    LinkUp,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.link.transport import Transport

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the loop wakes at least this often even with no deadline (to notice stop requests)
MAX_WAIT_S = 0.5
#: largest single read
READ_BYTES = 1 << 16


class Upper(Protocol):
    """A sans-I/O core above the link, driven on the loop thread."""

    def handle_link_event(self, event: LinkEvent, *, now: float) -> None: ...

    def messages_to_send(self) -> list[tuple[Channel, bytes]]: ...

    def next_deadline(self) -> float | None: ...

    def handle_timeout(self, *, now: float) -> None: ...

    def next_event(self) -> object | None: ...


class LinkRuntime:
    """Runs a ``Link`` over a ``Transport`` in a background thread."""

    def __init__(
        self,
        transport: Transport,
        config: LinkConfig | None = None,
        *,
        upper: Upper | None = None,
        rng: random.Random | None = None,
        on_event: Callable[[LinkEvent], None] | None = None,
        on_upper_event: Callable[[object], None] | None = None,
    ) -> None:
        cfg = config or LinkConfig(packet=transport.packet)
        if cfg.packet != transport.packet:
            raise TransportError(
                f"{transport.name}: link configured for "
                f"{'packet' if cfg.packet else 'stream'} framing on a "
                f"{'packet' if transport.packet else 'stream'} transport"
            )
        self.transport = transport
        self.core = Link(cfg, rng=rng or random.Random(), now=time.monotonic())
        self.upper = upper
        self._on_event = on_event
        self._on_upper_event = on_upper_event
        #: link events for callers that read them (when no upper core consumes them)
        self.events: queue.Queue[LinkEvent] = queue.Queue()
        self._commands: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._rx: deque[bytes] = deque()
        self._out: deque[bytes] = deque()
        self._out_offset = 0
        self._log = logging.LoggerAdapter(log, {"link": transport.name})

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
        loop = threading.Thread(
            target=self._guard(self._loop), name=f"ira-link {self.transport.name}"
        )
        self._threads.append(loop)
        if self.transport.fileno() is None:
            reader = threading.Thread(
                target=self._guard(self._reader), name=f"ira-rx {self.transport.name}"
            )
            self._threads.append(reader)
        for t in self._threads:
            t.daemon = True
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self._threads.clear()
        self.transport.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

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
                if self._error is None:
                    self._error = exc
                self._stop.set()
                self._wake()

        return run

    # --- calls from other threads ---------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w >= 0 and not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"\x01")

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread soon."""
        if self._stop.is_set():
            self.raise_if_failed()
            raise LinkClosed(f"{self.transport.name}: the link runtime is stopped")
        self._commands.append(fn)
        self._wake()

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
        """Queue a message to the peer (thread-safe)."""
        self.post(lambda: self.core.send_message(payload, channel))

    def statistics(self) -> LinkStatistics:
        return self.call(self.core.statistics)

    def next_event(self, timeout_s: float | None = None) -> LinkEvent | None:
        """The next link event (when no upper core consumes them), or None on timeout."""
        try:
            event = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return None
        self.raise_if_failed()
        return event

    # --- the loop -----------------------------------------------------------------------

    def _reader(self) -> None:
        while not self._stop.is_set():
            data = self.transport.recv(0.1)
            if data:
                self._rx.append(data)
                self._wake()

    def _loop(self) -> None:
        transport = self.transport
        fd = transport.fileno()
        core = self.core
        while not self._stop.is_set():
            now = time.monotonic()
            self._service(now)
            deadline = self._deadline()
            wait = MAX_WAIT_S if deadline is None else min(MAX_WAIT_S, max(0.0, deadline - now))
            rlist = [self._wake_r] if fd is None else [self._wake_r, fd]
            wlist = [fd] if fd is not None and self._out else []
            readable, writable, _ = select.select(rlist, wlist, [], wait)
            if self._wake_r in readable:
                self._wake_pending = False
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            now = time.monotonic()
            if fd is not None and fd in readable:
                data = transport.recv(0)
                if data:
                    core.receive_data(data, now=now)
            while self._rx:
                core.receive_data(self._rx.popleft(), now=now)
            if writable:
                self._flush()

    def _deadline(self) -> float | None:
        deadlines = [self.core.next_deadline()]
        if self.upper is not None:
            deadlines.append(self.upper.next_deadline())
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def _service(self, now: float) -> None:
        """Run commands, timers and events until quiet, then write what is due."""
        core = self.core
        while self._commands:
            self._commands.popleft()()
        deadline = core.next_deadline()
        if deadline is not None and deadline <= now:
            core.handle_timeout(now=now)
        upper = self.upper
        if upper is not None:
            deadline = upper.next_deadline()
            if deadline is not None and deadline <= now:
                upper.handle_timeout(now=now)
        while (event := core.next_event()) is not None:
            self._log_event(event)
            if upper is not None:
                upper.handle_link_event(event, now=now)
            else:
                self.events.put(event)
            if self._on_event is not None:
                self._on_event(event)
        if upper is not None:
            if self._on_upper_event is not None:
                while (upper_event := upper.next_event()) is not None:
                    self._on_upper_event(upper_event)
            for channel, message in upper.messages_to_send():
                core.send_message(message, channel)
        if not self._out:
            chunks = core.data_to_send(now=now)
            if chunks:
                self._out.extend(chunks)
                self._flush()

    def _flush(self) -> None:
        """Write as much of the output as the transport takes now."""
        transport = self.transport
        timeout = 0.0 if transport.fileno() is not None else 0.1
        while self._out:
            head = self._out[0]
            if transport.packet:
                if transport.send(head, timeout) == 0:
                    return
                self._out.popleft()
                continue
            n = transport.send(head[self._out_offset :] if self._out_offset else head, timeout)
            if n == 0:
                return
            self._out_offset += n
            if self._out_offset >= len(head):
                self._out.popleft()
                self._out_offset = 0

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
                self._log.info("link up again after %.1f s", event.down_s)
            case SessionLost():
                self._log.info("session lost; offering a new one")
            case _:
                pass
