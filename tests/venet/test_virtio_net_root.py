"""virtio-net end to end: two network namespaces, a virtual null-modem, real TAPs.

``ira board serve`` runs in one namespace and ``ira host serve`` in the other
(separate processes, started with ``ip netns exec``), joined by a virtual
null-modem in the test process: ping and TCP cross, a 9000-byte MTU carries
9000-byte packets, a killed and restarted board takes the host's carrier and
gives it back.  Malformed frames are injected with both ends in this process.
The slow variants (115200 baud with bit errors, a 3 s unplug) run with
``-m slow``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from venetrig import ping, require_root_support

from ira.runtime import BoardService, HostClient
from ira.runtime.netns import NetNs, list_netns
from ira.runtime.network import BoardNet, HostNet, TapSettings
from ira.runtime.profile import DeviceSpec, Profile
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.venet.netspec import NetPort, Offloads
from ira.venet.vnethdr import Drop
from ira.wire.venet import HEADER, GsoType, HdrFlags

pytestmark = pytest.mark.root

BOARD_IP, HOST_IP = "10.77.0.1", "10.77.0.2"
TAP = "ira0"


def carrier(ns: NetNs, name: str = TAP) -> bool | None:
    """True/False: the interface's carrier; None: no such interface."""
    done = ns.run(["ip", "-o", "link", "show", name], check=False)
    if done.returncode != 0:
        return None
    return "LOWER_UP" in done.stdout.decode()


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s; log:\n{log.read_text()}")
        time.sleep(0.05)


@dataclass
class Rig:
    nm: NullModem
    board_ns: NetNs
    host_ns: NetNs
    board_argv: list[str]
    log: Path
    board: subprocess.Popen[bytes] | None = None

    def start_board(self) -> None:
        self.board = ira(self.board_ns, self.board_argv, self.log)

    def kill_board(self) -> None:
        assert self.board is not None
        self.board.kill()
        self.board.wait()

    def wait_carrier(self, on: bool, timeout_s: float = 10.0) -> None:
        wait_for(
            f"host carrier {'on' if on else 'off'}",
            lambda: carrier(self.host_ns) is on,
            timeout_s,
            self.log,
        )


def ira(ns: NetNs, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return ns.popen([sys.executable, "-m", "ira", "-v", *argv], stdout=out, stderr=out)


@contextmanager
def rig(
    tmp_path: Path,
    *,
    board_args: tuple[str, ...] = (),
    baud: int | None = None,
    ber: float = 0.0,
    profile: str | None = None,
) -> Iterator[Rig]:
    """A board and a host serving TAPs in two namespaces, until the host has carrier.

    With ``profile`` (a board profile with ``{link}`` for the board's end of the
    null-modem) the board runs ``ira board serve --profile FILE`` and nothing else."""
    require_root_support(ping=True)
    names: list[str] = []
    with ExitStack() as stack:
        nm = stack.enter_context(NullModem(NullModemConfig(baud=baud, ber=ber)))
        board_ns = stack.enter_context(NetNs())
        host_ns = stack.enter_context(NetNs())
        names += [board_ns.name, host_ns.name]
        log = tmp_path / "ira.log"
        board_argv = ["board", "serve", nm.path_a, "--tap", TAP, "--ip", f"{BOARD_IP}/24"]
        if profile is not None:
            path = tmp_path / "profile.toml"
            path.write_text(profile.format(link=nm.path_a), encoding="utf-8")
            board_argv = ["board", "serve", "--profile", str(path)]
        r = Rig(nm, board_ns, host_ns, [*board_argv, *board_args], log)
        r.start_board()
        wait_for("the board's TAP", lambda: carrier(board_ns) is not None, 10.0, log)
        ira(host_ns, ["host", "serve", nm.path_b, "--tap", TAP, "--ip", f"{HOST_IP}/24"], log)
        r.wait_carrier(True)
        yield r
    assert not set(names) & set(list_netns()), "a namespace was left behind"


_SERVER = """\
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(float(sys.argv[3]))
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(float(sys.argv[3]))
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""


def transfer(
    client_ns: NetNs,
    server_ns: NetNs,
    address: str,
    payload: bytes,
    *,
    timeout_s: float = 30.0,
    during: Callable[[], None] | None = None,
) -> tuple[int, str, float]:
    """TCP from ``client_ns`` to a server in ``server_ns``: (bytes, SHA-256, seconds)."""
    server = server_ns.popen(
        [sys.executable, "-c", _SERVER, address, "5201", str(timeout_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        conn = client_ns.call(lambda: socket.create_connection((address, 5201), timeout=10))
        conn.settimeout(timeout_s)
        started = time.monotonic()
        if during is not None:
            threading.Timer(0.2, during).start()
        with conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            count, digest = server.stdout.readline().split()
        elapsed = time.monotonic() - started
        server.wait(timeout=10)
        return int(count), digest.decode(), elapsed
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the acceptance floor ------------------------------------------------------------------


def test_ping_20_and_16_mib_of_tcp(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        out = ping(r.host_ns, BOARD_IP, count=20)
        assert "20 received" in out
        payload = os.urandom(16 << 20)
        count, digest, _ = transfer(r.host_ns, r.board_ns, BOARD_IP, payload)
        assert (count, digest) == (len(payload), sha256(payload))
        back = os.urandom(4 << 20)
        count, digest, _ = transfer(r.board_ns, r.host_ns, HOST_IP, back)
        assert (count, digest) == (len(back), sha256(back))


PROFILE = f"""
board = "bb-profile"

[link]
spec = "{{link}}"
baud = 115200

[net]
tap = "{TAP}"
address = "{BOARD_IP}/24"
mtu = 4000

[[device]]
type = "board-info"

[[device]]
type = "virtio-net"
"""


def test_a_profile_with_link_and_net_runs_the_board_alone(tmp_path: Path) -> None:
    """``ira board serve --profile FILE``: the link, the TAP, its address and MTU from the file."""
    with rig(tmp_path, profile=PROFILE) as r:
        for ns in (r.board_ns, r.host_ns):
            assert " mtu 4000 " in ns.run(["ip", "-o", "link", "show", TAP]).stdout.decode()
        address = r.board_ns.run(["ip", "-o", "addr", "show", TAP]).stdout.decode()
        assert f" {BOARD_IP}/24 " in address
        assert "3 received" in ping(r.host_ns, BOARD_IP, count=3, size=3972)


def test_mtu_9000_carries_9000_byte_pings_unfragmented(tmp_path: Path) -> None:
    with rig(tmp_path, board_args=("--mtu", "9000")) as r:
        for ns in (r.board_ns, r.host_ns):
            assert " mtu 9000 " in ns.run(["ip", "-o", "link", "show", TAP]).stdout.decode()
        ping(r.host_ns, BOARD_IP, count=3, size=8972)  # 8972 + 8 ICMP + 20 IP = 9000, DF set
        ping(r.board_ns, HOST_IP, count=3, size=8972)
        too_big = r.host_ns.run(
            ["ping", "-n", "-c", "1", "-M", "do", "-s", "8973", BOARD_IP], check=False
        )
        assert too_big.returncode != 0


def test_a_restarted_board_takes_the_carrier_and_gives_it_back(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        ping(r.host_ns, BOARD_IP, count=2)
        r.kill_board()
        r.wait_carrier(False)
        assert carrier(r.host_ns) is False  # the interface stays, without carrier
        r.start_board()
        r.wait_carrier(True)
        payload = os.urandom(1 << 20)
        count, digest, _ = transfer(r.host_ns, r.board_ns, BOARD_IP, payload)
        assert (count, digest) == (len(payload), sha256(payload))


# -- malformed frames from the peer ----------------------------------------------------------


class Injector:
    """The board's port, plus frames a test slips in as if the board's stack sent them."""

    def __init__(self, port: NetPort, post: Callable[[Callable[[], None]], None]) -> None:
        self._port = port
        self._post = post
        self._extra: list[bytes] = []
        self._on_readable: Callable[[], None] | None = None
        self.name, self.vnet_hdr, self.mtu = port.name, port.vnet_hdr, port.mtu

    def inject(self, frames: list[bytes]) -> None:
        def run() -> None:
            self._extra.extend(frames)
            if self._on_readable is not None:
                self._on_readable()

        self._post(run)

    def read_frame(self) -> bytes | None:
        return self._extra.pop(0) if self._extra else self._port.read_frame()

    def write_frame(self, frame: bytes) -> bool:
        return self._port.write_frame(frame)

    def connect(self, on_readable: Callable[[], None]) -> None:
        self._on_readable = on_readable
        self._port.connect(on_readable)

    def set_carrier(self, on: bool) -> None:
        self._port.set_carrier(on)

    def set_offloads(self, offloads: Offloads) -> None:
        self._port.set_offloads(offloads)


def _frame(hdr: tuple[int, ...], size: int = 60) -> bytes:
    eth = bytes.fromhex("ffffffffffff02000000000a0800")
    return HEADER.pack(*hdr) + eth + bytes(size - len(eth))


NEEDS_CSUM, TCPV4 = int(HdrFlags.NEEDS_CSUM), int(GsoType.TCPV4)
MALFORMED = [
    (Drop.BAD_GSO, _frame((0, TCPV4, 54, 1448, 34, 16, 0))),
    (Drop.BAD_GSO, _frame((NEEDS_CSUM, TCPV4, 54, 0, 34, 16, 0))),
    (Drop.BAD_HDR_LEN, _frame((0, 0, 61, 0, 0, 0, 0))),
    (Drop.BAD_CSUM, _frame((NEEDS_CSUM, 0, 0, 0, 34, 25, 0))),
]


def test_malformed_frames_from_the_board_are_dropped_counted_and_the_link_stays_up() -> None:
    require_root_support(ping=True)
    with ExitStack() as stack:
        nm = stack.enter_context(NullModem(NullModemConfig()))
        board_ns = stack.enter_context(NetNs())
        host_ns = stack.enter_context(NetNs())
        settings = TapSettings(TAP, (f"{BOARD_IP}/24",), netns=board_ns)
        injector: list[Injector] = []

        def post(fn: Callable[[], None]) -> None:
            board.runtime.post(fn)

        net = BoardNet.with_tap(settings, "bb-1", post)
        stack.callback(net.close)

        def port_for(spec: object) -> NetPort:
            injector.append(Injector(net.loop_port, post))
            return injector[-1]

        profile = Profile("bb-1", (DeviceSpec("net0", "virtio-net"),))
        board = BoardService(nm.path_a, profile, on_event=net.on_event, net_port=port_for)
        stack.enter_context(board)  # devices (and the injector) exist from here on
        host_net = HostNet.with_tap(TapSettings(TAP, (f"{HOST_IP}/24",), netns=host_ns))
        stack.callback(host_net.close)
        host = HostClient(
            nm.path_b,
            on_event=lambda client, event: host_net.on_event(event),
            virtio_clients=host_net.clients(),
        )
        host_net.bind(lambda fn: host.runtime.post(fn))
        stack.enter_context(host)
        deadline = time.monotonic() + 10
        while not host_net.carrier:
            assert time.monotonic() < deadline, "no carrier on the host"
            time.sleep(0.05)
        ping(host_ns, BOARD_IP, count=2)
        injector[0].inject([f for _, f in MALFORMED])
        expected = Counter(reason for reason, _ in MALFORMED)

        def dropped() -> Mapping[Drop, int]:
            driver, _ = host.runtime.call(host_net.statistics)
            return {} if driver is None else driver.rx.dropped

        deadline = time.monotonic() + 10
        while dropped() != expected:
            assert time.monotonic() < deadline, dropped()
            time.sleep(0.05)
        assert carrier(host_ns) is True
        ping(host_ns, BOARD_IP, count=3)
        rx_errors = host_ns.run(["cat", f"/sys/class/net/{TAP}/statistics/rx_errors"])
        assert rx_errors.stdout.strip() == b"0"  # nothing malformed reached the kernel


# -- slow variants -----------------------------------------------------------------------------


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> None:
    """Soak variants run under ``make soak`` (``IRA_SOAK=1``) or ``-m slow`` only."""
    if not (os.environ.get("IRA_SOAK") or "slow" in (request.config.option.markexpr or "")):
        pytest.skip("soak variant: run by make soak (IRA_SOAK=1) or -m slow")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_115200_baud_with_bit_errors(soak: None, tmp_path: Path) -> None:
    with rig(tmp_path, baud=115200, ber=1e-5) as r:
        out = ping(r.host_ns, BOARD_IP, count=5)
        assert "5 received" in out
        payload = os.urandom(256 << 10)
        count, digest, _ = transfer(r.host_ns, r.board_ns, BOARD_IP, payload, timeout_s=120.0)
        assert (count, digest) == (len(payload), sha256(payload))


@pytest.mark.slow
def test_a_3_s_unplug_in_the_middle_of_a_transfer(soak: None, tmp_path: Path) -> None:
    with rig(tmp_path, baud=921600) as r:
        payload = os.urandom(2 << 20)
        count, digest, elapsed = transfer(
            r.host_ns,
            r.board_ns,
            BOARD_IP,
            payload,
            timeout_s=120.0,
            during=lambda: r.nm.unplug(3.0),
        )
        assert (count, digest) == (len(payload), sha256(payload))
        assert elapsed > 3.0  # the unplug happened during the transfer
