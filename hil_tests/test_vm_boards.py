"""Two virtual boards (boards/qemu-x86_64) as a rig of two boards: their data UARTs
(ttyS1) joined through a null-modem at 115200 baud, both flashed with ``ira flash``
through their consoles, one with the board profile (``ira board serve``), one with the
host profile (``ira host serve``: ``role = "host"``), each with a venet interface
(``ira0``: 10.0.0.1 on the host board, 10.0.0.2 on the board).  The host board's service log
shows what it sees; DEVCALLs run on the host board (``ira ping``).

Discovery, DEVCALLs, venet ping and a TCP transfer run in the default suite; the rest
(a board rebooted, the cable unplugged) only in ``make hil-vm`` (``IRA_HIL_VM=1``): each
boot of a guest Python costs tens of seconds under TCG.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ira.tools import vboard
from ira.tools.flash.session import FlashOptions, flash
from ira.tools.nullmodem import NullModem, NullModemConfig

pytestmark = pytest.mark.timeout(900)
BOARDS = Path(__file__).resolve().parents[1] / "boards" / "qemu-x86_64"
LOG = "/var/log/ira-board.log"
LINK = "serial:///dev/ttyS1?baud=115200"
full = pytest.mark.skipif(
    os.environ.get("IRA_HIL_VM") != "1", reason="the long two-board checks run in make hil-vm"
)


@dataclass
class Pair:
    host: vboard.VirtualBoard
    board: vboard.VirtualBoard
    cable: NullModem

    def host_log(self) -> str:
        rc, out = self.host.run(f"cat {LOG}")
        assert rc == 0, out
        return out

    def wait_log(self, pattern: str, *, after: int = 0, timeout_s: float = 120.0) -> int:
        """Wait until ``pattern`` shows in the host board's log past offset ``after``;
        the offset where that match ends."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.host_log()
            found = re.compile(pattern, re.M).search(text, after)
            if found is not None:
                return found.end()
            if time.monotonic() > deadline:
                pytest.fail(f"the host board never logged {pattern!r}; its log:\n{text}")
            time.sleep(2.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    reason = vboard.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no virtual board here: {reason}")
    image = vboard.build_image()
    where = tmp_path_factory.mktemp("hil-vm")
    with NullModem(NullModemConfig(baud=115200)) as cable:
        host = vboard.VirtualBoard(
            vboard.fresh_flash(where / "host.img", image), data_link=cable.path_a, image=image
        )
        board = vboard.VirtualBoard(
            vboard.fresh_flash(where / "board.img", image), data_link=cable.path_b, image=image
        )
        try:
            for vm, profile in ((board, "board-net.toml"), (host, "host.toml")):
                vm.start()
                vm.wait_for_shell()
                opts = FlashOptions(
                    console=vm.console_path,
                    profile=str(BOARDS / profile),
                    shell_timeout_s=30.0,
                    progress=None,
                )
                report = flash(opts)
                assert report.transferred, report.lines
            yield Pair(host, board, cable)
        finally:
            host.kill()
            board.kill()


def test_the_host_board_discovers_the_board(pair: Pair) -> None:
    pair.wait_log(r"ready: 3 devices")
    text = pair.host_log()
    assert re.search(r"\+ device 1 board-info v\d+ board=qemu-x86_64 ", text), text
    assert re.search(r"\+ device 2 echo ", text), text
    assert re.search(r"\+ device 3 virtio ", text), text
    rc, out = pair.host.run("ps")
    assert rc == 0 and "host serve serial:///dev/ttyS1" in out


def test_devcalls_from_the_host_board(pair: Pair) -> None:
    # ira ping needs the port: the service steps aside for it
    script = f"/etc/init.d/S90ira-board stop; sleep 1; ira ping -c 5 -i 0.2 '{LINK}'"
    rc, out = pair.host.run(f"{script}; rc=$?; /etc/init.d/S90ira-board start; (exit $rc)", 180)
    assert rc == 0, out
    assert "5 calls, 5 replies, 0% lost" in out, out


#: the board's end of a TCP transfer: receive until EOF, print the byte count and SHA-256
_RECEIVE = """\
import socket, hashlib
s = socket.create_server(("10.0.0.2", 5001))
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while d := c.recv(65536):
    h.update(d)
    n += len(d)
print(n, h.hexdigest())
"""
#: the host board's end: send 48 KiB of a fixed pattern, print its count and SHA-256
_SEND = """\
import socket, hashlib
d = bytes(range(256)) * 192
c = socket.create_connection(("10.0.0.2", 5001), 60)
c.sendall(d)
c.close()
print(len(d), hashlib.sha256(d).hexdigest())
"""


def _script(vm: vboard.VirtualBoard, path: str, text: str) -> None:
    rc, out = vm.run(f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {path}")
    assert rc == 0, out


def _network_up(pair: Pair, timeout_s: float = 60.0) -> None:
    """The host board's interface (host.toml's ``[net]``: ira0, 10.0.0.1/24) gets its
    address after the board is ready: wait for it too, not only for the devices."""
    pair.wait_log(r"ready: 3 devices")
    deadline = time.monotonic() + timeout_s
    while pair.host.run("ip -4 addr show ira0 | grep -q 'inet 10.0.0.1/'")[0] != 0:
        assert time.monotonic() < deadline, "ira0 on the host board never got 10.0.0.1/24"
        time.sleep(1.0)


def test_venet_ping_between_the_guests(pair: Pair) -> None:
    _network_up(pair)
    rc, out = pair.host.run("ping -c 3 -W 10 10.0.0.2", 120)
    assert rc == 0 and "3 packets received" in out, out


def test_a_tcp_transfer_between_the_guests(pair: Pair) -> None:
    _network_up(pair)
    _script(pair.board, "/tmp/rx.py", _RECEIVE)
    _script(pair.host, "/tmp/tx.py", _SEND)
    assert pair.board.run("rm -f /tmp/rx; (python3 /tmp/rx.py > /tmp/rx 2>&1 &)")[0] == 0
    deadline = time.monotonic() + 120
    while pair.board.run("netstat -ltn | grep -q ':5001 '")[0] != 0:
        assert time.monotonic() < deadline, pair.board.run("cat /tmp/rx")[1]
        time.sleep(1.0)
    started = time.monotonic()
    rc, sent = pair.host.run("python3 /tmp/tx.py", 180)
    assert rc == 0, sent
    while not (got := pair.board.run("cat /tmp/rx")[1].strip()):
        assert time.monotonic() < deadline + 120, "the board never received the transfer"
        time.sleep(1.0)
    assert got == sent.strip(), (got, sent, time.monotonic() - started)


@full
def test_a_rebooted_board_is_rediscovered(pair: Pair) -> None:
    pair.wait_log(r"ready: 3 devices")
    before = len(pair.host_log())  # what follows is the reboot's
    pair.board.reboot()
    pair.wait_log(r"ready: 3 devices", after=before, timeout_s=180)


@full
def test_the_cable_unplugged_and_back(pair: Pair) -> None:
    pair.wait_log(r"ready: 3 devices")
    before = len(pair.host_log())  # what follows is the unplug's
    pair.cable.unplug(20.0)
    down = pair.wait_log(r"link down", after=before, timeout_s=60)
    pair.wait_log(r"link up after|ready: 3 devices", after=down, timeout_s=120)
