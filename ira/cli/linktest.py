"""``ira linktest LINK_A LINK_B``: the cable test.

Both ends of one link run in this process.  A pushes ``--bytes`` of random
messages (sizes drawn log-uniformly from ``--size``) to B, which checks every
byte, the order, and that each message arrives exactly once.  The report gives
goodput, efficiency against the line rate when ``--baud`` is known,
retransmissions, drops by reason and link events.  Exit status 0 only when
everything arrived intact, in order, exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from ira.errors import ConfigError, IraError
from ira.link.config import LinkConfig
from ira.link.core import LinkStatistics
from ira.link.events import Channel, LinkDown, LinkUp, MessageReceived, PeerRestarted, SessionLost
from ira.link.runtime import LinkRuntime
from ira.link.transport import open_transport

_INDEX = struct.Struct("<Q")
#: the sender keeps at most this many bytes queued beyond what B received
_AHEAD_BYTES = 1 << 20


def parse_size(text: str) -> int:
    """``4M``, ``64K``, ``1500`` -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise ConfigError(
            f"bad size {text!r}: use a number of bytes like 1500, 64K or 4M"
        ) from None


def parse_range(text: str) -> tuple[int, int]:
    """``1-64K`` or ``1500`` -> (low, high)."""
    low, sep, high = text.partition("-")
    lo = parse_size(low)
    hi = parse_size(high) if sep else lo
    if not 1 <= lo <= hi:
        raise ConfigError(f"bad size range {text!r}: need 1 <= MIN <= MAX, like 1-64K")
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "linktest",
        help="cable test: push random messages across a link and verify them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("links", nargs="*", metavar="LINK", help="the two ends (LINK_A LINK_B)")
    p.add_argument("--nullmodem", action="store_true", help="make a virtual null-modem and test it")
    p.add_argument("--bytes", default="4M", help="how much to push (default 4M)")
    p.add_argument("--size", default="1-64K", help="message sizes MIN-MAX or N (default 1-64K)")
    p.add_argument(
        "--baud", type=int, help="line rate, for the efficiency figure (and --nullmodem)"
    )
    p.add_argument("--ber", type=float, default=0.0, help="with --nullmodem: bit error rate")
    p.add_argument("--drop", type=float, default=0.0, help="with --nullmodem: byte drop rate")
    p.add_argument("--seed", type=int, default=1, help="seed of the messages and faults")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    total = parse_size(args.bytes)
    sizes = parse_range(args.size)
    if args.nullmodem == bool(args.links) or (args.links and len(args.links) != 2):
        raise ConfigError("give two links (LINK_A LINK_B) or --nullmodem")
    timeout = args.timeout
    if timeout is None:
        timeout = 60.0 + (3 * total / (args.baud / 10) if args.baud else total / 1e6)
    with contextlib.ExitStack() as stack:
        links: list[str] = args.links
        if args.nullmodem:
            from ira.link.nullmodem import NullModem, NullModemConfig

            nm = stack.enter_context(
                NullModem(
                    NullModemConfig(baud=args.baud, ber=args.ber, drop=args.drop, seed=args.seed)
                )
            )
            links = [nm.path_a, nm.path_b]
        report = measure(links[0], links[1], total, sizes, args.seed, timeout, stack)
    report["baud"] = args.baud
    if args.baud:
        report["efficiency"] = report["goodput_bytes_per_s"] / (args.baud / 10)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


def measure(
    spec_a: str,
    spec_b: str,
    total: int,
    sizes: tuple[int, int],
    seed: int,
    timeout_s: float,
    stack: contextlib.ExitStack,
) -> dict[str, object]:
    source = MessageSource(seed, sizes)
    ta = open_transport(spec_a)
    stack.callback(ta.close)
    tb = open_transport(spec_b)
    stack.callback(tb.close)
    a = stack.enter_context(LinkRuntime(ta, LinkConfig(packet=ta.packet)))
    b = stack.enter_context(LinkRuntime(tb, LinkConfig(packet=tb.packet)))
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


def print_report(r: dict[str, object]) -> None:
    def num(key: str) -> float:
        value = r[key]
        assert isinstance(value, int | float)
        return value

    out = sys.stdout
    verdict = "PASS" if r["ok"] else "FAIL"
    print(f"linktest {verdict}: {r['link_a']} -> {r['link_b']}", file=out)
    print(
        f"  messages {r['messages_received']}/{r['messages_expected']}, "
        f"{num('bytes_received') / 1e6:.3f} MB in {num('elapsed_s'):.2f} s, "
        f"goodput {num('goodput_bytes_per_s') / 1e3:.1f} kB/s",
        file=out,
    )
    if r.get("efficiency") is not None:
        print(
            f"  efficiency {num('efficiency'):.3f} of {r['baud']} baud (baud/10 bytes/s)", file=out
        )
    print(
        f"  corrupt {r['corrupt']}, out of order {r['out_of_order']}, duplicates {r['duplicates']}",
        file=out,
    )
    print(
        f"  retransmitted {r['retransmitted_segments']} segments "
        f"({r['retransmitted_bytes']} bytes), wire bytes sent {r['wire_bytes_sent']}",
        file=out,
    )
    for side in ("a", "b"):
        drops = r[f"drops_{side}"]
        assert isinstance(drops, dict)
        shown = ", ".join(f"{k} {v}" for k, v in drops.items() if v) or "none"
        print(f"  drops at {side.upper()}: {shown}", file=out)
    events = r["events_b"]
    assert isinstance(events, list)
    for e in events:
        print(f"  event at B: {e}", file=out)


__all__ = ["IraError", "MessageSource", "measure", "parse_range", "parse_size", "register", "run"]
