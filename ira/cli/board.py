"""``ira board serve [LINK] [--profile FILE] [--tap NAME --ip CIDR [--mtu N]]``: a board.

A profile (docs/PROFILES.md) may hold everything: the link (``[link]``: spec,
baud, flow control), the network interface (``[net]``: TAP name, address,
MTU) and the devices; ``ira board serve --profile FILE`` then needs no other
argument.  LINK, ``--baud``, ``--flow-control``, ``--tap``, ``--ip``, ``--mtu``
and ``--no-offload`` override the profile's values.  The whole profile is
checked before anything is opened; an error names the file, line and key.

The board runs until SIGINT or SIGTERM.  Hotswap by hand: edit the profile and
send SIGHUP (``kill -HUP PID``; the PID is printed at start).  The board
re-reads the profile and makes its container match it: devices whose entry
is gone or changed are removed (the host sees DEVDROP), new entries are added
(DEVADD); the others keep running untouched.  A profile that does not parse
is reported on one line and the running devices are kept.  Without
``--profile`` the board exposes board-info, echo, counter and ring-loopback.

With ``--tap NAME`` the board creates a TAP interface (address ``--ip``, MTU
``--mtu``) and bridges it to its ``virtio-net`` device (one named ``net0`` is
added when the profile has none): the host's interface appears when the host
discovers the device.  The board's interface has carrier while a host drives
the device and the link is up.  ``--no-offload`` sends plain frames (no
virtio-net headers, no checksum or segmentation offloads).  The interface's
MTU is ``--mtu``, else the device's ``mtu`` option in the profile (else
1500): a reload that changes the option changes the interface's MTU and,
through the re-added device, the host's.

A port that goes away (a USB-serial adapter pulled, a gadget re-enumerating)
is reopened every 0.1 s doubling to 2 s, and a port that does not exist yet
is waited for; the board says so once (``waiting for ...``, ``port gone``,
``port back``).  A host that comes back within the session timeout (15 s)
resumes its session with nothing lost.  ``--give-up-after S`` ends the board
when the port stayed away S seconds; errors a reopen cannot cure (permission
denied, not a serial port) end it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from dataclasses import replace
from types import FrameType
from typing import assert_never

from ira.cli.linkopts import add_psk_argument, link_config
from ira.errors import ConfigError
from ira.runtime import BoardService, ProfileChange
from ira.runtime.network import BoardNet, tap_settings
from ira.runtime.port import PortBack, PortEvent, PortLost, PortWaiting
from ira.runtime.profile import (
    DEFAULT_PROFILE,
    MAX_BAUD,
    MIN_BAUD,
    DeviceSpec,
    FlowControl,
    NetSettings,
    Profile,
    load_profile,
)
from ira.runtime.tap import TAP_MAX_MTU
from ira.wire.venet import MIN_MTU


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "board",
        help="the board side: expose devices over a link",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    serve = verbs.add_parser(
        "serve",
        help="serve a profile's devices over LINK (SIGHUP reloads the profile)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "link",
        metavar="LINK",
        nargs="?",
        help="link spec, e.g. /dev/ttyUSB0 or a pty path (default: the profile's [link] spec)",
    )
    serve.add_argument("--profile", metavar="FILE", help="board profile (TOML)")
    serve.add_argument("--baud", type=int, metavar="N", help="serial line rate (the profile's)")
    serve.add_argument(
        "--flow-control",
        choices=[f.value for f in FlowControl],
        help="serial flow control (the profile's, else none)",
    )
    add_psk_argument(serve)
    add_net_arguments(serve)
    add_reconnect_argument(serve)
    serve.add_argument(
        "--mtu", type=int, metavar="N", help="MTU of the TAP and the device (68-65535; 1500)"
    )
    serve.set_defaults(func=run_serve)


def add_net_arguments(parser: argparse.ArgumentParser, *, per_link: bool = False) -> None:
    """``--tap``, ``--ip`` and ``--no-offload`` (repeated once per link when ``per_link``)."""
    action = "append" if per_link else "store"
    each = " (once per LINK, in order)" if per_link else ""
    parser.add_argument(
        "--tap", action=action, metavar="NAME", help=f"create TAP interface NAME{each}"
    )
    parser.add_argument(
        "--ip", action=action, metavar="CIDR", help=f"its address, e.g. 10.0.0.1/24{each}"
    )
    parser.add_argument(
        "--no-offload",
        action="store_true",
        help="plain frames: no virtio-net headers, no checksum/GSO offloads",
    )


def add_reconnect_argument(parser: argparse.ArgumentParser) -> None:
    """``--give-up-after S``: how long a port may stay away before the command ends."""
    parser.add_argument(
        "--give-up-after",
        type=float,
        metavar="S",
        help="stop when a port stayed away S seconds (default: wait for it forever)",
    )


def give_up_after(args: argparse.Namespace) -> float | None:
    """``--give-up-after``, validated before any port is opened."""
    value: float | None = args.give_up_after
    if value is not None and not value > 0:
        raise ConfigError(f"--give-up-after {value:g}: give a positive number of seconds")
    return value


def describe_port(event: PortEvent, link: str) -> str:
    """One line about a port going away, being waited for, or coming back."""
    match event:
        case PortWaiting(reason=reason):
            return f"waiting for {link} to appear ({reason})"
        case PortLost(reason=reason):
            return f"port gone ({reason}); reopening it"
        case PortBack(down_s=s):
            return f"port back after {s:.1f} s"
    assert_never(event)


def _describe(change: ProfileChange) -> str:
    parts = [f"+{name}" for name in change.added] + [f"-{name}" for name in change.removed]
    return " ".join(parts) or "no change"


def _load(path: str | None, args: argparse.Namespace) -> Profile:
    """The profile with the command line's overrides; a ``virtio-net`` device ``net0``
    is added when there is a network interface and the profile has no such device."""
    profile = DEFAULT_PROFILE if path is None else load_profile(path)
    if profile.role != "board":
        raise ConfigError(f"{path}: role = {profile.role!r}: run `ira host serve` for that side")
    link = replace(
        profile.link,
        spec=args.link or profile.link.spec,
        baud=args.baud if args.baud is not None else profile.link.baud,
        flow_control=(
            FlowControl(args.flow_control) if args.flow_control else profile.link.flow_control
        ),
    )
    net = profile.net
    if args.tap is not None:
        net = NetSettings(args.tap) if net is None else replace(net, tap=args.tap)
    if net is None:
        if args.ip is not None or args.mtu is not None or args.no_offload:
            raise ConfigError(
                "--ip, --mtu and --no-offload configure the interface of --tap NAME "
                "(or of the profile's [net]): give --tap too"
            )
    else:
        net = replace(
            net,
            address=args.ip if args.ip is not None else net.address,
            mtu=args.mtu if args.mtu is not None else net.mtu,
            offloads=net.offloads and not args.no_offload,
        )
    devices = profile.devices
    if net is not None and not any(spec.type == "virtio-net" for spec in devices):
        devices = (*devices, DeviceSpec(name="net0", type="virtio-net"))
    return replace(profile, devices=devices, link=link, net=net)


def _net_mtu(profile: Profile) -> int | None:
    """``[net]``'s MTU (or ``--mtu``), else the profile's network device's ``mtu`` option."""
    if profile.net is not None and profile.net.mtu is not None:
        return profile.net.mtu
    for spec in profile.devices:
        if spec.type == "virtio-net":
            value = spec.option("mtu")
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


def run_serve(args: argparse.Namespace) -> int:
    profile = _load(args.profile, args)
    link_spec = profile.link.link_spec()
    if args.baud is not None and not MIN_BAUD <= args.baud <= MAX_BAUD:
        raise ConfigError(f"--baud {args.baud} is out of range ({MIN_BAUD}..{MAX_BAUD})")
    if args.mtu is not None and not MIN_MTU <= args.mtu <= TAP_MAX_MTU:
        raise ConfigError(f"--mtu {args.mtu} is out of range ({MIN_MTU}..{TAP_MAX_MTU})")
    net_settings = profile.net
    give_up_s = give_up_after(args)
    # --psk-file, else the profile's [link] psk_file (read now: before the port opens)
    config = link_config(args.psk_file or profile.link.psk_file)
    stop = threading.Event()
    reload = threading.Event()
    #: the loop thread's port lines wait for the header (printed after the board starts)
    out_lock = threading.Lock()

    def on_port_event(event: PortEvent) -> None:
        with out_lock:
            print(describe_port(event, link_spec), flush=True)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload.set()
        stop.set()  # wake the wait below

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGINT, on_stop),
            (signal.SIGTERM, on_stop),
            (signal.SIGHUP, on_hup),
        )
    }
    try:
        with contextlib.ExitStack() as stack:
            net: BoardNet | None = None
            if net_settings is not None:
                settings = tap_settings(
                    net_settings.tap,
                    net_settings.address,
                    _net_mtu(profile),
                    offloads=net_settings.offloads,
                )
                # the TAP exists before the link; its frames go to the board's loop thread
                net = BoardNet.with_tap(
                    settings,
                    profile.board,
                    lambda fn: board.runtime.post(fn),
                    fixed_mtu=net_settings.mtu is not None,
                )
                stack.callback(net.close)
            board = BoardService(
                link_spec,
                profile,
                link_config=config,
                on_event=None if net is None else net.on_event,
                net_port=None if net is None else net.port_for,
                on_port_event=on_port_event,
                give_up_after_s=give_up_s,
            )
            names = ", ".join(spec.name for spec in profile.devices) or "none"
            with out_lock:
                stack.enter_context(board)
                print(
                    f"board {profile.board} serving on {link_spec} (pid {os.getpid()}; "
                    f"SIGHUP reloads the profile): {names}",
                    flush=True,
                )
                if net is not None:
                    port = net.loop_port
                    print(
                        f"interface {port.name} {' '.join(settings.addresses) or '(no address)'} "
                        f"mtu {port.mtu}"
                        f"{'' if port.vnet_hdr else ' (no offloads)'}",
                        flush=True,
                    )
            while True:
                stop.wait(0.5)
                board.runtime.raise_if_failed()
                if reload.is_set():
                    reload.clear()
                    stop.clear()
                    try:
                        reloaded = _load(args.profile, args)
                        change = board.apply_profile(reloaded)
                    except ConfigError as exc:
                        print(f"ira board: reload refused: {exc}", file=sys.stderr, flush=True)
                        continue
                    kept = [
                        f"[{name}]"
                        for name, old, new in (
                            ("link", profile.link, reloaded.link),
                            ("net", profile.net, reloaded.net),
                        )
                        if old != new
                    ]
                    note = f" ({' and '.join(kept)} kept until a restart)" if kept else ""
                    print(f"profile reloaded: {_describe(change)}{note}", flush=True)
                elif stop.is_set():
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
