"""USB links on a real kernel USB stack: a board on FunctionFS and on ACM, a host on libusb.

One scenario (``scenario_links.py``) runs on the stack for the whole module:
boards started with ``ira board serve ffs://b1?acm=1`` and ``ira board serve
/dev/ttyGS0``, the host's commands run against ``usb://1d6b:0104/b1`` and
``/dev/ttyACM0``.  Each test asserts one acceptance item on what it saw.
"""

from __future__ import annotations

import json
import sys

import pytest
from usbrig import GuestStack, LocalStack, run_scenario

pytestmark = pytest.mark.timeout(900)

DEVICES = ["board-info", "echo", "counter", "ring-loopback"]
FOUR_MIB = 4 << 20


@pytest.fixture(scope="module")
def facts(usb_stack: LocalStack | GuestStack) -> dict[str, object]:
    return run_scenario(usb_stack, "scenario_links", timeout_s=600)


def command(facts: dict[str, object], key: str) -> dict[str, object]:
    ran = facts[key]
    assert isinstance(ran, dict)
    assert ran["rc"] == 0, f"{key}: {ran}"
    return ran


def listed(out: object) -> list[str]:
    assert isinstance(out, str)
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert rows and rows[-1].startswith("link "), out  # the link's state comes last
    return [line.split()[1] for line in rows[:-1]]


@pytest.mark.parametrize("kind", ["ffs", "acm"])
def test_host_discovers_the_board(facts: dict[str, object], kind: str) -> None:
    assert "serving on" in str(facts[f"{kind}_board_banner"])
    assert listed(command(facts, f"{kind}_list")["out"]) == DEVICES


@pytest.mark.parametrize("kind", ["ffs", "acm"])
def test_ping_100_without_loss(facts: dict[str, object], kind: str) -> None:
    out = str(command(facts, f"{kind}_ping")["out"])
    assert "100 calls, 100 replies, 0% lost" in out


@pytest.mark.parametrize("kind", ["ffs", "acm"])
def test_linktest_4_mib_intact(facts: dict[str, object], kind: str) -> None:
    report = json.loads(str(command(facts, f"{kind}_linktest")["out"]))
    assert report["ok"] is True
    assert report["bytes_received"] >= FOUR_MIB
    assert report["corrupt"] == 0
    assert report["duplicates"] == 0
    assert report["out_of_order"] == 0


def test_boards_exit_cleanly_and_remove_their_gadgets(facts: dict[str, object]) -> None:
    assert facts["acm_tty_made"] is True
    assert facts["acm_device"] is True
    assert facts["ffs_board_rc"] == 0
    assert facts["acm_board_rc"] == 0
    assert facts["gadgets_left"] == []
    assert facts["gadgets_left_after_linktest"] == []


def test_loopback_over_usb(usb_stack: LocalStack | GuestStack) -> None:
    """``ira loopback --usb``: the demo's report over a gadget, venet included."""
    ran = usb_stack.run(
        f"{sys.executable} -m ira loopback --usb -c 3 --tcp-bytes 256K --bytes 512K", 600
    )
    assert ran.returncode == 0, ran.output[-4000:]
    assert "USB gadget: board ffs://ira-loop" in ran.output
    assert "SHA-256 matches" in ran.output
    assert "linktest PASS: ffs://ira-loop" in ran.output
