"""``ira loopback [--usb]``: the whole stack on one machine over a virtual null-modem.

A null-modem (two ptys), a board on end A exposing the default profile's devices
and a ``virtio-net`` device, and a host on end B: discovery (the device table),
DEVCALL round trips to the ``echo`` device, a device hot-added and hot-removed on
the board, then the network: as root, the board's TAP lives in one network
namespace and the host's in another, and ``ping`` and a TCP transfer cross the
link between them; without root an in-process frame exchange stands in.  Last, a
cable test of the link itself.  A summary closes the network part: devices,
interfaces, RTTs, goodput and link statistics.

With ``--usb`` the link is a USB cable instead: the board on a FunctionFS
gadget (``ffs://ira-loop``) bound to a dummy_hcd UDC, the host on libusb
(``usb://1d6b:0104/ira-loop``).  A kernel without dummy_hcd gets the same
command run in a QEMU guest that has it (``ira.tools.usbvm``).

Everything runs in this process (board and host are threads; each TAP is created
inside its namespace).  The namespaces, interfaces and threads are gone when the
command ends, also on SIGINT or SIGTERM; namespaces that a killed earlier run left
behind are removed at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ira import __version__, native
from ira.cli.linktest import print_report
from ira.errors import ConfigError, IraError, TransportError
from ira.link.core import LinkStatistics
from ira.runtime import BoardService, HostClient
from ira.runtime.endpoint import FrameEndpoint
from ira.runtime.netns import NetNs, remove_stale
from ira.runtime.network import BoardNet, HostNet, TapSettings
from ira.runtime.profile import DEFAULT_PROFILE, DeviceSpec, Profile
from ira.tools.linktest import measure, parse_size
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.transports.gadget import udc_names
from ira.venet.counters import DeltaStatistics, NetDriverStatistics
from ira.venet.netspec import check_mtu, feature_list, format_mac
from ira.wire.venet import VNET_HDR_BYTES

BOARD_IP, HOST_IP = "10.77.0.1", "10.77.0.2"
NET = DeviceSpec(name="net0", type="virtio-net")
PROFILE = Profile(DEFAULT_PROFILE.board, (*DEFAULT_PROFILE.devices, NET))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("loopback", help="the whole stack on one machine (the demo)")
    p.add_argument("--baud", type=int, help="throttle the virtual null-modem")
    p.add_argument("--bytes", default="4M", help="size of the closing cable test (default 4M)")
    p.add_argument("-c", "--count", type=int, default=10, help="DEVCALL round trips and pings")
    p.add_argument("--tcp-bytes", default="8M", help="size of the TCP transfer across (default 8M)")
    p.add_argument("--mtu", type=int, default=1500, help="MTU of the interfaces (default 1500)")
    p.add_argument(
        "--usb",
        action="store_true",
        help="over a USB gadget (FunctionFS <-> libusb on dummy_hcd: here when this kernel "
        "has it, else in a QEMU guest) instead of a null-modem",
    )
    p.set_defaults(func=run)


def missing_for_namespaces() -> str | None:
    """What ping across two network namespaces needs that is missing here, or None."""
    if os.geteuid() != 0:
        return "root (TAP interfaces and network namespaces): run `sudo make run`"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun (a kernel with CONFIG_TUN, or the device passed in)"
    for tool, package in (("ip", "iproute2"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            return f"the {tool} command (Debian: {package})"
    return None


def _table(host: HostClient) -> None:
    print(f"  {'id':>4}  {'type':<14} {'ver':>3}  attributes")
    for d in sorted(host.devices(), key=lambda d: d.device_id):
        attrs = ", ".join(f"{k}={v}" for k, v in d.attrs)
        print(f"  {d.device_id:>4}  {d.type:<14} {d.version:>3}  {attrs}")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like SIGINT, so every ``with`` block cleans up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_options(args: argparse.Namespace) -> int:
    """Every option, before anything is opened; returns ``--bytes``."""
    total = parse_size(args.bytes)
    parse_size(args.tcp_bytes, option="--tcp-bytes")
    if args.count < 1:
        raise ConfigError(f"-c {args.count}: give at least 1")
    if args.baud is not None and args.baud <= 0:
        raise ConfigError(f"--baud {args.baud}: give a positive number of bits per second")
    try:
        check_mtu(args.mtu)
    except ConfigError as exc:
        raise ConfigError(f"--mtu {args.mtu}: {exc}") from None
    return total


def run(args: argparse.Namespace) -> int:
    total = _check_options(args)
    if args.usb and args.baud:
        raise ConfigError("--baud throttles the null-modem; a USB link has no baud rate")
    if args.usb and not _dummy_udcs():
        return _in_guest(args)
    with _sigterm_interrupts():
        ok = _stack_demo(args)
        print("\ncable test of the link layer:")
        with contextlib.ExitStack() as stack:
            if args.usb:
                path_a, path_b = _usb_links(_dummy_udcs()[0])
            else:
                nm2 = stack.enter_context(NullModem(NullModemConfig(baud=args.baud)))
                path_a, path_b = nm2.path_a, nm2.path_b
            report = measure(path_a, path_b, total, (1, 65536), 1, 600.0, stack)
        print_report(report)
    return 0 if ok and report["ok"] else 1


def _dummy_udcs() -> list[str]:
    """The dummy_hcd device controllers of this kernel (root only: gadgets need it)."""
    if os.geteuid() != 0:
        return []
    return [name for name in udc_names() if name.startswith("dummy_udc")]


def _usb_links(udc: str) -> tuple[str, str]:
    """The board's and the host's end of a gadget on ``udc``."""
    return f"ffs://ira-loop?udc={udc}", "usb://1d6b:0104/ira-loop?wait=15"


def _in_guest(args: argparse.Namespace) -> int:
    """This kernel has no dummy_hcd: run the same command in the USB guest."""
    from ira.tools.usbvm import GuestVM, build_image

    argv = ["loopback", "--usb", "--bytes", args.bytes, "-c", str(args.count)]
    argv += ["--tcp-bytes", args.tcp_bytes, "--mtu", str(args.mtu)]
    print("no dummy_hcd in this kernel: running in a QEMU guest with one", flush=True)
    with GuestVM(build_image()) as vm:
        command = " ".join([sys.executable, "-m", "ira", *argv])
        result = vm.run(command, timeout_s=1800)
    print(result.output, end="")
    return result.returncode


@dataclass
class _Net:
    """Both ends' network side, and where their interfaces live."""

    board: BoardNet
    host: HostNet
    namespaces: tuple[NetNs, NetNs] | None
    #: the in-process ends standing in for the two network stacks (without root)
    stacks: tuple[FrameEndpoint, FrameEndpoint] | None = None


def _open_net(stack: contextlib.ExitStack, board: list[BoardService], mtu: int) -> _Net:
    def post(fn: Callable[[], None]) -> None:
        board[0].runtime.post(fn)

    missing = missing_for_namespaces()
    if missing is None:
        remove_stale()
        ns_a = stack.enter_context(NetNs())
        ns_b = stack.enter_context(NetNs())
        settings = TapSettings("ira0", (f"{BOARD_IP}/24",), mtu, netns=ns_a)
        board_net = BoardNet.with_tap(settings, PROFILE.board, post)
        stack.callback(board_net.close)
        host_net = HostNet.with_tap(TapSettings("ira0", (f"{HOST_IP}/24",), netns=ns_b))
        stack.callback(host_net.close)
        return _Net(board_net, host_net, (ns_a, ns_b))
    print(f"\nnetwork: needs {missing}; an in-process frame exchange stands in")
    board_stack, board_port = FrameEndpoint.pair(
        vnet_hdr=True, mtu=mtu, names=("board-stack", "board0")
    )
    host_stack, host_port = FrameEndpoint.pair(
        vnet_hdr=True, mtu=mtu, names=("host-stack", "host0")
    )
    board_net = BoardNet(board_port, post)
    stack.callback(board_net.close)
    host_net = HostNet(lambda settings: host_port, vnet_hdr=True)
    stack.callback(host_net.close)
    stack.callback(board_stack.close)
    stack.callback(host_stack.close)
    return _Net(board_net, host_net, None, (board_stack, host_stack))


def _stack_demo(args: argparse.Namespace) -> bool:
    with contextlib.ExitStack() as stack:
        print(f"ira {__version__}, {native.status()}")
        if args.usb:
            path_a, path_b = _usb_links(_dummy_udcs()[0])
            print(f"USB gadget: board {path_a}  <->  host {path_b}")
        else:
            nm = stack.enter_context(NullModem(NullModemConfig(baud=args.baud)))
            path_a, path_b = nm.path_a, nm.path_b
            print(
                f"null-modem: A {nm.path_a}  <->  B {nm.path_b}"
                + (f" at {args.baud} baud" if args.baud else "")
            )
        boards: list[BoardService] = []
        net = _open_net(stack, boards, args.mtu)
        board = BoardService(
            path_a, PROFILE, on_event=net.board.on_event, net_port=net.board.port_for
        )
        boards.append(board)
        host = HostClient(
            path_b,
            on_event=lambda client, event: net.host.on_event(event),
            virtio_clients=net.host.clients(),
        )
        net.host.bind(lambda fn: host.runtime.post(fn))
        stack.enter_context(board)
        stack.enter_context(host)
        host.wait_ready(timeout_s=10.0)
        print("\ndiscovery: the host sees the board's devices")
        _table(host)
        _devcalls(host, args.count)
        _hotswap(board, host)
        return _network(net, host, args)


def _devcalls(host: HostClient, count: int) -> None:
    print(f"\nDEVCALL round trips to 'echo' ({count} x 64 bytes):")
    rtts = []
    for i in range(count):
        result = host.ping(bytes(64), timeout_s=5.0)
        rtts.append(result.round_trip_s * 1000)
        print(
            f"  64 bytes from {PROFILE.board} (echo): seq={i} "
            f"status={result.status} time={rtts[-1]:.3f} ms"
        )
    print(
        f"  min/avg/max/mdev = {min(rtts):.3f}/{statistics.mean(rtts):.3f}/"
        f"{max(rtts):.3f}/{statistics.pstdev(rtts):.3f} ms"
    )


def _hotswap(board: BoardService, host: HostClient) -> None:
    extra = DeviceSpec(name="echo-2", type="echo")
    print("\nhotswap: adding a second echo device on the board ...")
    t0 = time.monotonic()
    board.apply_profile(Profile(PROFILE.board, (*PROFILE.devices, extra)))
    host.wait_for(lambda devs: len(devs) == len(PROFILE.devices) + 1, 5.0)
    print(f"  seen by the host after {(time.monotonic() - t0) * 1000:.1f} ms")
    _table(host)
    print("hotswap: removing it again ...")
    t0 = time.monotonic()
    board.apply_profile(PROFILE)
    host.wait_for(lambda devs: len(devs) == len(PROFILE.devices), 5.0)
    print(f"  gone on the host after {(time.monotonic() - t0) * 1000:.1f} ms")


# -- the network -------------------------------------------------------------------------


def _wait_carrier(net: _Net, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not net.host.carrier:
        if time.monotonic() > deadline:
            raise TransportError(f"the host's interface got no carrier within {timeout_s:g} s")
        time.sleep(0.02)


def _network(net: _Net, host: HostClient, args: argparse.Namespace) -> bool:
    _wait_carrier(net)
    client = net.host.client
    assert client is not None and client.settings is not None and net.host.loop_port
    port = net.host.loop_port
    features = host.runtime.call(lambda: host.virtio.negotiations())
    accepted = next(iter(n.accepted for n in features.values() if n.features_ok), 0)
    print("\nvirtio-net: the host's interface appeared with the device")
    board_port, mac = net.board.loop_port, client.settings.mac
    where = ("", "")
    if net.namespaces is not None:
        where = (
            f" {BOARD_IP}/24 in namespace {net.namespaces[0].name}",
            f" {HOST_IP}/24 in namespace {net.namespaces[1].name}",
        )
    print(f"  board {board_port.name}{where[0]} mtu {board_port.mtu}")
    print(
        f"  host  {port.name}{where[1]} mac {format_mac(mac) if mac else '?'} "
        f"mtu {client.settings.mtu} carrier {'on' if port.carrier else 'off'}"
    )
    print(f"  features: {' '.join(feature_list(accepted))}")
    if net.namespaces is None:
        assert net.stacks is not None
        ok, lines = _frame_exchange(net.stacks, args.count * 100)
    else:
        ok, lines = _ping_and_tcp(net.namespaces, args)
    link = host.runtime.statistics()
    driver, port_stats = host.runtime.call(net.host.statistics)
    print("\nsummary")
    _table(host)
    for line in lines:
        print(f"  {line}")
    print(f"  link (host end): {_link_line(link)}")
    driver = driver or NetDriverStatistics()
    dropped = {
        f"{side}_dropped_{reason.value}": n
        for side, counts in (
            ("rx", driver.rx.dropped),
            ("tx", driver.tx.dropped),
            ("port", {} if port_stats is None else port_stats.dropped),
        )
        for reason, n in sorted(counts.items(), key=lambda item: item[0].value)
    }
    print(
        f"  venet (host end): sent {driver.tx.frames} frames, received "
        f"{driver.rx.frames}, dropped {sum(dropped.values())}"
        + (f" {dropped}" if dropped else "")
        + _compression(driver.tx.delta)
    )
    return ok


def _compression(delta: DeltaStatistics) -> str:
    """What header compression (IRA_HDR_DELTA) saved on the frames sent, if it was on."""
    frames = sum(delta.frames.values())
    if not frames:
        return ""
    return f"; headers compressed: {delta.bytes_saved / frames:.0f} bytes a frame saved"


def _link_line(s: LinkStatistics) -> str:
    rtt = f", srtt {s.srtt_s * 1000:.1f} ms" if s.srtt_s is not None else ""
    return (
        f"{s.frames_sent} frames / {s.wire_bytes_sent / 1e6:.2f} MB sent, "
        f"{s.frames_received} frames / {s.wire_bytes_received / 1e6:.2f} MB received, "
        f"{s.bytes_retransmitted} bytes retransmitted, "
        f"{s.drop_bad_crc} bad CRC{rtt}"
    )


_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def _ping_and_tcp(
    namespaces: tuple[NetNs, NetNs], args: argparse.Namespace
) -> tuple[bool, list[str]]:
    board_ns, host_ns = namespaces
    print(f"\nping {BOARD_IP} (board, namespace {board_ns.name}) from the host's namespace:")
    proc = host_ns.popen(
        ["ping", "-n", "-c", str(args.count), "-i", "0.2", BOARD_IP],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = []
    for raw in proc.stdout:
        line = raw.decode().rstrip()
        out.append(line)
        print(f"  {line}")
    proc.wait()
    rtt = next((m for m in map(_RTT.search, out) if m), None)
    loss = next((line for line in out if "packet loss" in line), "no answer")
    ping_line = f"ping: {loss}" + (
        f"; rtt min/avg/max {rtt[1]}/{rtt[2]}/{rtt[3]} ms" if rtt else ""
    )
    size = parse_size(args.tcp_bytes)
    print(f"\nTCP: {size / 2**20:.1f} MiB from the host's namespace to the board's ...")
    received, digest, elapsed = _tcp(host_ns, board_ns, size)
    ok_tcp = received == size and digest == "ok"
    tcp_line = (
        f"tcp: {received / 2**20:.1f} MiB host -> board in {elapsed:.2f} s, goodput "
        f"{received / elapsed / 1e6:.2f} MB/s, SHA-256 {'matches' if ok_tcp else 'DIFFERS'}"
    )
    print(f"  {tcp_line}")
    return proc.returncode == 0 and ok_tcp, [ping_line, tcp_line]


def _tcp(client_ns: NetNs, server_ns: NetNs, size: int) -> tuple[int, str, float]:
    """Send ``size`` random bytes over TCP; (bytes received, "ok" if the SHA-256 matched, s)."""
    payload = os.urandom(size)
    server = server_ns.call(lambda: socket.create_server((BOARD_IP, 0)))
    port = server.getsockname()[1]
    result: list[tuple[int, str]] = []

    def serve() -> None:
        server.settimeout(30)
        with server, contextlib.suppress(OSError):
            conn, _ = server.accept()
            conn.settimeout(30)
            digest, total = hashlib.sha256(), 0
            with conn:
                while chunk := conn.recv(1 << 16):
                    digest.update(chunk)
                    total += len(chunk)
            result.append((total, digest.hexdigest()))

    thread = threading.Thread(target=serve, name="loopback-tcp", daemon=True)
    thread.start()
    conn = client_ns.call(lambda: socket.create_connection((BOARD_IP, port), timeout=30))
    started = time.monotonic()
    with conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    if not result:
        return 0, "none", elapsed
    total, digest = result[0]
    return total, "ok" if digest == hashlib.sha256(payload).hexdigest() else "bad", elapsed


def _frame_exchange(
    stacks: tuple[FrameEndpoint, FrameEndpoint], count: int
) -> tuple[bool, list[str]]:
    """Frames both ways between the in-process stacks; what crossed, in order."""
    board_stack, host_stack = stacks
    print(f"\nframes: {count} each way between the in-process stacks ...")
    eth = bytes.fromhex("020000000001020000000002") + b"\x88\xb5"  # local experimental type
    header = bytes(VNET_HDR_BYTES)
    started = time.monotonic()
    sent = {"up": 0, "down": 0}
    got: dict[str, list[bytes]] = {"up": [], "down": []}
    deadline = started + 30
    while (len(got["up"]) < count or len(got["down"]) < count) and time.monotonic() < deadline:
        for way, src, dst in (("up", board_stack, host_stack), ("down", host_stack, board_stack)):
            while sent[way] < count and sent[way] - len(got[way]) < 64:
                body = sent[way].to_bytes(4, "big") + bytes(1400)
                if not src.write_frame(header + eth + body):
                    break
                sent[way] += 1
            while (frame := dst.read_frame()) is not None:
                got[way].append(frame)
        time.sleep(0.0005)
    elapsed = time.monotonic() - started
    in_order = all(
        [int.from_bytes(f[VNET_HDR_BYTES + 14 : VNET_HDR_BYTES + 18], "big") for f in got[w]]
        == list(range(len(got[w])))
        for w in got
    )
    moved = sum(len(f) - VNET_HDR_BYTES for w in got for f in got[w])
    line = (
        f"frames: {len(got['up'])}/{count} board -> host, {len(got['down'])}/{count} "
        f"host -> board, {'in order' if in_order else 'OUT OF ORDER'}, "
        f"{moved / elapsed / 1e6:.2f} MB/s both ways together"
    )
    print(f"  {line}")
    ok = in_order and len(got["up"]) == count and len(got["down"]) == count
    return ok, [line]


__all__ = ["IraError", "missing_for_namespaces", "register", "run"]
