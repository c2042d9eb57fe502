"""venet benchmarks: TCP and ping across two network namespaces joined by the null-modem.

Every figure is a ratio measured in one run (root needed: TAPs and namespaces):

* ``efficiency_115200``: TCP goodput (payload bytes per second, from the first byte
  sent to the receiver's end of stream) of a 256 KiB transfer through ira over the
  null-modem throttled to 115200 baud, divided by the line rate (baud/10 bytes per
  second); it is the product of ``payload_share_115200`` (payload ÷ the bytes the
  null-modem carried toward the receiver meanwhile) and ``line_busy_115200`` (those
  bytes ÷ what the line could carry in the time);
* ``loaded_ping_115200_s``: median round trip of pings at 2 Hz sent while a 384 KiB TCP
  transfer fills that line (latency under load; no baseline: what a keystroke waits
  behind a bulk flow, against ~0.1 s unloaded), host → board: the host sends both the
  bulk and the pings; ``loaded_ping_board_115200_s``: the same board → host (the board
  sends the bulk and the pings); ``*_lost``: pings of those that got no answer;
* ``board_*``, ``host_*``: each end's link counters over that 115200-baud transfer (the
  line ``ira.runtime.link`` logs at stop): frames, DATA segments and stand-alone ACK
  frames sent, retransmissions, retransmission timeouts, tail probes, duplicates
  received, the smoothed RTT; ``*_acks_per_data_frame``: ACK frames per DATA frame sent;
* ``goodput_ratio``: TCP goodput of 32 MiB through ira over the unthrottled
  null-modem, divided by that of the C peer on a null-modem of the same kind: Debian's
  ``vde2`` (a ``vde_switch -tap`` in each namespace, their ``vde_plug``s joined through
  the pty pair; VDE has no CRC and no retransmission); medians of the rounds, with
  every round's figures and its own ratio (ira ÷ the VDE run next to it) in
  ``*_runs`` to show the spread;
* ``ping_ratio``: median ping round trip over the unthrottled null-modem, ira ÷ VDE.

ira runs as the tests run it (``tests/venet/test_virtio_net_root.py``: ``ira board
serve`` and ``ira host serve`` in two namespaces, separate processes); the TCP
transfer and the pings are that module's helpers, the same for both.  The runs of ira
and VDE alternate, so both see the same machine; medians are reported.

``--frame-cost`` (no root) measures instead what venet, virtio and the bus cost per
frame without the link: the board's ``VirtioNetDevice`` and the host's driver, each
with an in-memory port, joined by a ``Connector`` and a ``Bus`` that hand each other
their messages (``tests/busmodel/busharness.py``); a stream of frames of one size from
the host, one 54-byte frame back for every two (TCP's ACKs); both sides' work per
frame, best of 3.  It also counts the bus messages and their bytes per frame each way
(``bus_traffic``, link framing not counted) with the bus at version 3 and at version 4
(WINDOWS, no SIGNAL per publish): a stream of MTU frames with TCP's ACKs, and an idle
ping.

``--phases`` (root) measures instead where an idle ping's time goes: 100 pings (20 with
``--quick``) host -> board over the unthrottled null-modem, every TAP, pty and pipe read
and write of both ``ira`` processes and of the null-modem's thread time-stamped with
CLOCK_MONOTONIC (``bench/iotrace.py``, loaded into the ``ira`` processes through a
``sitecustomize`` on their ``PYTHONPATH``); per ping, the time from the host's TAP read of
the request to its pty write, through the null-modem, to the board's TAP write, the board's
kernel and so on back to the host's TAP write (``PHASES``); medians, and the pty reads and
writes each side made per ping.

Usage: ``python bench/venet.py [--json] [--quick] [--frame-cost | --phases]`` (root but for
``--frame-cost``; VDE: ``apt-get install vde2``)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ira import native
from ira.cli.loopback import missing_for_namespaces
from ira.runtime.netns import NetNs, remove_stale
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.wire.bus import BUS_VERSION_WINDOWS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "venet"))
import iotrace  # bench/: the script's own directory
import test_virtio_net_root as root_rig  # type: ignore[import-not-found]
import venetrig  # type: ignore[import-not-found]

BOARD_IP: str = root_rig.BOARD_IP
HOST_IP: str = root_rig.HOST_IP
TAP: str = root_rig.TAP
#: ira and VDE alternate this many times on the unthrottled null-modem
ROUNDS = 5
#: bytes of each unthrottled transfer: enough to leave TCP's slow start behind
UNTHROTTLED_BYTES = 32 << 20
#: pings per round
PINGS = 20
_TIME = re.compile(r"time=([\d.]+) ms")


def _link_counters(log: Path, ends: dict[str, str]) -> dict[str, float]:
    """``{end}_{counter}`` from the ``link counters at stop (PORT): ...`` lines of
    ``ira.runtime.link``, and ACK frames per DATA frame each way."""
    found: dict[str, float] = {}
    text = log.read_text(errors="replace")
    for end, port in ends.items():
        match = re.search(rf"link counters at stop \({re.escape(port)}\): (.*)", text)
        if match is None:
            raise SystemExit(f"bench/venet.py: no link counters of the {end} in {log}")
        for word in match.group(1).split():
            name, _, value = word.partition("=")
            if value != "-":
                found[f"{end}_{name}"] = float(value)
        found[f"{end}_acks_per_data_frame"] = found[f"{end}_ack_frames_sent"] / max(
            1.0, found[f"{end}_segments_sent"]
        )
    return found


def _ping_times(ns: NetNs, address: str, count: int) -> list[float]:
    """Round trips in seconds of ``count`` pings (the tests' ``ping``: none may be lost)."""
    out: str = venetrig.ping(ns, address, count=count)
    return [float(m[1]) / 1000 for m in _TIME.finditer(out)]


def _goodput(
    client: NetNs, server: NetNs, size: int, timeout_s: float, address: str = BOARD_IP
) -> float:
    """TCP payload bytes per second from ``client`` to ``address`` (the board's) in
    ``server``."""
    payload = os.urandom(size)
    count, digest, elapsed = root_rig.transfer(
        client, server, address, payload, timeout_s=timeout_s
    )
    if (count, digest) != (size, root_rig.sha256(payload)):
        raise SystemExit(f"benchmark: {count} of {size} bytes arrived, or spoiled")
    return size / float(elapsed)


def _ping_under_load(
    client: NetNs, server: NetNs, q: int, address: str = BOARD_IP
) -> tuple[float, int]:
    """Median round trip of pings (2 Hz) from ``client`` to ``address`` in ``server``
    sent while a TCP transfer the same way fills the line, and how many were lost: what
    a keystroke or a DNS query waits behind a bulk flow (latency under load)."""
    done: list[float] = []
    worker = threading.Thread(
        target=lambda: done.append(_goodput(client, server, (384 << 10) // q, 200.0, address))
    )
    worker.start()
    time.sleep(4.0 / q)  # past TCP's slow start
    count = 40 // q
    out = client.run(
        ["ping", "-n", "-c", str(count), "-i", "0.5", "-W", "10", address],
        check=False,
        timeout_s=120.0,
    ).stdout.decode()
    worker.join()
    rtts = [float(m[1]) / 1000 for m in _TIME.finditer(out)]
    if not done or not rtts:
        raise SystemExit(f"benchmark: the loaded ping failed:\n{out}")
    return statistics.median(rtts), count - len(rtts)


@contextlib.contextmanager
def ira_pair(tmp: Path, baud: int | None = None) -> Iterator[tuple[NetNs, NetNs]]:
    """(board, host) namespaces with ira serving a TAP in each, the host with carrier."""
    with root_rig.rig(tmp, baud=baud) as r:
        yield r.board_ns, r.host_ns


def _kill_pidfile(pidfile: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


@contextlib.contextmanager
def vde_pair(tmp: Path) -> Iterator[tuple[NetNs, NetNs]]:
    """(board, host) namespaces bridged by VDE over an unthrottled null-modem.

    In each namespace a daemonised ``vde_switch -tap`` (its own control directory
    under ``tmp``) owns the TAP; a ``vde_plug`` to that switch has the pty slave of
    its null-modem end as stdin and stdout, so the two switches are cabled through
    the pty pair as ira's ends are.
    """
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=tmp, prefix="vde-")))
        nm = stack.enter_context(NullModem(NullModemConfig()))
        pair: list[NetNs] = []
        for label, path, ip in (("a", nm.path_a, BOARD_IP), ("b", nm.path_b, HOST_IP)):
            ns = stack.enter_context(NetNs())
            sock, pidfile = tmp / f"vde-{label}.ctl", tmp / f"vde-{label}.pid"
            mgmt = tmp / f"vde-{label}.mgmt"
            switch = ["vde_switch", "--tap", TAP, "--sock", str(sock), "--mgmt", str(mgmt)]
            ns.run([*switch, "--daemon", "--pidfile", str(pidfile)])
            stack.callback(_kill_pidfile, pidfile)  # before the namespace goes
            deadline = time.monotonic() + 5
            while ns.run(["ip", "link", "show", TAP], check=False).returncode:
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: vde_switch made no {TAP} within 5 s")
                time.sleep(0.05)
            ns.run(["ip", "addr", "add", f"{ip}/24", "dev", TAP])
            ns.run(["ip", "link", "set", TAP, "up"])
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            stack.callback(os.close, fd)
            ns.popen(["vde_plug", f"vde://{sock}"], stdin=fd, stdout=fd)
            pair.append(ns)
        deadline = time.monotonic() + 10
        while pair[1].run(["ping", "-n", "-c", "1", "-W", "1", BOARD_IP], check=False).returncode:
            if time.monotonic() > deadline:
                raise SystemExit("benchmark: no ping across VDE within 10 s")
        yield pair[0], pair[1]


def vde_missing() -> str | None:
    """Why the VDE baseline cannot run here, or ``None``."""
    for tool in ("vde_switch", "vde_plug"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: apt-get install vde2"
    return None


#: Ethernet frame sizes (virtio-net header not counted) of ``--frame-cost``: an MTU frame
#: and two GSO segments
FRAME_COST_SIZES = (1514, 26000, 60000)


def _frame_rig(bus_version_max: int | None = None) -> tuple[Any, Any, Any]:
    """(pair, board port, host port): the board's ``VirtioNetDevice`` and the host's driver,
    each with an in-memory port, joined by a ``Connector`` and a ``Bus`` that hand each other
    their messages (``tests/busmodel/busharness.py``), the host's carrier on."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "busmodel"))
    from busharness import Pair  # type: ignore[import-not-found]
    from test_virtio_net import MAC, MemPort  # type: ignore[import-not-found]

    from ira.busmodel import Bus, BusConfig, Connector
    from ira.busmodel.drivers import DriverRegistry
    from ira.venet.device import VirtioNetDevice
    from ira.venet.driver import VirtioNetClient
    from ira.venet.netspec import NET_ID
    from ira.virtio.calls import VIRTIO_TYPE
    from ira.virtio.host import VirtioHostDriver

    board_port, host_port = MemPort("board", vnet_hdr=True), MemPort("host", vnet_hdr=True)
    clients: list[VirtioNetClient] = []

    def client() -> VirtioNetClient:
        clients.append(VirtioNetClient(lambda _: host_port, vnet_hdr=True))
        return clients[-1]

    registry = DriverRegistry()
    registry.register(VIRTIO_TYPE, VirtioHostDriver({NET_ID: client}))
    board = Connector()
    board.add_device(VirtioNetDevice(MAC, port=board_port), now=0.0)
    config = BusConfig() if bus_version_max is None else BusConfig(version_max=bus_version_max)
    pair = Pair(board, Bus(config, drivers=registry))
    pair.start()
    while not (clients and clients[-1].carrier):
        if pair.now > 5.0:
            raise SystemExit("benchmark: the network device did not come up")
        pair.advance(0.01)
        pair.pump()
    return pair, board_port, host_port


def frame_cost(frames: int, size: int) -> float:
    """Seconds of device, driver and bus work per frame of ``size`` bytes (see above)."""
    from test_virtio_net import frame, tcp_gso_frame

    from ira.wire.venet import VNET_HDR_BYTES

    pair, board_port, host_port = _frame_rig()
    eth = len(frame(b"")) - VNET_HDR_BYTES  # the test frames' Ethernet (and IP) bytes
    down, up = tcp_gso_frame(size - eth), frame(bytes(54 - eth))
    best = float("inf")
    for _ in range(3):
        board_port.delivered.clear()
        started = time.perf_counter()
        for i in range(frames):
            host_port.send(down)
            if i % 2:
                board_port.send(up)
            if i % 4 == 3:
                pair.pump()
        pair.pump()
        best = min(best, time.perf_counter() - started)
        if len(board_port.delivered) != frames:
            raise SystemExit(f"benchmark: {len(board_port.delivered)} of {frames} frames arrived")
    return best / frames


def bus_traffic(frames: int, bus_version_max: int) -> dict[str, float]:
    """Bus messages and their bytes per frame, each way, with the bus at most at
    ``bus_version_max``: ``stream_*`` a stream of 1,514-byte frames toward the board with a
    54-byte one back for every two (TCP's ACKs), ``ping_*`` one 98-byte frame each way at a
    time (an idle ping and its reply).  Link framing is not counted."""
    from test_virtio_net import frame

    from ira.wire.venet import VNET_HDR_BYTES

    pair, board_port, host_port = _frame_rig(bus_version_max)
    counts = {"to_board": [0, 0], "to_host": [0, 0]}
    for name in counts:
        direction, push, count = getattr(pair, name), getattr(pair, name).push, counts[name]

        def counting(
            channel: object, data: bytes, push: Any = push, count: list[int] = count
        ) -> None:
            count[0] += 1
            count[1] += len(data)
            push(channel, data)

        direction.push = counting
    eth = len(frame(b"")) - VNET_HDR_BYTES
    out: dict[str, float] = {"bus_version": pair.host.version}
    for kind, down, up, every in (
        ("stream", frame(bytes(1514 - eth)), frame(bytes(54 - eth)), 2),
        ("ping", frame(bytes(98 - eth)), frame(bytes(98 - eth)), 1),
    ):
        for count in counts.values():
            count[:] = [0, 0]
        for i in range(frames):
            host_port.send(down)
            if kind == "ping":
                pair.pump()
            if i % every == every - 1:
                board_port.send(up)
            pair.pump()
        for name, (messages, size) in counts.items():
            out[f"{kind}_{name}_messages"] = messages / frames
            out[f"{kind}_{name}_bytes"] = size / frames
    return out


def idle_ping_phases(tmp: Path, count: int) -> dict[str, float]:
    """Where an idle ping's time goes: ``count`` pings host -> board over the unthrottled
    null-modem with every TAP and pty read and write of both ``ira`` processes and the
    null-modem's thread time-stamped (``bench/iotrace.py``); the median of each phase, the
    pings' own median round trip, and the I/O calls per ping."""
    trace_path = tmp / "iotrace.txt"
    site = tmp / "iotrace-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import iotrace\niotrace.install_from_environment()\n",
        encoding="utf-8",
    )
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", iotrace.ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(site), saved["PYTHONPATH"])))
    os.environ[iotrace.ENV] = str(trace_path)
    uninstall = iotrace.install(str(trace_path))  # the null-modem's thread, in this process
    try:
        with root_rig.rig(tmp) as r:
            assert r.board is not None
            board_pid = r.board.pid
            time.sleep(1.0)  # past the device's start
            start = time.monotonic_ns()
            rtts = _ping_times(r.host_ns, BOARD_IP, count)
    finally:
        uninstall()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    trace: list[tuple[int, int, str, str, int, int]] = []
    for row in trace_path.read_text().splitlines():
        t, pid, op, kind, fd, size, took = row.split()
        # a write's bytes are the reader's from its start on; a read has them at its end
        stamp = int(t) - int(took) if op == "w" else int(t)
        if stamp >= start:
            trace.append((stamp, int(pid), op, kind, int(fd), int(size)))
    pids = {pid for _, pid, *_ in trace} - {board_pid, os.getpid()}
    if len(pids) != 1:
        raise SystemExit(f"benchmark: the trace names processes {sorted(pids)}, not one host")
    timelines = iotrace.ping_timelines(trace, pids.pop(), board_pid, os.getpid())
    if len(timelines) < count // 2:
        raise SystemExit(f"benchmark: {len(timelines)} of {count} pings found in the trace")
    out: dict[str, float] = {"pings": len(timelines), "ping_s": statistics.median(rtts)}
    for label, first, last in iotrace.PHASES:
        out[label] = statistics.median(line[last] - line[first] for line in timelines)
    out["ira: host TAP read -> host TAP write"] = statistics.median(
        line["host_tap_w"] - line["host_tap_r"] for line in timelines
    )
    for key in ("host_pty_r_count", "host_pty_w_count", "board_pty_r_count", "board_pty_w_count"):
        out[key] = statistics.median(line[key] for line in timelines)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smaller transfers, one round")
    parser.add_argument(
        "--frame-cost", action="store_true", help="per-frame cost without the link (no root)"
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="where an idle ping's time goes: per-phase timestamps (root)",
    )
    args = parser.parse_args()
    if args.phases:
        print_phases(args.json, 20 if args.quick else 100)
        return
    if args.frame_cost:
        n = 500 if args.quick else 2000
        costs: dict[str, float] = {
            f"frame_cost_{size}_s": frame_cost(n, size) for size in FRAME_COST_SIZES
        }
        for version in (BUS_VERSION_WINDOWS - 1, BUS_VERSION_WINDOWS):
            traffic = bus_traffic(n // 4, version)
            costs.update({f"bus_v{version}_{k}": v for k, v in traffic.items()})
        if args.json:
            print(json.dumps(costs, sort_keys=True))
        for size in FRAME_COST_SIZES if not args.json else ():
            print(f"{size}-byte frames: {costs[f'frame_cost_{size}_s'] * 1e6:.1f} us per frame")
        for version in (BUS_VERSION_WINDOWS - 1, BUS_VERSION_WINDOWS) if not args.json else ():

            def way(kind: str, to: str, v: str = f"bus_v{version}_{{}}_to_{{}}_{{}}") -> str:
                m, b = costs[v.format(kind, to, "messages")], costs[v.format(kind, to, "bytes")]
                return f"{m:.2f} messages, {b:.1f} bytes"

            print(
                f"bus v{version} per frame, toward the board / back: stream "
                f"{way('stream', 'board')} / {way('stream', 'host')}; ping "
                f"{way('ping', 'board')} / {way('ping', 'host')}"
            )
        return
    missing = missing_for_namespaces()
    if missing is not None:
        raise SystemExit(f"bench/venet.py needs {missing}")
    no_vde = vde_missing()
    if no_vde is not None:
        print(f"bench/venet.py: the VDE baseline is unavailable: {no_vde}", file=sys.stderr)
    remove_stale()
    q = 4 if args.quick else 1
    rounds = 1 if args.quick else ROUNDS
    results: dict[str, float | int | str | list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ira-bench-venet-") as tmp_dir:
        tmp = Path(tmp_dir)
        line = 115200 / 10
        slow_size = (256 << 10) // q
        with root_rig.rig(tmp, baud=115200) as r:
            before = r.nm.statistics().b_to_a.bytes_out
            slow = _goodput(r.host_ns, r.board_ns, slow_size, 120.0)
            wire = r.nm.statistics().b_to_a.bytes_out - before
            ends = {"board": r.nm.path_a, "host": r.nm.path_b}
        # the link counters of that transfer, from the lines both ends log at stop
        results.update(_link_counters(r.log, ends))
        r.log.unlink()
        with root_rig.rig(tmp, baud=115200) as r:
            loaded_ping, lost = _ping_under_load(r.host_ns, r.board_ns, q)
            loaded_back, lost_back = _ping_under_load(r.board_ns, r.host_ns, q, HOST_IP)
        results["loaded_ping_115200_s"] = loaded_ping
        results["loaded_ping_115200_lost"] = lost
        results["loaded_ping_board_115200_s"] = loaded_back
        results["loaded_ping_board_115200_lost"] = lost_back
        results["ira_115200_bytes_per_s"] = slow
        results["efficiency_115200"] = slow / line
        # where the line's bytes went: efficiency = payload share x line busy
        results["payload_share_115200"] = slow_size / wire
        results["line_busy_115200"] = wire / (slow_size / slow) / line
        size = UNTHROTTLED_BYTES // q
        goodput: dict[str, list[float]] = {"ira": [], "vde": []}
        rtts: dict[str, list[float]] = {"ira": [], "vde": []}
        kinds = ("ira", "vde") if no_vde is None else ("ira",)
        for _ in range(rounds):
            for kind in kinds:
                pair = ira_pair(tmp) if kind == "ira" else vde_pair(tmp)
                with pair as (board, host):
                    rtts[kind] += _ping_times(host, BOARD_IP, PINGS // q)
                    goodput[kind].append(_goodput(host, board, size, 60.0))
        bps = {kind: statistics.median(goodput[kind]) for kind in kinds}
        rtt = {kind: statistics.median(rtts[kind]) for kind in kinds}
        for kind in kinds:
            results[f"{kind}_bytes_per_s"] = bps[kind]
            results[f"{kind}_ping_s"] = rtt[kind]
            results[f"{kind}_bytes_per_s_runs"] = goodput[kind]
        ratios = [i / v for i, v in zip(goodput["ira"], goodput["vde"], strict=False)]
        if no_vde is None:
            results["goodput_ratio"] = bps["ira"] / bps["vde"]
            results["goodput_ratio_runs"] = ratios
            results["ping_ratio"] = rtt["ira"] / rtt["vde"]
        else:
            results["vde_unavailable"] = no_vde
    if args.json:
        # which build of the hot modules ran: compiled or pure Python (ira.native)
        print(json.dumps({**results, "build": native.status()}, sort_keys=True))
        return
    print(f"build: {native.status()}")
    print(
        f"TCP at 115200 baud: {slow:.0f} B/s of {line:.0f} = "
        f"{results['efficiency_115200']:.3f} (target >= 0.95): payload "
        f"{results['payload_share_115200']:.3f} of the bytes on the line (headers, link "
        f"framing, bus and ring traffic), line busy {results['line_busy_115200']:.3f}"
    )
    print(
        "link frames in that transfer: "
        + "; ".join(
            f"{end}: {results[f'{end}_acks_per_data_frame']:.2f} ACK frames per DATA frame, "
            f"{results[f'{end}_retransmission_timeouts']:.0f} retransmission timeouts"
            for end in ("host", "board")
        )
    )
    print(
        f"ping during a TCP transfer at 115200 baud: host -> board {loaded_ping * 1e3:.0f} ms "
        f"(median, {lost} lost), board -> host {loaded_back * 1e3:.0f} ms (median, "
        f"{lost_back} lost) (target <= 200 ms, none lost)"
    )
    if no_vde is not None:
        print(f"TCP unthrottled: ira {bps['ira'] / 1e6:.2f} MB/s; no VDE baseline ({no_vde})")
        print(f"ping unthrottled: ira {rtt['ira'] * 1e3:.3f} ms; no VDE baseline")
        return

    def spread(values: list[float], scale: float = 1.0) -> str:
        return f"{min(values) * scale:.2f}-{max(values) * scale:.2f}"

    print(
        f"TCP unthrottled: ira {bps['ira'] / 1e6:.2f} MB/s (runs {spread(goodput['ira'], 1e-6)}) "
        f"vs VDE {bps['vde'] / 1e6:.2f} MB/s (runs {spread(goodput['vde'], 1e-6)}) "
        f"= {bps['ira'] / bps['vde']:.2f} (target >= 1.0; per round {spread(ratios)})"
    )
    print(
        f"ping unthrottled: ira {rtt['ira'] * 1e3:.3f} ms vs VDE {rtt['vde'] * 1e3:.3f} ms "
        f"= {rtt['ira'] / rtt['vde']:.2f}"
    )


def print_phases(as_json: bool, count: int) -> None:
    """``--phases``: ``idle_ping_phases`` on its own, printed."""
    missing = missing_for_namespaces()
    if missing is not None:
        raise SystemExit(f"bench/venet.py needs {missing}")
    remove_stale()
    with tempfile.TemporaryDirectory(prefix="ira-bench-venet-") as tmp_dir:
        phases = idle_ping_phases(Path(tmp_dir), count)
    if as_json:
        print(json.dumps({**phases, "build": native.status()}, sort_keys=True))
        return
    print(
        f"build: {native.status()}; {phases['pings']:.0f} pings, median round trip "
        f"{phases['ping_s'] * 1e3:.3f} ms (ping's own figure)"
    )
    for label, _, _ in iotrace.PHASES:
        print(f"  {label:45s} {phases[label] * 1e6:8.1f} us")
    total = phases["ira: host TAP read -> host TAP write"]
    print(f"  {'host TAP read -> host TAP write':45s} {total * 1e6:8.1f} us")
    print(
        "  pty reads/writes per ping: host "
        f"{phases['host_pty_r_count']:.0f}/{phases['host_pty_w_count']:.0f}, board "
        f"{phases['board_pty_r_count']:.0f}/{phases['board_pty_w_count']:.0f}"
    )


if __name__ == "__main__":
    main()
