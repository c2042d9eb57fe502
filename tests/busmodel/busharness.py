"""A connector and a bus joined by an in-memory link, driven with explicit time.

The pipe does what the link promises: every message is delivered exactly once
and in order *per channel*.  Across channels the order is up to the pipe:
``interleave="fifo"`` delivers in sending order, ``"control-first"`` delivers
every CONTROL message ahead of BULK ones (as the link's scheduler may), and
``"random"`` picks the channel at random from a seeded generator.  The test
injects LinkDown/LinkUp/PeerRestarted/SessionLost itself.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from ira.busmodel import Bus, BusEvent, Connector, ConnectorEvent
from ira.busmodel.events import (
    CallCompleted,
    CallFailed,
    DeviceOpened,
    WindowAttached,
    WindowDetached,
)
from ira.link.events import (
    Channel,
    LinkDown,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.wire.bus import Tag

Interleave = Literal["fifo", "control-first", "random"]
E = TypeVar("E")


def _tag_name(data: bytes) -> str:
    try:
        return Tag(data[0]).name
    except (IndexError, ValueError):
        return "?"


@dataclass
class Direction:
    """Messages in flight one way, per channel, in order."""

    queues: dict[Channel, list[bytes]] = field(
        default_factory=lambda: {Channel.CONTROL: [], Channel.BULK: []}
    )
    order: list[Channel] = field(default_factory=list)  # sending order, for "fifo"
    tags: Counter[str] = field(default_factory=Counter)  # what was delivered, by tag

    def push(self, channel: Channel, data: bytes) -> None:
        self.queues[channel].append(data)
        self.order.append(channel)

    def __len__(self) -> int:
        return len(self.order)

    def pop(self, interleave: Interleave, rng: random.Random) -> tuple[Channel, bytes]:
        if interleave == "fifo":
            channel = self.order[0]
        elif interleave == "control-first":
            channel = Channel.CONTROL if self.queues[Channel.CONTROL] else Channel.BULK
        else:
            ready = [c for c in (Channel.CONTROL, Channel.BULK) if self.queues[c]]
            channel = rng.choice(ready)
        self.order.remove(channel)
        data = self.queues[channel].pop(0)
        self.tags[_tag_name(data)] += 1
        return channel, data

    def clear(self) -> int:
        n = len(self.order)
        for q in self.queues.values():
            q.clear()
        self.order.clear()
        return n


class Pair:
    """A board ``Connector`` and a host ``Bus`` over an in-memory link."""

    def __init__(
        self,
        board: Connector | None = None,
        host: Bus | None = None,
        *,
        interleave: Interleave = "fifo",
        seed: int = 0,
    ) -> None:
        self.board = board or Connector()
        self.host = host or Bus()
        self.interleave: Interleave = interleave
        self.rng = random.Random(seed)
        self.now = 0.0
        self.up = True
        self.to_host = Direction()
        self.to_board = Direction()
        self.host_events: list[BusEvent] = []
        self.board_events: list[ConnectorEvent] = []
        self._epoch = 1

    # -- link events ----------------------------------------------------

    def start(self) -> None:
        """A link session starts on both sides; registration runs to the end."""
        ev = SessionStarted(self._epoch, self._epoch + 1, 0, 4096, 1)
        self.board.handle_link_event(ev, now=self.now)
        self.host.handle_link_event(ev, now=self.now)
        self.pump()

    def link_down(self) -> None:
        self.up = False
        for core in (self.board, self.host):
            core.handle_link_event(LinkDown(silent_s=3.0), now=self.now)
        self.collect()

    def link_up(self) -> None:
        self.up = True
        for core in (self.board, self.host):
            core.handle_link_event(LinkUp(down_s=2.0), now=self.now)
        self.collect()

    def restart_board(self, board: Connector) -> None:
        """The board process restarted: in-flight messages are lost, a new session starts."""
        discarded = self.to_board.clear() + self.to_host.clear()
        old, self._epoch = self._epoch, self._epoch + 2
        self.host.handle_link_event(PeerRestarted(old, self._epoch, discarded), now=self.now)
        self.board = board
        self.collect()
        self.start()

    def lose_session(self) -> None:
        """The session timed out on both sides."""
        for core in (self.board, self.host):
            core.handle_link_event(
                SessionLost(peer_epoch=self._epoch, discarded_messages=0), now=self.now
            )
        self.to_board.clear()
        self.to_host.clear()
        self.collect()

    # -- time -----------------------------------------------------------

    def advance(self, dt: float) -> None:
        self.now += dt
        deadline = self.host.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.host.handle_timeout(now=self.now)
        self.board.handle_timeout(now=self.now)
        self.collect()

    # -- moving messages -------------------------------------------------

    def collect(self) -> None:
        """Take what both cores want to send, and their events."""
        for channel, data in self.board.messages_to_send():
            self.to_host.push(channel, data)
        for channel, data in self.host.messages_to_send():
            self.to_board.push(channel, data)
        while (hev := self.host.next_event()) is not None:
            self.host_events.append(hev)
        while (bev := self.board.next_event()) is not None:
            self.board_events.append(bev)

    def step(self, *, to_host: bool = True, to_board: bool = True) -> int:
        """Deliver at most one message each way; returns how many were delivered."""
        self.collect()
        if not self.up:
            return 0
        delivered = 0
        if to_board and self.to_board:
            channel, data = self.to_board.pop(self.interleave, self.rng)
            self.board.handle_link_event(MessageReceived(channel, data), now=self.now)
            delivered += 1
        if to_host and self.to_host:
            channel, data = self.to_host.pop(self.interleave, self.rng)
            self.host.handle_link_event(MessageReceived(channel, data), now=self.now)
            delivered += 1
        self.collect()
        return delivered

    def pump(self, limit: int = 10_000_000) -> int:
        """Deliver until both directions are empty (or the link is down)."""
        total = 0
        while (n := self.step()) and total < limit:
            total += n
        return total

    # -- helpers --------------------------------------------------------

    def events(self, kind: type[E]) -> list[E]:
        return [ev for ev in self.host_events if isinstance(ev, kind)]

    def take_events(self) -> list[BusEvent]:
        events, self.host_events = self.host_events, []
        return events

    def outcome(self, call_id: int) -> BusEvent:
        """The event that ended request ``call_id`` (after pumping)."""
        self.pump()
        for ev in self.host_events:
            if (
                isinstance(
                    ev, (CallCompleted, CallFailed, DeviceOpened, WindowAttached, WindowDetached)
                )
                and ev.call_id == call_id
            ):
                return ev
        raise AssertionError(f"no outcome for call {call_id}")

    def open(self, device_id: int, **kwargs: int) -> int:
        """Open a device and return its handle."""
        ev = self.outcome(self.host.open(device_id, now=self.now, **kwargs))
        assert isinstance(ev, DeviceOpened), ev
        return ev.handle

    def call(self, handle: int, func: int, payload: bytes = b"") -> CallCompleted | CallFailed:
        ev = self.outcome(self.host.call(handle, func, payload, now=self.now))
        assert isinstance(ev, (CallCompleted, CallFailed)), ev
        return ev

    def device_id(self, type_name: str) -> int:
        for info in self.host.devices():
            if info.type == type_name:
                return info.device_id
        raise AssertionError(f"no {type_name} device on the host")


def until(pair: Pair, predicate: Callable[[], bool], limit: int = 1_000_000) -> None:
    """Step the pair until ``predicate()`` holds."""
    for _ in range(limit):
        if predicate():
            return
        if not pair.step():
            break
    assert predicate()
