"""``ira flash`` on the virtual board (boards/qemu-x86_64): a fresh board flashed through
its console at 115200 baud (a throttled null-modem), rebooted, re-flashed, and its plug
pulled half-way through the install of a second version.

One board is booted for the module: the tests follow one board's life, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vboardrig import BAUD, Rig, booted, devices_on, image_or_skip, other_payload

from ira.tools.flash import plan
from ira.tools.flash.session import FlashError, FlashOptions, flash, payload

PROFILE = str(Path(__file__).resolve().parents[2] / "boards" / "qemu-x86_64" / "profile.toml")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    image = image_or_skip()
    with booted(tmp_path_factory.mktemp("vboard") / "flash.img", image) as r:
        yield r


def options(r: Rig, **kw: Any) -> FlashOptions:
    return FlashOptions(
        console=r.board.console_path, profile=PROFILE, baud=BAUD, shell_timeout_s=30.0, **kw
    )


def current(r: Rig) -> str:
    rc, out = r.board.run("readlink /opt/ira/current")
    assert rc == 0, out
    return out.strip()


def test_the_fresh_board_has_python_but_no_ira(rig: Rig) -> None:
    rc, out = rig.board.run("python3 -c 'import sys; print(sys.version_info >= (3, 11))'")
    assert (rc, out) == (0, "True")
    assert rig.board.run("ls /opt/ira")[0] != 0
    assert rig.board.run("command -v ira")[0] != 0


def test_flashed_at_115200_the_board_answers_on_its_data_link(rig: Rig) -> None:
    pl = payload()
    report = flash(options(rig, data_link=rig.host_end))
    assert report.transferred
    assert f"installed {pl.version_id}" in report.lines
    assert "initd" in report.lines[0]  # no systemd on the board: the init script
    assert [row.split()[1] for row in report.devices] == ["board-info", "echo"]
    assert current(rig) == f"versions/{pl.version_id}"
    rc, out = rig.board.run(f"cat {plan.INITD_PATH}")
    assert rc == 0 and "board serve --profile /etc/ira/board.toml" in out


def test_rebooted_ira_comes_up_by_itself(rig: Rig) -> None:
    rig.board.reboot()
    rc, out = rig.board.run("cat /run/ira-board.pid && kill -0 $(cat /run/ira-board.pid)")
    assert rc == 0, out
    devices = devices_on(rig.host_end)
    assert [d.type for d in devices] == ["board-info", "echo"]
    assert dict(devices[0].attrs)["board"] == "qemu-x86_64"


def test_flashing_the_same_version_again_only_checks(rig: Rig) -> None:
    pl = payload()
    report = flash(options(rig))
    assert not report.transferred
    assert f"{pl.version_id} is installed and intact: nothing to transfer" in report.lines
    assert report.statistics is None  # no stub was typed
    assert current(rig) == f"versions/{pl.version_id}"


def test_plug_pulled_during_the_install_boots_the_previous_version(rig: Rig) -> None:
    before = current(rig)
    second = other_payload()
    # the install of the second version blocks where it writes the profile (a FIFO
    # nobody reads stands where its temporary goes): after it unpacked, before the switch
    fifo = plan.PROFILE_PATH + ".ira-tmp"
    assert rig.board.run(f"rm -f {fifo}; mkfifo {fifo}")[0] == 0
    pulled = threading.Event()

    def pull(have: int, size: int) -> None:
        if have == size and not pulled.is_set():
            pulled.set()
            # the INSTALL request goes out after this call; the board then unpacks for a
            # while and stops at the FIFO: pull the plug well after it got there
            threading.Timer(8.0, rig.board.kill).start()

    with pytest.raises(FlashError, match=r"stopped answering|console"):
        flash(options(rig, progress=pull), the_payload=second)
    assert pulled.is_set()
    assert not rig.board.running
    rig.board.start()
    rig.board.wait_for_shell()
    assert current(rig) == before
    assert rig.board.run(f"rm -f {fifo}")[0] == 0
    assert [d.type for d in devices_on(rig.host_end)] == ["board-info", "echo"]
