"""The link runtime's port as it comes and goes (``ira.runtime.port`` says how).

``PortKeeper`` holds the open transport, or the way to open it again: it opens the
port at start (or notes that it is not there yet), takes note on any thread that
the transport went away (``lose``), and on the thread that runs the cores closes
it (``close_lost``), reopens it with a backoff or at the opener's hint
(``look``), keeps the port's state and the events of its transitions for the
runtime to report.  What the runtime itself holds for the transport (its output,
its reads, the link core) it clears on its own side.  ``HotplugHints`` is the
opener's watch while the port is away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ira.errors import PortGone, TransportError
from ira.link.config import LinkConfig
from ira.runtime.port import (
    HINT_POLL_S,
    HINT_WINDOW_S,
    REOPEN_FIRST_S,
    REOPEN_MAX_S,
    PortBack,
    PortEvent,
    PortLost,
    PortState,
    PortStatus,
    PortWaiting,
    TransportOpener,
)
from ira.transports.base import PortWatch, Transport


def check_framing(transport: Transport, cfg: LinkConfig) -> None:
    """A ``TransportError`` when the link is configured for the other framing."""
    if cfg.packet != transport.packet:
        raise TransportError(
            f"{transport.name}: link configured for "
            f"{'packet' if cfg.packet else 'stream'} framing on a "
            f"{'packet' if transport.packet else 'stream'} transport"
        )


class HotplugHints:
    """The opener's hint that the port is back, while it is away: without a
    descriptor the watch is polled every ``HINT_POLL_S``; with one, it is asked
    when the descriptor is readable, and polled for ``HINT_WINDOW_S`` after each
    event (udev makes names and grants access shortly after the kernel's event)."""

    def __init__(self, watch: PortWatch | None, now: float) -> None:
        self._watch = watch
        #: the descriptor to watch, if the watch has one
        self.fd = None if watch is None else watch.fileno()
        #: the descriptor was readable at the last look (the loop sets it)
        self.hinted = False
        #: when to ask the watch next (a first look at once)
        self.poll_at = float("inf") if watch is None else now
        self._window_end = 0.0

    def look(self, now: float) -> bool:
        """True when an event or a poll due finds the port there."""
        watch = self._watch
        if watch is None or not (self.hinted or now >= self.poll_at):
            return False
        if self.hinted:
            self._window_end = now + HINT_WINDOW_S
        present = watch.present()
        # without a descriptor the watch is polled; with one, for a while after each event
        polling = self.fd is None or now < self._window_end
        self.poll_at = now + HINT_POLL_S if polling else float("inf")
        self.hinted = False
        return present

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()


class PortKeeper:
    """The open transport of one link runtime, or the way to open it again.

    Given a ``TransportOpener`` the port is reopened when it goes away
    (``PortGone``) and waited for when it is not there yet; given an open
    ``Transport`` there is no way back (``lose`` raises).  ``transport``, ``fd``
    and ``state`` may be read on any thread; everything else is called on the
    thread that runs the cores.
    """

    def __init__(
        self,
        transport: Transport | TransportOpener,
        *,
        log: logging.LoggerAdapter[logging.Logger],
        on_port_event: Callable[[PortEvent], None] | None,
        give_up_after_s: float | None,
        now: float,
    ) -> None:
        first: Transport | None
        waiting: PortGone | None = None
        if isinstance(transport, TransportOpener):
            self._opener: TransportOpener | None = transport
            try:
                first = transport.open()
            except PortGone as exc:
                first, waiting = None, exc
        else:
            self._opener = None
            first = transport
        self.name = transport.name
        self._log = log
        self._on_port_event = on_port_event
        self._give_up_after_s = give_up_after_s
        self._config: LinkConfig | None = None
        #: the open transport (None while the port is gone or waited for)
        self.transport = first
        #: its descriptor (None: it has none, or the port is away)
        self.fd = None if first is None else first.fileno()
        #: the transport that went away and why, until the loop closes it (see lose)
        self._lost: tuple[Transport, PortGone] | None = None
        self._lost_lock = threading.Lock()
        #: whether the transport is open now, since when, and why not
        self.state = PortState(PortStatus.UP, now)
        self._reopen_in_s = REOPEN_FIRST_S
        #: when to try to open the port again while it is away
        self.reopen_at = now
        #: transitions not yet reported (see report_events)
        self.pending_events: list[PortEvent] = []
        if waiting is not None:
            self.state = PortState(PortStatus.WAITING, now, str(waiting))
            self.reopen_at = now + REOPEN_FIRST_S
            self.pending_events.append(PortWaiting(str(waiting)))

    def adopt(self, config: LinkConfig) -> None:
        """The link's configuration: the transport opened at start must frame as it
        says (else ``TransportError``, and a transport opened here is closed)."""
        first = self.transport
        if first is not None:
            try:
                check_framing(first, config)
            except TransportError:
                if self._opener is not None:
                    first.close()
                raise
        self._config = config
        if self.state.status is PortStatus.WAITING:
            self._log.info("waiting for the port to appear: %s", self.state.reason)

    def close(self) -> None:
        """Close the transport and release what the opener holds (at stop)."""
        if self.transport is not None:
            self.transport.close()
        if self._opener is not None and self._opener.release is not None:
            self._opener.release()

    # The two below read the attributes afresh: another thread (or a call) changes them,
    # and a compiled build must not trust a check made earlier in the same loop.

    def is_lost(self) -> bool:
        """The transport went away and the loop has not closed it yet."""
        return self._lost is not None

    def current(self) -> Transport | None:
        """The open transport, or None while the port is away."""
        return self.transport

    def lose(self, transport: Transport, exc: PortGone) -> bool:
        """``transport`` went away (any thread): the loop closes it and reopens the port.
        True when this is news (the loop must be woken to see it).

        Without an opener there is no way back: ``exc`` is raised (the runtime stops).
        """
        if self._opener is None:
            raise exc
        with self._lost_lock:
            if self._lost is not None or self.transport is not transport:
                return False
            self._lost = (transport, exc)
        return True

    def close_lost(self, now: float) -> None:
        """Close the transport that went away; the port is down, reopened soon."""
        lost = self._lost
        assert lost is not None
        transport, exc = lost
        with self._lost_lock:
            self.transport = None
            self.fd = None
            self._lost = None
        transport.close()
        self._reopen_in_s = REOPEN_FIRST_S
        self.reopen_at = now + REOPEN_FIRST_S
        self.state = PortState(PortStatus.DOWN, now, str(exc))
        self._log.info("port gone (%s); reopening it", exc)
        self.pending_events.append(PortLost(str(exc)))

    def open_hints(self, now: float) -> HotplugHints:
        """The opener's hint that the port is back, if it has one (else a watch of none)."""
        opener = self._opener
        if opener is None or opener.watch is None:
            return HotplugHints(None, now)
        try:
            return HotplugHints(opener.watch(), now)
        except OSError as exc:  # no hints here: the backoff alone
            self._log.debug("no hotplug hints: %s", exc)
            return HotplugHints(None, now)

    def look(self, hints: HotplugHints, now: float) -> None:
        """While the port is away: reopen it when it is due, or at once when ``hints``
        say it is there (the backoff starts again then)."""
        if hints.look(now):
            self._reopen_in_s = REOPEN_FIRST_S
            self.reopen_at = now
        if now >= self.reopen_at:
            self._reopen(now)

    def _reopen(self, now: float) -> None:
        """Try to open the port again; back off while it is not there."""
        opener, config = self._opener, self._config
        assert opener is not None and config is not None
        try:
            transport = opener.open()
        except PortGone as exc:
            self.state = PortState(self.state.status, self.state.since, str(exc))
            limit = self._give_up_after_s
            if limit is not None and now - self.state.since >= limit:
                raise TransportError(
                    f"{self.name}: the port stayed away for {limit:g} s; giving up ({exc})"
                ) from exc
            self._reopen_in_s = min(2 * self._reopen_in_s, REOPEN_MAX_S)
            self.reopen_at = now + self._reopen_in_s
            return
        # an error a reopen cannot cure (permission denied, not a tty) stops the runtime
        try:
            check_framing(transport, config)
        except TransportError:
            transport.close()
            raise
        down_s = now - self.state.since
        with self._lost_lock:
            self.transport = transport
            self.fd = transport.fileno()
        self.state = PortState(PortStatus.UP, now)
        self._log.info("port back after %.1f s", down_s)
        self.pending_events.append(PortBack(down_s))

    def report_events(self) -> None:
        """Tell ``on_port_event`` the transitions since the last report."""
        events = self.pending_events
        if not events or self._on_port_event is None:
            events.clear()
            return
        pending = list(events)
        events.clear()
        for event in pending:
            self._on_port_event(event)
