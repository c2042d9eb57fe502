"""A board ``Connector`` and a host ``Bus`` over two ``Link`` cores on a lossy simulated line.

The link's own fake clock drives everything: each ``step()`` moves to the
next arrival or deadline (``LinkPair``), hands the link events to the bus
cores and gives their messages to the links.  Nothing sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from ira.busmodel import Bus, BusEvent, Connector
from ira.busmodel.events import CallCompleted, CallFailed, DeviceOpened, WindowAttached
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import LinkEvent
from ira.link.simulate import LineFaults, LinkPair

E = TypeVar("E")

#: a noisy serial line: bit errors, drops, duplicated bytes, 115200 baud
NOISY = LineFaults(ber=2e-5, drop=2e-5, dup=1e-5, latency_s=0.002, bytes_per_s=11520.0)


class BusOverLink:
    def __init__(
        self, board: Connector, host: Bus, *, seed: int, faults: LineFaults = NOISY
    ) -> None:
        self.board = board
        self.host = host
        rng = random.Random(seed)
        config = LinkConfig()
        a = Link(config, rng=random.Random(rng.getrandbits(64)), now=0.0)
        b = Link(config, rng=random.Random(rng.getrandbits(64)), now=0.0)
        self.pair = LinkPair(a, b, faults, rng)
        self.pair.on_event = self._on_link_event
        self.host_events: list[BusEvent] = []
        #: called with each host event as it comes out
        self.on_host_event: Callable[[BusEvent], None] | None = None

    @property
    def now(self) -> float:
        return self.pair.now

    def _on_link_event(self, side: str, ev: LinkEvent) -> None:
        core = self.board if side == "a" else self.host
        core.handle_link_event(ev, now=self.pair.now)

    def flush(self) -> None:
        """Give the cores' messages to the links; take the host's events."""
        moved = True
        while moved:
            moved = False
            for channel, data in self.board.messages_to_send():
                self.pair.a.send_message(data, channel)
            for channel, data in self.host.messages_to_send():
                self.pair.b.send_message(data, channel)
            while (ev := self.host.next_event()) is not None:
                moved = True
                self.host_events.append(ev)
                if self.on_host_event is not None:
                    self.on_host_event(ev)
            while self.board.next_event() is not None:
                pass

    def step(self) -> bool:
        self.flush()
        more = self.pair.step()
        for core in (self.board, self.host):
            deadline = core.next_deadline()
            if deadline is not None and deadline <= self.now:
                core.handle_timeout(now=self.now)
        self.flush()
        return more

    def run_until(self, condition: Callable[[], bool], *, timeout_s: float) -> bool:
        limit = self.now + timeout_s
        while not condition():
            if self.now > limit or not self.step():
                return condition()
        return True

    def outcome(self, call_id: int, *, timeout_s: float = 30.0) -> BusEvent:
        """The event that ended request ``call_id``."""

        def find() -> BusEvent | None:
            for ev in self.host_events:
                if (
                    isinstance(ev, CallCompleted | CallFailed | DeviceOpened | WindowAttached)
                    and ev.call_id == call_id
                ):
                    return ev
            return None

        assert self.run_until(lambda: find() is not None, timeout_s=timeout_s)
        found = find()
        assert found is not None
        return found

    def events(self, kind: type[E]) -> list[E]:
        return [ev for ev in self.host_events if isinstance(ev, kind)]
