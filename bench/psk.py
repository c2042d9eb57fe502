"""Pre-shared key benchmark: what authenticating every frame costs a DEVCALL.

Two board/host pairs run in this process, each over its own unthrottled virtual
null-modem: one with a pre-shared key (every frame carries a MAC), one
without.  Blocks of 64-byte DEVCALLs to each pair's ``echo`` device alternate,
so both see the same machine; the figure is the median round trip with the key
divided by the median without (target <= 1.1), and the same for 4 KiB calls.
The MAC's own cost per frame is given too (``ira.wire.link.authenticate``), and
that of keyed BLAKE2s, the standard library's other MAC, on the same bytes: why
the link uses HMAC-SHA-256.

Usage: ``python bench/psk.py [--json] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import time
import timeit
from collections.abc import Callable

from ira import native
from ira.busmodel.devices.echo import EchoFunc
from ira.link.config import LinkConfig
from ira.runtime import BoardService, HostClient
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.wire.link import Data, authenticate, encode, mac_key

BLOCKS = 40
KEY = b"a bench key of thirty-two bytes!"


def _caller(host: HostClient, size: int) -> Callable[[], float]:
    echo = host.open("echo")
    msg = os.urandom(size)

    def devcall() -> float:
        start = time.perf_counter()
        result = host.call(echo, EchoFunc.ECHO, msg)
        elapsed = time.perf_counter() - start
        if result.payload != msg:
            raise SystemExit("echo returned something else")
        return elapsed

    return devcall


def round_trips(plain: HostClient, keyed: HostClient, size: int, count: int) -> tuple[float, float]:
    """Median DEVCALL round trip without and with the key, in alternating blocks."""
    calls = {"plain": _caller(plain, size), "keyed": _caller(keyed, size)}
    for call in calls.values():
        for _ in range(20):  # warm up
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    block = max(1, count // BLOCKS)
    for i in range(BLOCKS):
        # which goes first alternates too, so neither always follows an idle pause
        order = ("plain", "keyed") if i % 2 == 0 else ("keyed", "plain")
        for name in order:
            samples[name].extend(calls[name]() for _ in range(block))
    return statistics.median(samples["plain"]), statistics.median(samples["keyed"])


def mac_cost(size: int) -> float:
    """Seconds to add the MAC to one DATA frame of ``size`` payload bytes."""
    frame = encode(Data(0, 0, 0, 0, 16, 1, 0, os.urandom(size)))
    key = mac_key(KEY)
    n = 20_000
    return timeit.timeit(lambda: authenticate(frame, key, 1, 2), number=n) / n


def blake2s_cost(size: int) -> float:
    """Seconds for a keyed BLAKE2s-128 of a DATA frame of ``size`` payload bytes."""
    frame = encode(Data(0, 0, 0, 0, 16, 1, 0, os.urandom(size)))
    key = os.urandom(32)
    n = 20_000
    return (
        timeit.timeit(
            lambda: hashlib.blake2s(frame, digest_size=16, key=key, salt=b"12345678").digest(),
            number=n,
        )
        / n
    )


def run(quick: bool) -> dict[str, float]:
    q = 4 if quick else 1
    results: dict[str, float] = {}
    keyed_config = LinkConfig(psk=KEY)
    with contextlib.ExitStack() as stack:
        pairs = []
        for config in (None, keyed_config):
            nm = stack.enter_context(NullModem(NullModemConfig()))
            stack.enter_context(BoardService(nm.path_a, link_config=config))
            host = stack.enter_context(HostClient(nm.path_b, link_config=config))
            host.wait_ready()
            pairs.append(host)
        plain, keyed = pairs
        for size in (64, 4096):
            without, with_key = round_trips(plain, keyed, size, 2000 // q)
            results[f"devcall_{size}_plain_s"] = without
            results[f"devcall_{size}_psk_s"] = with_key
            results[f"devcall_{size}_ratio"] = with_key / without
    for size in (64, 4096):
        results[f"mac_{size}_s"] = mac_cost(size)
        results[f"blake2s_{size}_s"] = blake2s_cost(size)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    r = run(args.quick)
    if args.json:
        print(json.dumps({**r, "build": native.status()}, sort_keys=True))
        return
    print(f"build: {native.status()}")
    for size in (64, 4096):
        print(
            f"{size}-byte DEVCALL round trip with PSK {r[f'devcall_{size}_psk_s'] * 1e6:.0f} us "
            f"/ without {r[f'devcall_{size}_plain_s'] * 1e6:.0f} us = "
            f"{r[f'devcall_{size}_ratio']:.3f} (target <= 1.1)"
        )
    for size in (64, 4096):
        print(
            f"MAC of a DATA frame of {size} bytes: {r[f'mac_{size}_s'] * 1e6:.2f} us "
            f"(keyed BLAKE2s of it: {r[f'blake2s_{size}_s'] * 1e6:.2f} us)"
        )


if __name__ == "__main__":
    main()
