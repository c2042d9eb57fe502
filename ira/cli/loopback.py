"""``ira loopback``: the whole stack on one machine over a virtual null-modem.

A null-modem (two ptys), a board on end A exposing the default profile's devices
and a host on end B: discovery (the device table), DEVCALL round trips to the
``echo`` device, a device hot-added and hot-removed on the board, then a cable test
of the link itself.  virtio-net over TAP interfaces comes with the venet layer.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

from ira.busmodel.profile import DEFAULT_PROFILE, DeviceSpec, Profile
from ira.busrt import BoardService, HostClient
from ira.cli.linktest import measure, parse_size, print_report
from ira.errors import IraError
from ira.link.nullmodem import NullModem, NullModemConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("loopback", help="the whole stack on one machine (the demo)")
    p.add_argument("--baud", type=int, help="throttle the virtual null-modem")
    p.add_argument("--bytes", default="4M", help="size of the closing cable test (default 4M)")
    p.add_argument("-c", "--count", type=int, default=10, help="DEVCALL round trips")
    p.set_defaults(func=run)


def _table(host: HostClient) -> None:
    print(f"  {'id':>4}  {'type':<14} {'ver':>3}  attributes")
    for d in sorted(host.devices(), key=lambda d: d.device_id):
        attrs = ", ".join(f"{k}={v}" for k, v in d.attrs)
        print(f"  {d.device_id:>4}  {d.type:<14} {d.version:>3}  {attrs}")


def run(args: argparse.Namespace) -> int:
    with NullModem(NullModemConfig(baud=args.baud)) as nm:
        print(
            f"null-modem: A {nm.path_a}  <->  B {nm.path_b}"
            + (f" at {args.baud} baud" if args.baud else "")
        )
        with BoardService(nm.path_a, DEFAULT_PROFILE) as board, HostClient(nm.path_b) as host:
            host.wait_ready(timeout_s=10.0)
            print("\ndiscovery: the host sees the board's devices")
            _table(host)
            print(f"\nDEVCALL round trips to 'echo' ({args.count} x 64 bytes):")
            rtts = []
            for i in range(args.count):
                result = host.ping(bytes(64), timeout_s=5.0)
                rtts.append(result.round_trip_s * 1000)
                print(
                    f"  64 bytes from {DEFAULT_PROFILE.board} (echo): seq={i} "
                    f"status={result.status} time={rtts[-1]:.3f} ms"
                )
            print(
                f"  min/avg/max/mdev = {min(rtts):.3f}/{statistics.mean(rtts):.3f}/"
                f"{max(rtts):.3f}/{statistics.pstdev(rtts):.3f} ms"
            )
            extra = DeviceSpec(name="echo-2", type="echo")
            print("\nhotswap: adding a second echo device on the board ...")
            t0 = time.monotonic()
            board.apply_profile(Profile(DEFAULT_PROFILE.board, (*DEFAULT_PROFILE.devices, extra)))
            host.wait_for(lambda devs: len(devs) == len(DEFAULT_PROFILE.devices) + 1, 5.0)
            print(f"  seen by the host after {(time.monotonic() - t0) * 1000:.1f} ms")
            _table(host)
            print("hotswap: removing it again ...")
            t0 = time.monotonic()
            board.apply_profile(DEFAULT_PROFILE)
            host.wait_for(lambda devs: len(devs) == len(DEFAULT_PROFILE.devices), 5.0)
            print(f"  gone on the host after {(time.monotonic() - t0) * 1000:.1f} ms")
    print("\ncable test of the link layer:")
    with contextlib.ExitStack() as stack:
        nm2 = stack.enter_context(NullModem(NullModemConfig(baud=args.baud)))
        report = measure(
            nm2.path_a, nm2.path_b, parse_size(args.bytes), (1, 65536), 1, 600.0, stack
        )
    print_report(report)
    return 0 if report["ok"] else 1


__all__ = ["IraError", "register", "run"]
