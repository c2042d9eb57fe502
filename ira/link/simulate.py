"""A deterministic simulated line and a driver for two link ends (sans-I/O, fake clock).

Used by the tests (thousands of seeded scenarios a second) and by anything that
wants to run the layers above the link over a lossy line without threads.

``SimulatedLine`` models one direction: bytes written at ``now`` arrive after
``latency_s`` plus their serialisation time at ``bytes_per_s`` (if given), with
seeded faults: bit flips, byte drops, byte duplications (stream mode) or whole
packet loss/corruption/duplication (packet mode), and outages during which
everything sent is lost.  ``LinkPair`` runs two ``Link`` cores over two lines,
advancing the fake clock from deadline to deadline.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ira.link.core import Link
from ira.link.events import LinkEvent
from ira.link.faults import ByteFaults, FaultCounters, FaultModel


@dataclass(frozen=True, slots=True)
class LineFaults:
    #: probability per bit of a flip (stream) / per packet of corruption (packet)
    ber: float = 0.0
    #: probability per byte (stream) / per packet (packet) of loss
    drop: float = 0.0
    #: probability per byte (stream) / per packet (packet) of duplication
    dup: float = 0.0
    latency_s: float = 0.001
    #: line rate; None means unlimited
    bytes_per_s: float | None = None
    #: largest piece the receiver reads at once (stream); pieces are cut at random sizes
    max_read: int = 4096


@dataclass(order=True, slots=True)
class _Arrival:
    at: float
    order: int
    data: bytes = field(compare=False)


class SimulatedLine:
    def __init__(self, faults: LineFaults, rng: random.Random, *, packet: bool) -> None:
        self.faults = faults
        self._rng = rng
        self._packet = packet
        self._queue: list[_Arrival] = []
        self._order = 0
        self._busy_until = 0.0
        self.outages: list[tuple[float, float]] = []
        self.bytes_carried = 0
        self.faults_injected = 0
        #: counters of the byte faults injected (stream mode)
        self.fault_counters = FaultCounters()
        model = FaultModel(faults.ber, faults.drop, faults.dup)
        self._byte_faults = (
            ByteFaults(model, rng.getrandbits(64), "line") if model.any and not packet else None
        )

    def _in_outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)

    def write(self, data: bytes, now: float) -> None:
        f = self.faults
        start = max(now, self._busy_until)
        duration = len(data) / f.bytes_per_s if f.bytes_per_s else 0.0
        self._busy_until = start + duration
        if self._in_outage(start):
            return
        faulty = self._packet_faults(data) if self._packet else self._stream_faults(data)
        if faulty is None:
            return
        data = faulty
        copies = 2 if self._packet and self._rng.random() < f.dup else 1
        for _ in range(copies):
            if self._packet:
                self._push(start + duration + f.latency_s, data)
                continue
            # stream: deliver in random pieces spread over the serialisation time
            pos = 0
            while pos < len(data):
                n = self._rng.randint(1, f.max_read)
                piece = data[pos : pos + n]
                pos += len(piece)
                at = start + (duration * pos / len(data)) + f.latency_s
                self._push(at, piece)

    def _push(self, at: float, data: bytes) -> None:
        self._order += 1
        heapq.heappush(self._queue, _Arrival(at, self._order, data))
        self.bytes_carried += len(data)

    def _packet_faults(self, data: bytes) -> bytes | None:
        f, rng = self.faults, self._rng
        if rng.random() < f.drop:
            self.faults_injected += 1
            return None
        if data and rng.random() < f.ber * 8 * len(data):
            self.faults_injected += 1
            buf = bytearray(data)
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            return bytes(buf)
        return data

    def _stream_faults(self, data: bytes) -> bytes:
        if self._byte_faults is None:
            return data
        counters = self.fault_counters
        before = counters.bits_flipped + counters.bytes_dropped + counters.bytes_duplicated
        out = self._byte_faults.apply(data, counters)
        after = counters.bits_flipped + counters.bytes_dropped + counters.bytes_duplicated
        self.faults_injected += after - before
        return out

    def next_arrival(self) -> float | None:
        return self._queue[0].at if self._queue else None

    def pop_due(self, now: float) -> list[bytes]:
        out = []
        while self._queue and self._queue[0].at <= now:
            out.append(heapq.heappop(self._queue).data)
        return out


class LinkPair:
    """Two link cores joined by two simulated lines, driven by a fake clock."""

    def __init__(
        self,
        a: Link,
        b: Link,
        faults: LineFaults,
        rng: random.Random,
        *,
        faults_ba: LineFaults | None = None,
        now: float = 0.0,
    ) -> None:
        self.a, self.b = a, b
        packet = a.config.packet
        self.ab = SimulatedLine(faults, random.Random(rng.getrandbits(64)), packet=packet)
        self.ba = SimulatedLine(
            faults_ba or faults, random.Random(rng.getrandbits(64)), packet=packet
        )
        self.now = now
        self.events_a: list[LinkEvent] = []
        self.events_b: list[LinkEvent] = []
        #: called with (side, event) as events come out; may call send_message
        self.on_event: Callable[[str, LinkEvent], None] | None = None

    def outage(self, start: float, end: float) -> None:
        """Both directions lose everything sent in [start, end)."""
        self.ab.outages.append((start, end))
        self.ba.outages.append((start, end))

    def replace(self, side: str, link: Link) -> None:
        """Swap one end for a new core (a restarted board)."""
        if side == "a":
            self.a = link
        else:
            self.b = link

    def _pump(self) -> None:
        for link, line in ((self.a, self.ab), (self.b, self.ba)):
            for chunk in link.data_to_send(now=self.now):
                line.write(chunk, self.now)
        for side, link, sink in (("a", self.a, self.events_a), ("b", self.b, self.events_b)):
            while (ev := link.next_event()) is not None:
                sink.append(ev)
                if self.on_event is not None:
                    self.on_event(side, ev)

    def step(self) -> bool:
        """Advance to the next thing that happens; False when nothing is scheduled."""
        self._pump()
        times = [
            t
            for t in (
                self.a.next_deadline(),
                self.b.next_deadline(),
                self.ab.next_arrival(),
                self.ba.next_arrival(),
            )
            if t is not None
        ]
        if not times:
            return False
        self.now = max(self.now, min(times))
        for chunk in self.ab.pop_due(self.now):
            self.b.receive_data(chunk, now=self.now)
        for chunk in self.ba.pop_due(self.now):
            self.a.receive_data(chunk, now=self.now)
        for link in (self.a, self.b):
            deadline = link.next_deadline()
            if deadline is not None and deadline <= self.now:
                link.handle_timeout(now=self.now)
        self._pump()
        return True

    def run_until(self, condition: Callable[[], bool], *, timeout_s: float) -> bool:
        """Step until ``condition()`` or the fake clock passes ``now + timeout_s``."""
        limit = self.now + timeout_s
        while not condition():
            if self.now > limit or not self.step():
                return condition()
        return True

    def run_for(self, duration_s: float) -> None:
        limit = self.now + duration_s
        while self.now < limit:
            if not self.step():
                break
