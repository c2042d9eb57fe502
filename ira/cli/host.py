"""``ira host serve LINK... [--tap NAME --ip CIDR]...`` and ``ira host list LINK [--json]``.

``serve`` follows the boards on every LINK in one process and prints a line
each time a device appears or goes, a link goes down or up, or a board
restarts; it runs until SIGINT or SIGTERM.  With ``--tap NAME`` (and
``--ip CIDR``), given once per LINK in the same order, the board's
``virtio-net`` device on that link gets an interface here: it appears when
the device is discovered (with the MAC and MTU the device gives), loses
carrier when the device is dropped or the link goes down, and regains it
after rediscovery.  A link whose port goes away (``port gone``) is reopened
every 0.1 s doubling to 2 s while the other links are served; back within
the session timeout (15 s) its session resumes (``link up after ...;
session resumed``), later the board is seen as restarted and rediscovered.
A port that does not exist yet is waited for.  ``--give-up-after S`` stops
serving a link whose port stayed away S seconds; ``serve`` ends when no
link is left.  ``list`` waits for discovery and prints one row per
device: id, type, ABI version, attributes; a ``virtio`` device (its virtio
id is the ``virtio_device_id`` attribute) is initialised first, and the row
adds the features negotiated (``features=...``), its state if it did not
reach DRIVER_OK, or ``virtio_driver=none`` when no host driver knows its id
(with ``--json``: a ``virtio`` object).  A device that needed a reset also
shows how often it failed and was reset, how long ago it last failed, when
the next reset is due and why (``virtio_failures=1 virtio_resets=1
virtio_failed=2.5s_ago virtio_reason="..."``).  The last line says the
link's state (``link LINK: up since 0.4 s``); when the board did not answer
because the port is not there, ``list`` prints only that state
(``waiting for its port since 5.0 s``, or ``down since``) and exits 1.
With ``--json`` the output is ``{"link": {...}, "devices": [...]}``.

``serve --watch [DIR]`` also serves every board named in DIR (``/dev/ira``, where
``ira udev install`` names them) from the moment its name appears: a line when a
board is plugged in, unplugged (its link waits for it), back, or gone longer
than ``--forget-after`` (the session timeout by default), when its link is
closed; it comes back as a new session.  The names are looked at four times a
second.  Interfaces (``--tap``) are for the LINKs given, not watched boards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import assert_never

from ira.busmodel.events import BusEvent, BusReady, DeviceAdded, DeviceInfo, DeviceRemoved
from ira.cli.board import add_net_arguments, add_reconnect_argument, describe_port, give_up_after
from ira.cli.linkopts import add_psk_argument, link_config
from ira.errors import ConfigError, IraError
from ira.link.config import LinkConfig
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.runtime import HostClient, HostService, VirtioClients, watch
from ira.runtime.network import HostNet, tap_settings
from ira.runtime.port import PortEvent, PortState, PortStatus
from ira.venet.driver import NetDriverConfig
from ira.virtio.features import feature_names
from ira.virtio.host import BindingState, VirtioDeviceInfo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "host",
        help="the host side: discover and follow boards' devices",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    serve = verbs.add_parser("serve", help="follow the devices of boards on one or more links")
    serve.add_argument("links", nargs="*", metavar="LINK", help="link specs")
    serve.add_argument(
        "--watch", nargs="?", const=str(watch.DEFAULT_DIRECTORY), metavar="DIR",
        help="also serve every board named in DIR as it is plugged in "
        f"(default {watch.DEFAULT_DIRECTORY}, where `ira udev install` names boards)",
    )  # fmt: skip
    serve.add_argument(
        "--forget-after", type=float, default=FORGET_AFTER_S, metavar="S",
        help="with --watch: stop serving a board whose name has been gone this long "
        f"(default {FORGET_AFTER_S:g} s, the session timeout)",
    )  # fmt: skip
    add_net_arguments(serve, per_link=True)
    add_reconnect_argument(serve)
    add_psk_argument(serve)
    serve.add_argument(
        "--no-header-delta",
        action="store_true",
        help="send frames with their headers whole (no IRA_HDR_DELTA compression)",
    )
    serve.set_defaults(func=run_serve)
    lst = verbs.add_parser("list", help="print the devices of the board on LINK")
    lst.add_argument("link", metavar="LINK", help="link spec")
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    add_psk_argument(lst)
    lst.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="wait this long for the board"
    )
    lst.set_defaults(func=run_list)


#: a watched board gone this long is no longer served: its session is over anyway
FORGET_AFTER_S = LinkConfig().session_timeout_s


#: the most characters of attributes ``ira host serve`` prints in one line about a device
#: (a board may announce 32 attributes of 256 bytes; ``ira host list`` prints them whole)
MAX_ATTRS_SHOWN = 160


def _attrs(info: DeviceInfo, limit: int | None = None) -> str:
    text = " ".join(f"{k}={v}" for k, v in info.attrs)
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters; ira host list shows all)"


def describe(event: BusEvent) -> str | None:
    """One line about a discovery or link event, or None for the others."""
    match event:
        case DeviceAdded(device=d):
            text = f"+ device {d.device_id} {d.type} v{d.version} {_attrs(d, MAX_ATTRS_SHOWN)}"
            return text.rstrip()
        case DeviceRemoved(device=d, reason=reason):
            return f"- device {d.device_id} {d.type} ({reason})"
        case BusReady(device_count=n):
            return f"ready: {n} devices"
        case LinkDown(silent_s=s):
            return f"link down (nothing heard for {s:.1f} s)"
        case LinkUp(down_s=s):
            return f"link up after {s:.1f} s; session resumed"
        case PeerRestarted():
            return "board restarted"
        case SessionLost():
            return "session lost: the board will be seen as restarted"
    return None


def _nets(args: argparse.Namespace) -> list[HostNet | None]:
    """One ``HostNet`` per link (None where no ``--tap`` applies)."""
    taps: list[str] = args.tap or []
    ips: list[str | None] = args.ip or []
    if not taps:
        if ips:
            raise ConfigError("--ip gives the address of a --tap NAME: give --tap too")
        return [None] * len(args.links)
    if len(taps) != len(args.links):
        raise ConfigError(f"{len(args.links)} links need {len(args.links)} --tap, not {len(taps)}")
    if ips and len(ips) != len(taps):
        raise ConfigError(f"give --ip once per --tap ({len(taps)}), or not at all")
    config = NetDriverConfig(offloads=not args.no_offload, header_delta=not args.no_header_delta)
    return [
        HostNet.with_tap(tap_settings(tap, ip, offloads=not args.no_offload), config)
        for tap, ip in zip(taps, ips or [None] * len(taps), strict=True)
    ]


def _poster(client: HostClient) -> Callable[[Callable[[], None]], None]:
    """Runs a function on the client's loop thread (its runtime exists once it is started)."""
    return lambda fn: client.runtime.post(fn)


def run_serve(args: argparse.Namespace) -> int:
    if not args.links and args.watch is None:
        raise ConfigError("give the links to serve, or --watch [DIR] to serve boards as they come")
    if args.forget_after <= 0:
        raise ConfigError(
            f"--forget-after {args.forget_after:g}: give a positive number of seconds"
        )
    stop = threading.Event()
    out_lock = threading.Lock()
    give_up_s = give_up_after(args)
    config = link_config(args.psk_file)
    nets = _nets(args)
    by_link: dict[str, HostNet] = {}

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def say(client: HostClient, line: str) -> None:
        with out_lock:  # one link thread per link: keep their lines whole
            sys.stdout.write(f"{client.name}: {line}\n")
            sys.stdout.flush()

    def on_event(client: HostClient, event: BusEvent) -> None:
        net = by_link.get(client.name)
        if net is not None:
            net.on_event(event)
        if isinstance(event, LinkDown) and client.port.status is not PortStatus.UP:
            return  # "port gone" said it
        line = describe(event)
        if line is not None:
            say(client, line)

    def on_port_event(client: HostClient, event: PortEvent) -> None:
        say(client, describe_port(event, client.name))

    clients: list[VirtioClients | None] = [None if n is None else n.clients() for n in nets]
    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.ExitStack() as stack:
            service = HostService(
                args.links,
                link_config=config,
                on_event=on_event,
                virtio_clients=clients,
                on_port_event=on_port_event,
                give_up_after_s=give_up_s,
            )
            for client, net in zip(service.clients, nets, strict=True):
                if net is not None:
                    by_link[client.name] = net
                    net.bind(_poster(client))
                    stack.callback(net.close)
            stack.enter_context(service)
            follower = None
            if args.watch is not None:
                boards = watch.BoardDirectory(Path(args.watch))
                follower = watch.BoardFollower(boards, service, forget_after_s=args.forget_after)
            _serve(service, stop, say, follower)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _serve(
    service: HostService,
    stop: threading.Event,
    say: Callable[[HostClient, str], None],
    follower: watch.BoardFollower[HostClient] | None = None,
) -> None:
    """Until SIGINT/SIGTERM: a link that fails is reported once and the others go on;
    with none left (and none to watch for), the last failure ends the service."""
    reported: set[str] = set()
    poll_s = 0.5 if follower is None else watch.POLL_S
    while True:
        if follower is not None:
            _follow(follower, say)
        if stop.wait(poll_s):
            return
        failed = service.failed()
        if follower is None and len(failed) == len(service.clients):
            service.raise_if_failed()
        for client, error in failed:
            if client.name not in reported:
                reported.add(client.name)
                say(client, f"no longer served: {error}")


def _follow(
    follower: watch.BoardFollower[HostClient], say: Callable[[HostClient, str], None]
) -> None:
    """One look at the watched directory; a line for every board that came, went or is back."""
    done = follower.poll(now=time.monotonic())
    served = follower.served
    directory = follower.boards.directory
    for board in done.added:
        say(served[board.name], f"board {board.name} plugged in ({directory}): serving it")
    for board in done.back:
        say(served[board.name], f"board {board.name} is back")
    for board in done.gone:
        say(served[board.name], f"board {board.name} unplugged: its link waits for it")
    for board, error in done.failed:
        sys.stdout.write(f"{board.spec}: board {board.name} cannot be served: {error}\n")
        sys.stdout.flush()
    for board in done.forgotten:
        sys.stdout.write(
            f"{board.spec}: board {board.name} gone for {follower.forget_after_s:g} s: "
            "no longer served\n"
        )
        sys.stdout.flush()


def _virtio_json(info: VirtioDeviceInfo, now: float) -> dict[str, object]:
    n = info.negotiation
    return {
        "id": info.virtio_id,
        "state": "unbound" if info.state is None else info.state.value,
        "features": feature_names(n.accepted) if n is not None and n.features_ok else [],
        "offered": feature_names(n.offered) if n is not None else [],
        "features_ok": n is not None and n.features_ok,
        "reason": info.reason,
        "failures": info.failures,
        "resets": info.resets,
        "failed_s_ago": None if info.failed_at is None else round(now - info.failed_at, 3),
        "reset_in_s": None if info.retry_at is None else round(max(0.0, info.retry_at - now), 3),
    }


def _virtio_text(info: VirtioDeviceInfo, now: float) -> str:
    """What the host made of a virtio device, as attributes (its virtio id is the board's)."""
    n = info.negotiation
    if info.state is None:
        return "virtio_driver=none"
    state = "" if info.state is BindingState.READY else f"virtio_state={info.state.value} "
    if n is None or not n.features_ok:
        text = f"{state}features=-".strip()
    else:
        text = f"{state}features={','.join(feature_names(n.accepted)) or '-'}"
    return text + _failures_text(info, now)


def _failures_text(info: VirtioDeviceInfo, now: float) -> str:
    """Failures and resets, when there were any: counts, how long ago, the next reset, why."""
    if not info.failures and info.state is not BindingState.FAILED:
        return ""
    parts = [f"virtio_failures={info.failures}", f"virtio_resets={info.resets}"]
    if info.failed_at is not None:
        parts.append(f"virtio_failed={now - info.failed_at:.1f}s_ago")
    if info.retry_at is not None:
        parts.append(f"virtio_reset_in={max(0.0, info.retry_at - now):.1f}s")
    if info.reason:
        parts.append(f"virtio_reason={json.dumps(info.reason)}")
    return " " + " ".join(parts)


def link_state_text(name: str, port: PortState, now: float) -> str:
    """``link NAME: up since 0.4 s`` (or down / waiting for its port since, and why)."""
    ago = f"{max(0.0, now - port.since):.1f} s"
    match port.status:
        case PortStatus.UP:
            return f"link {name}: up since {ago}"
        case PortStatus.DOWN:
            return f"link {name}: down since {ago} ({port.reason})"
        case PortStatus.WAITING:
            return f"link {name}: waiting for its port since {ago} ({port.reason})"
    assert_never(port.status)


def link_state_json(name: str, port: PortState, now: float) -> dict[str, object]:
    return {
        "spec": name,
        "state": port.status.value,
        "since_s": round(max(0.0, now - port.since), 3),
        "reason": port.reason,
    }


def run_list(args: argparse.Namespace) -> int:
    if not 0 < args.timeout < math.inf:
        raise ConfigError(f"--timeout {args.timeout}: give a positive number of seconds")
    with HostClient(args.link, link_config=link_config(args.psk_file)) as client:
        try:
            devices = client.list_devices(timeout_s=args.timeout)
        except IraError:
            port = client.port
            if port.status is PortStatus.UP:
                raise
            now = time.monotonic()
            if args.json:
                print(json.dumps({"link": link_state_json(args.link, port, now), "devices": []}))
            else:
                print(link_state_text(args.link, port, now))
            return 1
        virtio = {v.device_id: v for v in client.virtio_devices(timeout_s=args.timeout)}
        port = client.port
        now = time.monotonic()  # the clock the bus stamps failures with
    if args.json:
        rows: list[dict[str, object]] = []
        for d in devices:
            row: dict[str, object] = {
                "id": d.device_id,
                "type": d.type,
                "version": d.version,
                "attributes": dict(d.attrs),
            }
            if d.device_id in virtio:
                row["virtio"] = _virtio_json(virtio[d.device_id], now)
            rows.append(row)
        listing = {"link": link_state_json(args.link, port, now), "devices": rows}
        print(json.dumps(listing, indent=2))
        return 0
    width = max([len("TYPE"), *(len(d.type) for d in devices)])
    print(f"{'ID':>4}  {'TYPE':<{width}}  {'VERSION':>7}  ATTRIBUTES")
    for d in devices:
        attrs = _attrs(d)
        if d.device_id in virtio:
            attrs = f"{attrs} {_virtio_text(virtio[d.device_id], now)}"
        print(f"{d.device_id:>4}  {d.type:<{width}}  {d.version:>7}  {attrs}".rstrip())
    print(link_state_text(args.link, port, now))
    return 0
