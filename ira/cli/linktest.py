"""``ira linktest LINK_A LINK_B``: the cable test.

Both ends of one link run in this process (the engine: ``ira.tools.linktest``).
A pushes ``--bytes`` of random messages (sizes drawn log-uniformly from
``--size``) to B, which checks every byte, the order, and that each message
arrives exactly once.  The report gives goodput, efficiency against the line
rate when ``--baud`` is known, retransmissions, drops by reason and link events.
Exit status 0 only when everything arrived intact, in order, exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys

from ira.cli.linkopts import add_psk_argument, read_psk
from ira.errors import ConfigError
from ira.link.config import LinkConfig
from ira.tools.linktest import measure, parse_range, parse_size


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
    add_psk_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    total = parse_size(args.bytes)
    sizes = parse_range(args.size, maximum=LinkConfig().max_message_bytes)
    if args.nullmodem == bool(args.links) or (args.links and len(args.links) != 2):
        raise ConfigError("give two links (LINK_A LINK_B) or --nullmodem")
    if args.baud is not None and args.baud <= 0:
        raise ConfigError(f"--baud {args.baud}: give a positive number of bits per second")
    for option, value in (("--ber", args.ber), ("--drop", args.drop)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{option} {value}: a probability between 0 and 1")
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        raise ConfigError(f"--timeout {args.timeout}: give a positive number of seconds")
    psk = None if args.psk_file is None else read_psk(args.psk_file)
    timeout = args.timeout
    if timeout is None:
        timeout = 60.0 + (3 * total / (args.baud / 10) if args.baud else total / 1e6)
    with contextlib.ExitStack() as stack:
        links: list[str] = args.links
        if args.nullmodem:
            from ira.tools.nullmodem import NullModem, NullModemConfig

            nm = stack.enter_context(
                NullModem(
                    NullModemConfig(baud=args.baud, ber=args.ber, drop=args.drop, seed=args.seed)
                )
            )
            links = [nm.path_a, nm.path_b]
        report = measure(links[0], links[1], total, sizes, args.seed, timeout, stack, psk=psk)
    report["baud"] = args.baud
    if args.baud:
        report["efficiency"] = report["goodput_bytes_per_s"] / (args.baud / 10)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


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


__all__ = ["print_report", "register", "run"]
