"""USB benchmarks: ira over a FunctionFS gadget and over CDC-ACM against the raw bulk pipe.

Everything runs on one real kernel USB stack in one run: this machine's when its
kernel has dummy_hcd (two dummy UDCs, root), else this script runs itself in the
QEMU guest of ``ira.tools.usbvm`` (software emulation: absolute figures are
small, the ratios are what counts).  Figures, each with its baseline from the same
run:

* ``raw_bulk_bytes_per_s``: a minimal pump, no ira: a FunctionFS function writes
  65000-byte transfers to its bulk IN endpoint, pyusb reads them (board to host);
  like the link run below it sends data made before the clock starts and compares
  every transfer received with what was sent;
* ``link_goodput_bytes_per_s``: ``ira linktest``'s engine, board (``ffs://``) to
  host (``usb://``), messages of 1 B..64 KiB; ``link_vs_raw`` is their ratio
  (target >= 0.8); ``link_65000_*``: the same with every message 65000 bytes, the
  raw transfer's size (what the link costs per frame, without its cost per message);
* ``raw_pingpong_s``: median round trip of 64 bytes, pyusb writes the bulk OUT
  endpoint, the function echoes on IN; ``devcall_s``: median 64-byte DEVCALL to the
  board's ``echo`` device over ira's USB link, in alternating blocks with the raw
  one; ``devcall_vs_raw`` is their ratio (target <= 1.5);
* ``acm_*``: the same over the gadget's CDC-ACM function (``/dev/ttyGS0`` <->
  ``/dev/ttyACM0``, pyserial: a 4 KiB-write pump and a 64-byte echo), the raw
  figures first, then ira's link and DEVCALL on the same ttys;
* ``venet_ffs_bytes_per_s`` and ``venet_acm_bytes_per_s``: TCP goodput between two
  network namespaces whose TAPs ira joins (``ira board serve``/``ira host serve
  --tap``) over FunctionFS and over ACM; ``venet_ffs_vs_acm`` (target >= 1).

Usage: ``python bench/usb.py [--json] [--quick]`` (root)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import serial

# this file is named like pyusb's package: keep its folder off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "tests" / "venet"))
import test_virtio_net_root as root_rig  # type: ignore[import-not-found]  # noqa: E402

from ira.busmodel.devices.echo import EchoFunc  # noqa: E402
from ira.link.config import LinkConfig  # noqa: E402
from ira.link.events import Channel, MessageReceived  # noqa: E402
from ira.runtime import BoardService, HostClient  # noqa: E402
from ira.runtime.link import LinkRuntime  # noqa: E402
from ira.runtime.netns import NetNs  # noqa: E402
from ira.tools.linktest import MessageSource, describe  # noqa: E402
from ira.transports import open_transport  # noqa: E402
from ira.transports.gadget import Gadget, GadgetOptions, udc_names  # noqa: E402
from ira.transports.usb import find_devices, parse_usb_spec  # noqa: E402
from ira.wire.usb import MAX_TRANSFER_BYTES, FfsStrings, encode, vendor_function  # noqa: E402

#: bytes of one raw transfer: under 64 KiB and not a whole number of packets
RAW_TRANSFER = 65000
BLOCKS = 10


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: no {what} within {timeout_s} s")
        time.sleep(0.05)


@contextlib.contextmanager
def raw_pipe(udc: str) -> Iterator[tuple[int, int, object, object]]:
    """A bare FunctionFS function (ira's descriptors, no ira) and pyusb's view of it:
    (ep1 OUT fd, ep2 IN fd, host OUT endpoint, host IN endpoint)."""
    gadget = Gadget(GadgetOptions("raw", serial="raw", udc=udc))
    gadget.create()
    fds: list[int] = []
    try:
        ep0 = os.open(gadget.ffs_dir / "ep0", os.O_RDWR)
        fds.append(ep0)
        os.write(ep0, encode(vendor_function()))
        os.write(ep0, encode(FfsStrings(("raw",))))
        fds += [
            os.open(gadget.ffs_dir / "ep1", os.O_RDWR),
            os.open(gadget.ffs_dir / "ep2", os.O_RDWR),
        ]
        threading.Thread(target=lambda: _drain(ep0), daemon=True).start()
        gadget.bind()
        spec = parse_usb_spec("usb://1d6b:0104/raw")
        _wait(lambda: bool(find_devices(spec)), "raw gadget on the bus")
        dev = find_devices(spec)[0]
        intf = dev.get_active_configuration()[(0, 0)]
        out_ep, in_ep = (e for e in intf)
        yield fds[1], fds[2], out_ep, in_ep
        import usb.util

        usb.util.dispose_resources(dev)
    finally:
        gadget.unbind()
        time.sleep(0.2)
        for fd in fds:
            os.close(fd)
        gadget.remove()


def _drain(ep0: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(ep0, 48):
            pass


def raw_bulk(ep2: int, in_ep: object, total: int) -> float:
    """Bytes per second of the bare pump, board to host.

    The work around the transfer is the link run's (``link_goodput``): the data is
    generated before the clock starts, and every transfer is taken out of the
    receive buffer as ``bytes`` and compared with what was sent."""
    count = max(1, total // RAW_TRANSFER)
    chunk = os.urandom(RAW_TRANSFER)
    writer = threading.Thread(target=lambda: [os.write(ep2, chunk) for _ in range(count)])
    import usb.util

    buffer = usb.util.create_buffer(MAX_TRANSFER_BYTES)
    view = memoryview(buffer)
    started = time.perf_counter()
    writer.start()
    got = bad = 0
    while got < count * RAW_TRANSFER:
        size = in_ep.read(buffer, 10000)  # type: ignore[attr-defined]
        bad += view[:size].tobytes() != chunk
        got += size
    elapsed = time.perf_counter() - started
    writer.join()
    if bad:
        raise SystemExit(f"benchmark: {bad} raw transfers arrived spoiled")
    return got / elapsed


class RawEcho:
    """64-byte ping-pong over the bare pump: pyusb OUT, the function echoes on IN."""

    def __init__(self, ep1: int, ep2: int, out_ep: object, in_ep: object) -> None:
        import usb.util

        self.out_ep, self.in_ep = out_ep, in_ep
        self.buffer = usb.util.create_buffer(MAX_TRANSFER_BYTES)
        self.fds = (ep1, ep2)
        self.stop = False
        self.thread = threading.Thread(target=self._echo, daemon=True)
        self.thread.start()

    def _echo(self) -> None:
        ep1, ep2 = self.fds
        with contextlib.suppress(OSError):
            while not self.stop:
                os.write(ep2, os.read(ep1, MAX_TRANSFER_BYTES))

    def ping(self) -> float:
        msg = os.urandom(64)
        started = time.perf_counter()
        self.out_ep.write(msg, 5000)  # type: ignore[attr-defined]
        size = self.in_ep.read(self.buffer, 5000)  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
        assert bytes(self.buffer[:size]) == msg
        return elapsed


class AcmEcho:
    """64-byte ping-pong over the ACM function: pyserial on both ends."""

    def __init__(self) -> None:
        self.board = serial.Serial("/dev/ttyGS0", timeout=5)
        self.host = serial.Serial("/dev/ttyACM0", timeout=5)
        self.stop = False
        self.thread = threading.Thread(target=self._echo, daemon=True)
        self.thread.start()

    def _echo(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError, TypeError):
            while not self.stop:
                data = self.board.read(64)
                if data:
                    self.board.write(data)

    def ping(self) -> float:
        msg = os.urandom(64)
        started = time.perf_counter()
        self.host.write(msg)
        got = self.host.read(64)
        elapsed = time.perf_counter() - started
        assert got == msg
        return elapsed

    def bulk(self, total: int) -> float:
        self.stop = True
        self.board.cancel_read()
        self.thread.join(5)
        chunk = os.urandom(4096)
        writer = threading.Thread(
            target=lambda: [self.board.write(chunk) for _ in range(total // 4096)]
        )
        started = time.perf_counter()
        writer.start()
        got = 0
        while got < (total // 4096) * 4096:
            got += len(self.host.read(min(65536, (total // 4096) * 4096 - got)))
        elapsed = time.perf_counter() - started
        writer.join()
        return got / elapsed

    def close(self) -> None:
        self.stop = True
        self.board.close()
        self.host.close()


def devcall_vs(
    ping: Callable[[], float], board_link: str, host_link: str, count: int
) -> tuple[float, float]:
    """Median raw ping-pong and 64-byte DEVCALL, in alternating blocks."""
    with BoardService(board_link), HostClient(host_link) as host:
        host.wait_ready(timeout_s=30)
        echo = host.open("echo")
        msg = os.urandom(64)

        def devcall() -> float:
            started = time.perf_counter()
            result = host.call(echo, EchoFunc.ECHO, msg)
            elapsed = time.perf_counter() - started
            assert result.payload == msg
            return elapsed

        for _ in range(10):
            devcall()
            ping()
        raw: list[float] = []
        calls: list[float] = []
        for _ in range(BLOCKS):
            raw += [ping() for _ in range(max(1, count // BLOCKS))]
            calls += [devcall() for _ in range(max(1, count // BLOCKS))]
    return statistics.median(raw), statistics.median(calls)


#: distinct messages the link goodput run cycles through (generated before the clock)
POOL_MESSAGES = 256


def link_goodput(
    spec_a: str, spec_b: str, total: int, sizes: tuple[int, int] = (1, 65536)
) -> float:
    """Goodput of ``ira linktest``'s engine A -> B (messages of 1 B..64 KiB, log-uniform,
    at most 1 MiB ahead of the receiver), with the raw pump's work around the transfer:
    the messages come from a pool generated before the clock starts (``linktest``
    generates each one as it goes and again to check it: random bytes made twice per
    byte moved, which the raw pump does not pay), and each one received is compared
    with the one expected in that place (content, order, exactly once)."""
    source = MessageSource(1, sizes)
    pool = [source.message(i) for i in range(POOL_MESSAGES)]
    lengths = [len(m) for m in pool]
    with contextlib.ExitStack() as stack:
        ta = open_transport(spec_a)
        stack.callback(ta.close)
        tb = open_transport(spec_b)
        stack.callback(tb.close)
        a = stack.enter_context(LinkRuntime(ta, LinkConfig(packet=ta.packet)))
        b = stack.enter_context(LinkRuntime(tb, LinkConfig(packet=tb.packet)))
        sent = received = queued_bytes = got_bytes = 0
        events: list[str] = []
        started = time.monotonic()
        deadline = started + 600.0
        while received < sent or queued_bytes < total:
            if time.monotonic() > deadline:
                raise SystemExit(f"benchmark: link {spec_a} -> {spec_b} stalled: {events}")
            while queued_bytes < total and queued_bytes - got_bytes < 1 << 20:
                a.send(pool[sent % POOL_MESSAGES], Channel.BULK)
                queued_bytes += lengths[sent % POOL_MESSAGES]
                sent += 1
            event = b.next_event(0.2)
            if isinstance(event, MessageReceived):
                if event.payload != pool[received % POOL_MESSAGES]:
                    raise SystemExit(f"benchmark: message {received} arrived spoiled")
                received += 1
                got_bytes += len(event.payload)
            elif event is not None:
                events.append(describe(event))
            a.raise_if_failed()
        elapsed = time.monotonic() - started
    return got_bytes / elapsed


def _ira_in(ns: NetNs, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``ira ARGV`` in the network namespace only: ``ip netns exec`` would mount a fresh
    /sys, without the configfs a gadget is made in."""
    with log.open("ab") as out:
        command = ["nsenter", f"--net={ns.path}", sys.executable, "-m", "ira", *argv]
        return subprocess.Popen(command, stdout=out, stderr=out)


def venet_goodput(board_link: str, host_link: str, size: int, tmp: Path) -> float:
    """TCP goodput host -> board through ira serving a TAP on each end of the link."""
    log = tmp / "ira.log"
    with NetNs() as board_ns, NetNs() as host_ns:
        tap, ip = root_rig.TAP, root_rig.BOARD_IP
        board = _ira_in(
            board_ns, ["board", "serve", board_link, "--tap", tap, "--ip", f"{ip}/24"], log
        )
        host = _ira_in(
            host_ns,
            ["host", "serve", host_link, "--tap", tap, "--ip", f"{root_rig.HOST_IP}/24"],
            log,
        )
        try:
            try:
                _wait(lambda: root_rig.carrier(host_ns) is True, "host carrier", 120)
            except SystemExit:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            payload = os.urandom(size)
            count, digest, elapsed = root_rig.transfer(
                host_ns, board_ns, ip, payload, timeout_s=300
            )
            if (count, digest) != (size, root_rig.sha256(payload)):
                raise SystemExit("benchmark: the TCP transfer arrived short or spoiled")
            return float(size / elapsed)
        finally:
            for proc in (host, board):
                proc.terminate()
                proc.wait(30)


def run(quick: bool) -> dict[str, float]:
    q = 4 if quick else 1
    udcs = sorted(n for n in udc_names() if n.startswith("dummy_udc"))
    results: dict[str, float] = {}
    with raw_pipe(udcs[1]) as (ep1, ep2, out_ep, in_ep):
        results["raw_bulk_bytes_per_s"] = raw_bulk(ep2, in_ep, (16 << 20) // q)
        echo = RawEcho(ep1, ep2, out_ep, in_ep)
        raw, call = devcall_vs(
            echo.ping, f"ffs://bench?udc={udcs[0]}", "usb://1d6b:0104/bench?wait=30", 400 // q
        )
        echo.stop = True
    results["raw_pingpong_s"], results["devcall_s"] = raw, call
    results["link_goodput_bytes_per_s"] = link_goodput(
        f"ffs://bench?udc={udcs[0]}", "usb://1d6b:0104/bench?wait=30", (16 << 20) // q
    )
    # the same with every message the size of a raw transfer: the link's cost per frame
    # without its cost per message
    results["link_65000_goodput_bytes_per_s"] = link_goodput(
        f"ffs://bench?udc={udcs[0]}",
        "usb://1d6b:0104/bench?wait=30",
        (16 << 20) // q,
        (RAW_TRANSFER, RAW_TRANSFER),
    )
    # ACM: a gadget with both functions held by a board on FunctionFS; ira on the ttys
    holder = subprocess.Popen(
        [sys.executable, "-m", "ira", "board", "serve", f"ffs://acm?acm=1&udc={udcs[0]}"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait(
            lambda: os.path.exists("/dev/ttyACM0") and os.path.exists("/dev/ttyGS0"),
            "ACM ttys",
            120,
        )
        acm = AcmEcho()
        raw_acm: list[float] = [acm.ping() for _ in range(200 // q)]
        results["acm_raw_pingpong_s"] = statistics.median(raw_acm)
        results["acm_raw_bytes_per_s"] = acm.bulk((8 << 20) // q)
        acm.close()
        results["acm_devcall_s"] = devcall_vs(lambda: 0.0, "/dev/ttyGS0", "/dev/ttyACM0", 200 // q)[
            1
        ]
        results["acm_link_goodput_bytes_per_s"] = link_goodput(
            "/dev/ttyGS0", "/dev/ttyACM0", (8 << 20) // q
        )
        with tempfile.TemporaryDirectory() as tmp:
            results["venet_acm_bytes_per_s"] = venet_goodput(
                "/dev/ttyGS0", "/dev/ttyACM0", (2 << 20) // q, Path(tmp)
            )
    finally:
        holder.terminate()
        holder.wait(30)
    with tempfile.TemporaryDirectory() as tmp:
        results["venet_ffs_bytes_per_s"] = venet_goodput(
            f"ffs://venet?udc={udcs[0]}", "usb://1d6b:0104/venet?wait=60", (2 << 20) // q, Path(tmp)
        )
    results["link_vs_raw"] = results["link_goodput_bytes_per_s"] / results["raw_bulk_bytes_per_s"]
    results["link_65000_vs_raw"] = (
        results["link_65000_goodput_bytes_per_s"] / results["raw_bulk_bytes_per_s"]
    )
    results["devcall_vs_raw"] = results["devcall_s"] / results["raw_pingpong_s"]
    results["acm_link_vs_raw"] = (
        results["acm_link_goodput_bytes_per_s"] / results["acm_raw_bytes_per_s"]
    )
    results["acm_devcall_vs_raw"] = results["acm_devcall_s"] / results["acm_raw_pingpong_s"]
    results["venet_ffs_vs_acm"] = (
        results["venet_ffs_bytes_per_s"] / results["venet_acm_bytes_per_s"]
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    parser.add_argument(
        "--guest-cpus",
        type=int,
        default=1,
        metavar="N",
        help="vCPUs of the QEMU guest when one is needed (default 1; TCG runs one host "
        "thread per vCPU)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/usb.py needs root (gadgets, TAPs, namespaces)")
    if len([n for n in udc_names() if n.startswith("dummy_udc")]) < 2:
        from ira.tools.usbvm import GuestVM, build_image

        print("no dummy_hcd here: measuring in the QEMU guest", file=sys.stderr, flush=True)
        with GuestVM(build_image(), cpus=args.guest_cpus) as vm:
            argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
            result = vm.run(" ".join(argv), timeout_s=3600)
        sys.stdout.write(result.output)
        raise SystemExit(result.returncode)
    results = run(args.quick)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        for key, value in sorted(results.items()):
            print(f"{key:32} {value:.6g}")


if __name__ == "__main__":
    main()
