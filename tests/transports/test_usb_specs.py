"""``usb://`` and ``ffs://`` specs are checked before any device is touched."""

from __future__ import annotations

import pytest

from ira.errors import ConfigError
from ira.transports import BUILTIN, opener_for
from ira.transports.ffs import parse_ffs_spec
from ira.transports.gadget import DEFAULT_PID, DEFAULT_VID
from ira.transports.usb import UsbSpec, parse_usb_spec


def test_usb_by_identity() -> None:
    assert parse_usb_spec("usb://1d6b:0104/board1") == UsbSpec(0x1D6B, 0x0104, "board1")
    assert parse_usb_spec("usb://1D6B:0104") == UsbSpec(0x1D6B, 0x0104, None)
    assert parse_usb_spec("usb://1d6b:0104/b?wait=2.5").wait_s == 2.5


def test_usb_by_port() -> None:
    assert parse_usb_spec("usb://1-1.2") == UsbSpec(bus=1, ports=(1, 2))
    assert parse_usb_spec("usb://3-4") == UsbSpec(bus=3, ports=(4,))


@pytest.mark.parametrize(
    "spec",
    ["usb://", "usb://1d6b", "usb://1d6b:01045", "usb://x-1", "usb://1d6b:0104?wait=-1",
     "usb://1d6b:0104?speed=3", "usb://1-"],
)  # fmt: skip
def test_bad_usb_specs_are_one_line(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_usb_spec(spec)
    assert "\n" not in str(info.value)


def test_ffs_defaults() -> None:
    options = parse_ffs_spec("ffs://board1")
    assert (options.name, options.vid, options.pid) == ("board1", DEFAULT_VID, DEFAULT_PID)
    assert (options.serial, options.acm, options.udc) == ("", False, "")


def test_ffs_options() -> None:
    options = parse_ffs_spec("ffs://b?vid=0x1209&pid=0x0001&serial=S1&acm=1&udc=dummy_udc.1")
    assert (options.vid, options.pid, options.serial) == (0x1209, 1, "S1")
    assert options.acm and options.udc == "dummy_udc.1"


@pytest.mark.parametrize(
    "spec", ["ffs://", "ffs://a/b", "ffs://a b", "ffs://a?vid=0x10000", "ffs://a?acm=2",
             "ffs://a?colour=red"],
)  # fmt: skip
def test_bad_ffs_specs_are_one_line(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_ffs_spec(spec)
    assert "\n" not in str(info.value)


def test_schemes_are_registered() -> None:
    assert {"usb", "ffs"} <= set(BUILTIN)
    assert opener_for("usb://1d6b:0104").__name__ == "open_usb"
    assert opener_for("ffs://x").__name__ == "open_ffs"
