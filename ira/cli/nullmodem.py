"""``ira nullmodem``: a virtual null-modem cable between two pty paths.

Prints ``A <path>`` and ``B <path>`` (flushed, one line each), then carries
bytes until SIGINT or SIGTERM; SIGUSR1 pulls the cable for ``--unplug-for``
seconds.  On exit the statistics of both directions go to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ira.errors import ConfigError, TransportError
from ira.tools.nullmodem import DirectionStatistics, NullModem, NullModemConfig

#: how often the waiting loop looks up from its queue (signals also wake it)
_POLL_S = 0.5


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``nullmodem`` subcommand."""
    parser = subparsers.add_parser(
        "nullmodem",
        help="a virtual null-modem: two pty paths bridged, with throttling and faults",
        description=(
            "Create two pty paths joined like a null-modem cable and print them as "
            "'A <path>' and 'B <path>'; run until SIGINT or SIGTERM. SIGUSR1 unplugs "
            "the cable for --unplug-for seconds. Statistics go to stderr on exit."
        ),
    )
    parser.add_argument(
        "--baud", metavar="N", help="throttle each direction to N/10 bytes per second"
    )
    parser.add_argument("--ber", metavar="X", help="probability that each bit is flipped")
    parser.add_argument("--drop", metavar="X", help="probability that each byte is lost")
    parser.add_argument("--dup", metavar="X", help="probability that each byte is doubled")
    parser.add_argument(
        "--burst",
        metavar="RATE[:BYTES]",
        help="error bursts: at each byte a burst starts with probability RATE and "
        "corrupts BYTES bytes (default 8)",
    )
    parser.add_argument(
        "--unplug-every", metavar="S", help="unplug the cable every S seconds (a schedule)"
    )
    parser.add_argument(
        "--unplug-for",
        metavar="S",
        default="2",
        help="length of each unplug, scheduled or by SIGUSR1 (default 2 s)",
    )
    parser.add_argument("--seed", metavar="N", help="seed of the faults, for repeatable runs")
    parser.add_argument("--link-a", metavar="PATH", help="also make PATH a symlink to end A")
    parser.add_argument("--link-b", metavar="PATH", help="also make PATH a symlink to end B")
    parser.set_defaults(func=run)


def _number(option: str, text: str | None, *, integer: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{option} takes {kind}, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{option} takes a finite number, got {text!r}")
    return value


def _positive(option: str, text: str | None) -> float | None:
    value = _number(option, text)
    if value is not None and value <= 0:
        raise ConfigError(f"{option} must be positive, got {text}")
    return value


def _probability(option: str, text: str | None) -> float:
    value = _number(option, text)
    if value is None:
        return 0.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{option} is a probability between 0 and 1, got {text}")
    return value


def config_from_args(args: argparse.Namespace) -> NullModemConfig:
    """The null-modem configuration the options ask for; ``ConfigError`` if they are bad."""
    baud = _number("--baud", args.baud, integer=True)
    if baud is not None and baud <= 0:
        raise ConfigError(f"--baud must be a positive number of bits per second, got {args.baud}")
    seed = _number("--seed", args.seed, integer=True)
    burst_rate, burst_bytes = 0.0, 8
    if args.burst is not None:
        rate_text, _, bytes_text = args.burst.partition(":")
        burst_rate = _probability("--burst RATE", rate_text)
        if bytes_text:
            length = _number("--burst BYTES", bytes_text, integer=True)
            assert length is not None
            if length < 1:
                raise ConfigError(f"--burst BYTES must be at least 1, got {bytes_text}")
            burst_bytes = int(length)
    unplug_for = _positive("--unplug-for", args.unplug_for)
    return NullModemConfig(
        baud=None if baud is None else int(baud),
        ber=_probability("--ber", args.ber),
        drop=_probability("--drop", args.drop),
        dup=_probability("--dup", args.dup),
        burst_rate=burst_rate,
        burst_bytes=burst_bytes,
        seed=None if seed is None else int(seed),
        unplug_every_s=_positive("--unplug-every", args.unplug_every),
        unplug_for_s=2.0 if unplug_for is None else unplug_for,
    )


@contextmanager
def _symlink(link: str | None, target: str, option: str) -> Iterator[None]:
    """Make ``link`` point at ``target`` for the duration; remove it afterwards."""
    if link is None:
        yield
        return
    if os.path.lexists(link):
        if not os.path.islink(link):
            raise ConfigError(f"{option} {link} exists and is not a symlink: choose another path")
        os.unlink(link)  # left over from an earlier run
    try:
        os.symlink(target, link)
    except OSError as exc:
        raise TransportError(f"cannot create {option} {link}: {exc.strerror}") from exc
    try:
        yield
    finally:
        if os.path.islink(link) and os.readlink(link) == target:
            os.unlink(link)


@contextmanager
def _signals(inbox: queue.SimpleQueue[int]) -> Iterator[None]:
    """Forward SIGINT, SIGTERM and SIGUSR1 to ``inbox`` for the duration."""

    def forward(signum: int, frame: FrameType | None) -> None:
        inbox.put(signum)

    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    previous = {signum: signal.signal(signum, forward) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _format(label: str, stats: DirectionStatistics) -> str:
    return (
        f"{label}: {stats.bytes_in} bytes in, {stats.bytes_out} out, "
        f"{stats.bits_flipped} bits flipped, {stats.bursts} bursts, "
        f"{stats.bytes_dropped} dropped, {stats.bytes_duplicated} duplicated, "
        f"{stats.bytes_lost_unplugged} lost unplugged, "
        f"{stats.bytes_lost_board_off} lost to a closed end"
    )


def run(args: argparse.Namespace) -> int:
    """Run the null-modem until SIGINT or SIGTERM."""
    config = config_from_args(args)
    inbox: queue.SimpleQueue[int] = queue.SimpleQueue()
    cable = NullModem(config)
    with (
        _signals(inbox),
        cable,
        _symlink(args.link_a, cable.path_a, "--link-a"),
        _symlink(args.link_b, cable.path_b, "--link-b"),
    ):
        print(f"A {cable.path_a}", flush=True)
        print(f"B {cable.path_b}", flush=True)
        while True:
            try:
                signum = inbox.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if signum == signal.SIGUSR1:
                cable.unplug(config.unplug_for_s)
            else:
                break
    stats = cable.statistics()
    print(_format("A->B", stats.a_to_b), file=sys.stderr)
    print(_format("B->A", stats.b_to_a), file=sys.stderr)
    print(f"unplugs: {stats.unplugs}, seed: {cable.seed}", file=sys.stderr, flush=True)
    return 0
