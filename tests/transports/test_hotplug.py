"""Hints that a port is back: a serial path made again, a USB device in sysfs."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from ira.transports.hotplug import HotplugWatch, nearest_directory, watch_for
from ira.transports.usb import parse_usb_spec, sysfs_present

pytestmark = pytest.mark.timeout(30)


def _readable(fd: int, timeout_s: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout_s)[0])


def test_a_path_made_in_its_directory_wakes_the_watch(tmp_path: Path) -> None:
    port = tmp_path / "by-id" / "board1"
    watch = watch_for(str(port))
    assert watch is not None
    try:
        fd = watch.fileno()
        assert fd is not None
        assert not watch.present()
        # the directory does not exist yet: its parent is watched
        assert nearest_directory(port) == tmp_path
        (tmp_path / "by-id").mkdir()
        assert _readable(fd, 5.0)
        assert not watch.present()  # drained; the port is not there yet
        assert not _readable(fd)
        os.mkfifo(tmp_path / "by-id" / "other")  # not this port: woken, not present
        assert watch.present() is False
        os.mkfifo(port)  # the port (any node this process may open)
        assert watch.present()
    finally:
        watch.close()


def test_pyserial_urls_have_no_watch() -> None:
    assert watch_for("socket://localhost:5000") is None
    assert watch_for("loop://") is None


def test_a_watch_without_sources_is_polled() -> None:
    seen = [False]
    watch = HotplugWatch(lambda: seen[0], uevents=False)
    assert watch.fileno() is None
    assert not watch.present()
    seen[0] = True
    assert watch.present()
    watch.close()


def _device(sysfs: Path, name: str, **attributes: str) -> None:
    device = sysfs / "bus" / "usb" / "devices" / name
    device.mkdir(parents=True)
    for key, value in attributes.items():
        (device / key).write_text(value + "\n")


def test_a_usb_device_is_present_once_configured_and_open_to_us(tmp_path: Path) -> None:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    spec = parse_usb_spec("usb://1d6b:0104/b1")
    _device(sysfs, "1-1:1.0")  # an interface: never a device
    _device(
        sysfs,
        "1-1",
        idVendor="1d6b",
        idProduct="0104",
        serial="b1",
        busnum="1",
        devnum="5",
        bConfigurationValue="",  # still being enumerated
    )
    assert not sysfs_present(spec, sysfs, dev)
    (sysfs / "bus/usb/devices/1-1/bConfigurationValue").write_text("1\n")
    assert not sysfs_present(spec, sysfs, dev)  # no node yet
    node = dev / "bus" / "usb" / "001" / "005"
    node.parent.mkdir(parents=True)
    node.write_text("")
    assert sysfs_present(spec, sysfs, dev)
    assert sysfs_present(parse_usb_spec("usb://1-1"), sysfs, dev)
    assert not sysfs_present(parse_usb_spec("usb://1d6b:0104/b2"), sysfs, dev)
    assert not sysfs_present(parse_usb_spec("usb://1-2"), sysfs, dev)
