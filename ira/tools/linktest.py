"""The cable test's engine: ``ira linktest`` and the HIL suite and benches use it.

Both ends of one link run in this process.  A pushes ``--bytes`` of random
messages (sizes drawn log-uniformly from ``--size``) to B, which checks every
byte, the order, and that each message arrives exactly once.  The report gives
goodput, efficiency against the line rate when ``--baud`` is known,
retransmissions, drops by reason and link events.  Exit status 0 only when
everything arrived intact, in order, exactly once.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from ira.errors import ConfigError
from ira.link.config import LinkConfig
from ira.link.core import LinkStatistics
from ira.link.events import Channel, LinkDown, LinkUp, MessageReceived, PeerRestarted, SessionLost
from ira.runtime.link import LinkRuntime
from ira.transports import open_transport

_INDEX = struct.Struct("<Q")
#: the sender keeps at most this many bytes queued beyond what B received
_AHEAD_BYTES = 1 << 20


#: the most ``--bytes`` a test may push (1 TiB)
MAX_TOTAL_BYTES = 1 << 40


def parse_size(text: str, *, option: str = "--bytes", maximum: int = MAX_TOTAL_BYTES) -> int:
    """``4M``, ``64K``, ``1500`` -> bytes, 1..``maximum``; ``ConfigError`` naming ``option``."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        value = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, OverflowError):  # OverflowError: inf
        raise ConfigError(
            f"{option} {text}: not a size; use a number of bytes like 1500, 64K or 4M"
        ) from None
    if not 1 <= value <= maximum:
        raise ConfigError(f"{option} {text}: give 1 to {maximum:,} bytes")
    return value


def parse_range(text: str, *, option: str = "--size", maximum: int) -> tuple[int, int]:
    """``1-64K`` or ``1500`` -> (low, high), 1 <= low <= high <= ``maximum``."""
    low, sep, high = text.partition("-")
    lo = parse_size(low, option=option, maximum=maximum)
    hi = parse_size(high, option=option, maximum=maximum) if sep else lo
    if lo > hi:
        raise ConfigError(f"{option} {text}: need MIN <= MAX, like 1-64K")
    return lo, hi


class MessageSource:
    """Deterministic messages: an 8-byte index, then bytes derived from (seed, index)."""

    def __init__(self, seed: int, size_range: tuple[int, int]) -> None:
        self._seed = seed
        self._lo, self._hi = size_range

    def message(self, index: int) -> bytes:
        rng = random.Random(self._seed * 1_000_003 + index)
        lo, hi = max(self._lo, _INDEX.size), max(self._hi, _INDEX.size)
        size = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return _INDEX.pack(index) + rng.randbytes(size - _INDEX.size)

    def messages(self, total_bytes: int) -> Iterator[bytes]:
        index = sent = 0
        while sent < total_bytes:
            msg = self.message(index)
            sent += len(msg)
            index += 1
            yield msg


@dataclass
class Verdict:
    messages_expected: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    corrupt: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.messages_received == self.messages_expected
            and not self.corrupt
            and not self.out_of_order
            and not self.duplicates
        )


def measure(
    spec_a: str,
    spec_b: str,
    total: int,
    sizes: tuple[int, int],
    seed: int,
    timeout_s: float,
    stack: contextlib.ExitStack,
    *,
    psk: bytes | None = None,
) -> dict[str, object]:
    source = MessageSource(seed, sizes)
    ta = open_transport(spec_a)
    stack.callback(ta.close)
    tb = open_transport(spec_b)
    stack.callback(tb.close)
    a = stack.enter_context(LinkRuntime(ta, LinkConfig(packet=ta.packet, psk=psk)))
    b = stack.enter_context(LinkRuntime(tb, LinkConfig(packet=tb.packet, psk=psk)))
    verdict = Verdict()
    outgoing = source.messages(total)
    queued_bytes = 0
    start = time.monotonic()
    deadline = start + timeout_s
    finished = False
    while time.monotonic() < deadline:
        while queued_bytes - verdict.bytes_received < _AHEAD_BYTES:
            msg = next(outgoing, None)
            if msg is None:
                finished = True
                break
            verdict.messages_expected += 1
            queued_bytes += len(msg)
            a.send(msg, Channel.BULK)
        if finished and verdict.messages_received >= verdict.messages_expected:
            break
        event = b.next_event(0.2)
        if isinstance(event, MessageReceived):
            check(event.payload, source, verdict)
        elif event is not None:
            verdict.events.append(describe(event))
        a.raise_if_failed()
    elapsed = time.monotonic() - start
    stats_a, stats_b = a.statistics(), b.statistics()
    return {
        "ok": verdict.ok and finished,
        "link_a": spec_a,
        "link_b": spec_b,
        "elapsed_s": elapsed,
        "messages_expected": verdict.messages_expected,
        "messages_received": verdict.messages_received,
        "bytes_received": verdict.bytes_received,
        "goodput_bytes_per_s": verdict.bytes_received / elapsed if elapsed else 0.0,
        "corrupt": verdict.corrupt,
        "out_of_order": verdict.out_of_order,
        "duplicates": verdict.duplicates,
        "events_b": verdict.events,
        "retransmitted_segments": stats_a.segments_retransmitted,
        "retransmitted_bytes": stats_a.bytes_retransmitted,
        "wire_bytes_sent": stats_a.wire_bytes_sent,
        "drops_a": stats_a.drops,
        "drops_b": stats_b.drops,
        "stats_a": _stats(stats_a),
        "stats_b": _stats(stats_b),
    }


def _stats(s: LinkStatistics) -> dict[str, object]:
    return {k: v for k, v in asdict(s).items() if not k.startswith("drop_")}


def check(payload: bytes, source: MessageSource, verdict: Verdict) -> None:
    expected_index = verdict.messages_received
    if len(payload) < _INDEX.size:
        verdict.corrupt += 1
        return
    (index,) = _INDEX.unpack_from(payload)
    if index < expected_index:
        verdict.duplicates += 1
        return
    if index > expected_index:
        verdict.out_of_order += 1
    if payload != source.message(index):
        verdict.corrupt += 1
    verdict.messages_received = index + 1
    verdict.bytes_received += len(payload)


def describe(event: object) -> str:
    match event:
        case LinkDown():
            return f"link down after {event.silent_s:.2f} s of silence"
        case LinkUp():
            return f"link up after {event.down_s:.2f} s"
        case PeerRestarted():
            return f"peer restarted ({event.discarded_messages} messages discarded)"
        case SessionLost():
            return "session lost"
        case _:
            return type(event).__name__


__all__ = ["MessageSource", "Verdict", "check", "describe", "measure", "parse_range", "parse_size"]
