"""Byte-level line faults: bit flips, drops, duplications and error bursts (sans-I/O).

The one fault model of ira's test doubles: the virtual null-modem applies it to
real pty traffic and the simulated line (``simulate.py``) to the link cores'
bytes.  Faults are independent per-position processes along a direction's byte
stream, drawn as geometric gaps (one random number per fault, none per byte),
each from its own ``random.Random`` seeded from the seed, the direction and the
fault kind, so the same seed and the same bytes give the same faults however the
stream is cut into reads.

``ber``: each bit flips with this probability.  ``drop``: each byte is lost with
this probability.  ``dup``: each byte is doubled with this probability.
``burst_rate``/``burst_bytes``: at each byte a burst starts with probability
``burst_rate``; it replaces that byte and the next ``burst_bytes - 1`` bytes
with wrong values (each XORed with a random non-zero mask), like a noise spike.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ira.errors import ConfigError


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ConfigError(f"{name} must be a probability between 0 and 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class FaultModel:
    """What a line does to the bytes it carries.  Every fault is off by default."""

    #: probability that each bit is flipped
    ber: float = 0.0
    #: probability that each byte is lost
    drop: float = 0.0
    #: probability that each byte is delivered twice
    dup: float = 0.0
    #: probability, at each byte, that an error burst starts
    burst_rate: float = 0.0
    #: bytes corrupted by one burst (the byte where it starts included)
    burst_bytes: int = 8

    def __post_init__(self) -> None:
        _probability("ber", self.ber)
        _probability("drop", self.drop)
        _probability("dup", self.dup)
        _probability("burst rate", self.burst_rate)
        if self.burst_bytes < 1:
            raise ConfigError(f"burst length must be at least 1 byte, got {self.burst_bytes}")

    @property
    def any(self) -> bool:
        """True when any fault is configured."""
        return bool(self.ber or self.drop or self.dup or self.burst_rate)


@dataclass(frozen=True, slots=True)
class DirectionStatistics:
    """Counters of one direction of the null-modem."""

    #: bytes read from the sending end
    bytes_in: int = 0
    #: bytes delivered to the receiving end
    bytes_out: int = 0
    #: bits flipped, by ``ber`` and by bursts
    bits_flipped: int = 0
    #: error bursts started
    bursts: int = 0
    #: bytes lost by ``drop``
    bytes_dropped: int = 0
    #: extra bytes delivered by ``dup``
    bytes_duplicated: int = 0
    #: bytes lost because the cable was unplugged
    bytes_lost_unplugged: int = 0
    #: bytes discarded because nobody had the receiving end open
    bytes_lost_board_off: int = 0


class Gaps:
    """Positions of independent events of probability ``p`` along a stream.

    The gap to the next event is geometric, so one random draw serves a
    whole gap instead of one draw per position.
    """

    def __init__(self, p: float, rng: random.Random) -> None:
        self._p = p
        self._rng = rng
        self._log_q = math.log1p(-p) if p < 1.0 else 0.0
        self._next = self._draw()

    def _draw(self) -> int:
        if self._p >= 1.0:
            return 0
        return int(math.log1p(-self._rng.random()) / self._log_q)

    def take(self, n: int) -> list[int]:
        """Event positions among the next ``n`` positions, relative to them."""
        positions = []
        pos = self._next
        while pos < n:
            positions.append(pos)
            pos += 1 + self._draw()
        self._next = pos - n
        return positions


@dataclass(slots=True)
class FaultCounters:
    bytes_in: int = 0
    bytes_out: int = 0
    bits_flipped: int = 0
    bursts: int = 0
    bytes_dropped: int = 0
    bytes_duplicated: int = 0
    bytes_lost_unplugged: int = 0
    bytes_lost_board_off: int = 0

    def snapshot(self) -> DirectionStatistics:
        return DirectionStatistics(
            self.bytes_in,
            self.bytes_out,
            self.bits_flipped,
            self.bursts,
            self.bytes_dropped,
            self.bytes_duplicated,
            self.bytes_lost_unplugged,
            self.bytes_lost_board_off,
        )


class ByteFaults:
    """The fault processes of one direction of a line (see the module docstring).

    ``seed`` and ``label`` name the direction's random streams, one per fault
    kind, so the same seed and bytes give the same faults however they are cut.
    """

    def __init__(self, config: FaultModel, seed: int | str, label: str) -> None:
        def gaps(kind: str, p: float) -> Gaps | None:
            return Gaps(p, random.Random(f"{seed}/{label}/{kind}")) if p > 0 else None

        self._flips = gaps("ber", config.ber)
        self._drops = gaps("drop", config.drop)
        self._dups = gaps("dup", config.dup)
        self._bursts = gaps("burst", config.burst_rate)
        self._burst_rng = random.Random(f"{seed}/{label}/burst-values")
        self._burst_bytes = config.burst_bytes
        self._burst_left = 0

    def apply(self, data: bytes, counters: FaultCounters) -> bytes:
        n = len(data)
        buf: bytearray | None = None
        if self._flips is not None:
            flips = self._flips.take(8 * n)
            if flips:
                buf = bytearray(data)
                for bit in flips:
                    buf[bit >> 3] ^= 1 << (bit & 7)
                counters.bits_flipped += len(flips)
        if self._bursts is not None:
            starts = self._bursts.take(n)
            if starts or self._burst_left:
                if buf is None:
                    buf = bytearray(data)
                self._corrupt(buf, starts, counters)
        out = bytes(buf) if buf is not None else data
        drops = self._drops.take(n) if self._drops is not None else []
        dups = self._dups.take(n) if self._dups is not None else []
        if not drops and not dups:
            return out
        dropped = set(drops)
        pieces = []
        last = 0
        for pos in sorted(dropped.union(dups)):
            pieces.append(out[last:pos])
            if pos in dropped:
                counters.bytes_dropped += 1
            else:
                pieces.append(out[pos : pos + 1])
                pieces.append(out[pos : pos + 1])
                counters.bytes_duplicated += 1
            last = pos + 1
        pieces.append(out[last:])
        return b"".join(pieces)

    def _corrupt(self, buf: bytearray, starts: list[int], counters: FaultCounters) -> None:
        rng = self._burst_rng
        n = len(buf)
        counters.bursts += len(starts)
        pos = 0
        stops = iter(starts)
        next_start = next(stops, n)
        while pos < n:
            if pos == next_start:
                self._burst_left = self._burst_bytes
                next_start = next(stops, n)
            if self._burst_left == 0:
                pos = next_start
                continue
            end = min(n, pos + self._burst_left, next_start)
            for i in range(pos, end):
                mask = rng.randrange(1, 256)
                buf[i] ^= mask
                counters.bits_flipped += mask.bit_count()
            self._burst_left -= end - pos
            pos = end
