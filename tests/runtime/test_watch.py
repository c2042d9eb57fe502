"""Which boards a directory of stable names holds, and the link spec of each."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ira.runtime.watch import USB_DEVICE_MAJOR, BoardDirectory, BoardSeen, link_spec


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    return master, path


def test_names_of_ttys_come_and_go_as_their_ports_do(tmp_path: Path) -> None:
    boards = BoardDirectory(tmp_path / "ira")
    assert boards.scan().added == ()  # no directory yet: nothing plugged in
    (tmp_path / "ira").mkdir()
    master, pts = _pty()
    (tmp_path / "ira" / "bench-a").symlink_to(pts)
    (tmp_path / "ira" / "notes.txt").write_text("not a device")
    (tmp_path / "ira" / ".hidden").symlink_to(pts)
    changes = boards.scan()
    assert changes.added == (BoardSeen("bench-a", str(tmp_path / "ira" / "bench-a")),)
    assert changes.removed == ()
    assert boards.scan().added == boards.scan().removed == ()
    os.close(master)  # the pty goes away: the name dangles, as an unplugged adapter's does
    changes = boards.scan()
    assert changes.removed == (BoardSeen("bench-a", str(tmp_path / "ira" / "bench-a")),)
    assert boards.present == []
    master, pts = _pty()  # plugged in again, perhaps on another tty
    (tmp_path / "ira" / "bench-a").unlink()
    (tmp_path / "ira" / "bench-a").symlink_to(pts)
    assert [b.name for b in boards.scan().added] == ["bench-a"]
    os.close(master)


@pytest.mark.root
def test_a_usb_device_node_becomes_its_usb_spec(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node (mknod)")
    sysfs = tmp_path / "sys"
    device = sysfs / "dev" / "char" / f"{USB_DEVICE_MAJOR}:7"
    device.mkdir(parents=True)
    (device / "idVendor").write_text("1d6b\n")
    (device / "idProduct").write_text("0104\n")
    (device / "serial").write_text("board-7\n")
    node = tmp_path / "007"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(USB_DEVICE_MAJOR, 7))
    (tmp_path / "ira").mkdir()
    (tmp_path / "ira" / "board-7").symlink_to(node)
    assert link_spec(tmp_path / "ira" / "board-7", sysfs) == "usb://1d6b:0104/board-7"
    (device / "serial").unlink()  # a gadget without a serial number
    assert link_spec(tmp_path / "ira" / "board-7", sysfs) == "usb://1d6b:0104"
    (device / "idVendor").unlink()  # the device went away under our feet
    assert link_spec(tmp_path / "ira" / "board-7", sysfs) is None
