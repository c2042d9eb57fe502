"""CoDel: dropping from a queue whose frames stay too long (RFC 8289), scaled to the line.

Sans-I/O.  ``CoDel`` is the state of one queue (one flow of the ``FlowQueue``,
as fq_codel keeps one per flow, RFC 8290 §4.2) and its ``dequeue`` is RFC 8289's
§5 pseudocode: while the frames leaving a queue have waited (their *sojourn
time*) longer than ``target`` for at least ``interval``, it drops from the head,
the next drop ``interval / sqrt(count)`` after the last, until a frame leaves
faster than ``target`` again.  A queue holding no more than one full frame is
never dropped from (RFC 8289's ``MAXPACKET`` rule), so a sparse flow — a ping,
a keystroke — loses nothing.

*Scaled to the line* (``CoDelParams.for_line``): RFC 8289's 5 ms target and
100 ms interval assume a line on which a full frame takes far less than 5 ms;
at 115200 baud one takes ~133 ms, and a 5 ms target would drop from a queue
that holds the next frame only.  RFC 8289 §4.3 asks for a target of at least
one full frame's transmission time and an interval of the order of the worst
round trip through the line; here: the target is the larger of 5 ms and one
full frame's time on the line, the interval the larger of 100 ms and eight
targets (the target then 12.5 % of the interval, near RFC 8289's 5-10 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

#: RFC 8289's defaults, for lines where a full frame takes well under 5 ms
TARGET_S = 0.005
INTERVAL_S = 0.1
#: the interval in targets, when the target is scaled to the line
INTERVAL_TARGETS = 8


@dataclass(frozen=True, slots=True)
class CoDelParams:
    """CoDel's two times, and the size of a full frame (a queue no bigger keeps it)."""

    target_s: float
    interval_s: float
    full_frame: int

    @classmethod
    def for_line(cls, rate: float, full_frame: int) -> CoDelParams:
        """Scaled to a line moving ``rate`` bytes a second (see the module docstring)."""
        if rate <= 0 or full_frame <= 0:
            raise ValueError("a line's rate and a full frame are positive")
        target = max(TARGET_S, full_frame / rate)
        return cls(target, max(INTERVAL_S, INTERVAL_TARGETS * target), full_frame)


#: a queue's head: the frame and when it was queued
Head = tuple[bytes, float]


class CoDelQueue(Protocol):
    """A queue CoDel dequeues from."""

    #: bytes queued
    bytes: int

    def take(self) -> Head | None:
        """The head and when it was queued (None: the queue is empty)."""
        ...


class CoDel:
    """The CoDel state of one queue (RFC 8289 §5)."""

    __slots__ = ("count", "drop_next", "dropped", "dropping", "first_above", "lastcount")

    def __init__(self) -> None:
        self.first_above = 0.0  # 0: the sojourn time is under target
        self.drop_next = 0.0
        self.count = 0
        self.lastcount = 0
        self.dropping = False
        #: frames this state dropped
        self.dropped = 0

    def dequeue(self, queue: CoDelQueue, params: CoDelParams, *, now: float) -> bytes | None:
        """The next frame to send from ``queue``, dropping from its head while CoDel
        says so."""
        frame, ok_to_drop = self._take(queue, params, now)
        if frame is None:
            self.dropping = False
            return None
        if self.dropping:
            if not ok_to_drop:
                self.dropping = False  # the sojourn time went under target
            while self.dropping and now >= self.drop_next:
                self.dropped += 1
                self.count += 1
                frame, ok_to_drop = self._take(queue, params, now)
                if frame is None or not ok_to_drop:
                    self.dropping = False
                else:
                    self.drop_next = self._control_law(self.drop_next, params)
            return frame
        if ok_to_drop:
            self.dropped += 1
            frame, _ = self._take(queue, params, now)
            self.dropping = True
            # a queue that was dropping a short while ago starts where it was
            delta = self.count - self.lastcount
            self.count = delta if delta > 1 and now - self.drop_next < 16 * params.interval_s else 1
            self.drop_next = self._control_law(now, params)
            self.lastcount = self.count
        return frame

    def _take(
        self, queue: CoDelQueue, params: CoDelParams, now: float
    ) -> tuple[bytes | None, bool]:
        """RFC 8289's ``dodequeue``: the head, and whether it may be dropped."""
        head = queue.take()
        if head is None:
            self.first_above = 0.0
            return None, False
        frame, queued_at = head
        if now - queued_at < params.target_s or queue.bytes <= params.full_frame:
            self.first_above = 0.0
            return frame, False
        if not self.first_above:
            self.first_above = now + params.interval_s
            return frame, False
        return frame, now >= self.first_above

    def _control_law(self, t: float, params: CoDelParams) -> float:
        return t + params.interval_s / math.sqrt(self.count)
