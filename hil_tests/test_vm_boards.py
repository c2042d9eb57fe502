"""Two virtual boards (boards/qemu-x86_64) as a rig of two boards: their data UARTs
(ttyS1) joined through a null-modem at 115200 baud, both flashed with ``ira flash``
through their consoles, one with the board profile (``ira board serve``), one with the
host profile (``ira host serve``: ``role = "host"``).  The host board's service log
shows what it sees; DEVCALLs run on the host board (``ira ping``).

The discovery and DEVCALL checks run in the default suite; the rest (a board rebooted,
the cable unplugged) only in ``make hil-vm`` (``IRA_HIL_VM=1``): each boot of a guest
Python costs tens of seconds under TCG.
"""

from __future__ import annotations

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

    def wait_log(self, pattern: str, *, after: int = 0, timeout_s: float = 120.0) -> str:
        """The host board's log once ``pattern`` shows in it past offset ``after``."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.host_log()
            if re.search(pattern, text[after:], re.M):
                return text
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
            for vm, profile in ((board, "profile.toml"), (host, "host.toml")):
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
    text = pair.wait_log(r"ready: 2 devices")
    assert re.search(r"\+ device 1 board-info v\d+ board=qemu-x86_64 ", text), text
    assert re.search(r"\+ device 2 echo ", text), text
    rc, out = pair.host.run("ps")
    assert rc == 0 and "host serve serial:///dev/ttyS1" in out


def test_devcalls_from_the_host_board(pair: Pair) -> None:
    # ira ping needs the port: the service steps aside for it
    script = f"/etc/init.d/S90ira-board stop; sleep 1; ira ping -c 5 -i 0.2 '{LINK}'"
    rc, out = pair.host.run(f"{script}; rc=$?; /etc/init.d/S90ira-board start; (exit $rc)", 180)
    assert rc == 0, out
    assert "5 calls, 5 replies" in out or re.search(r"\b0(\.0)?% loss", out), out


@full
def test_a_rebooted_board_is_rediscovered(pair: Pair) -> None:
    before = len(pair.wait_log(r"ready: 2 devices"))
    pair.board.reboot()
    pair.wait_log(r"ready: 2 devices", after=before, timeout_s=180)


@full
def test_the_cable_unplugged_and_back(pair: Pair) -> None:
    before = len(pair.wait_log(r"ready: 2 devices"))
    pair.cable.unplug(20.0)
    text = pair.wait_log(r"link down", after=before, timeout_s=60)
    pair.wait_log(r"link up after|ready: 2 devices", after=len(text) - 200, timeout_s=120)
