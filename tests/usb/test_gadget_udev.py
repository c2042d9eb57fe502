"""udev on a real kernel USB stack: a gadget board named /dev/ira/<serial> for its group, used
without root, and followed by the watching host service (``scenario_udev.py``)."""

from __future__ import annotations

import pytest
from usbrig import GuestStack, LocalStack, run_scenario

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def facts(usb_stack: LocalStack | GuestStack) -> dict[str, object]:
    return run_scenario(usb_stack, "scenario_udev", timeout_s=800)


def test_a_bound_gadget_gets_its_name_and_the_groups_permissions(facts: dict[str, object]) -> None:
    assert facts["install"] == {"rc": 0, "out": facts["install"]["out"], "err": ""}  # type: ignore[index]
    assert facts["udevd_up_s"] is not None
    assert facts["name_appeared_s"] is not None
    assert facts["node_mode"] == "0o660"
    assert facts["node_group"] == "plugdev"
    assert facts["acm_name"] is True


def test_a_user_in_the_group_lists_the_boards_devices(facts: dict[str, object]) -> None:
    ran = facts.get("nobody_list")
    if ran is None:
        pytest.fail("no /usr/bin/python3 to run ira as an unprivileged user")
    assert isinstance(ran, dict)
    assert ran["rc"] == 0, ran
    assert "echo" in str(ran["out"])


def test_the_watching_host_follows_unbind_and_bind(facts: dict[str, object]) -> None:
    assert facts["served"] is True, facts["host_lines"]
    assert facts["unplugged_seen"] is True, facts["host_lines"]
    assert facts["bind_to_resumed_s"] is not None, facts["host_lines"]


def test_the_watching_host_serves_a_board_soon_after_it_is_bound(
    facts: dict[str, object],
) -> None:
    assert facts["second_bound"] is True
    served = facts["bind_to_served_s"]
    assert isinstance(served, float), facts["host_lines"]
    # enumeration, udev, the next look at /dev/ira (0.25 s), the handshake and discovery, in a
    # guest whose Python runs ~15 times slower than here: see docs/RIG.md for the figure
    assert served < 10.0, served


def test_uninstall_removes_the_rules(facts: dict[str, object]) -> None:
    assert facts["uninstall"]["rc"] == 0  # type: ignore[index]
    assert "removed /run/udev/rules.d/70-ira.rules" in facts["uninstall"]["out"]  # type: ignore[index]
