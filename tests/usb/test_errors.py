"""A host that cannot use a board, and boards that misbehave, on a real kernel USB stack.

``scenario_errors.py`` runs once for the module; each test asserts one item of
what it saw: one line naming the fix for the host's own problems, a clear
error or a counted refusal for the device's, and never a hang.
"""

from __future__ import annotations

import pytest
from usbrig import GuestStack, LocalStack, run_scenario

pytestmark = pytest.mark.timeout(900)

#: a failing ``ira host list`` returns within this (Python starts slowly in the guest)
BOUNDED_S = 90


@pytest.fixture(scope="module")
def facts(usb_stack: LocalStack | GuestStack) -> dict[str, object]:
    return run_scenario(usb_stack, "scenario_errors", timeout_s=600)


def failed_with_one_line(facts: dict[str, object], key: str) -> str:
    ran = facts[key]
    assert isinstance(ran, dict)
    assert ran["rc"] == 1, ran
    err = str(ran["err"])
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert float(ran["elapsed_s"]) < BOUNDED_S
    return err


def test_no_permission_names_the_udev_rule(facts: dict[str, object]) -> None:
    assert facts["board_up"] is True
    err = failed_with_one_line(facts, "no_permission")
    assert "permission denied" in err
    assert 'ATTR{idVendor}=="1d6b"' in err and "udev" in err


def test_second_host_is_told_the_interface_is_busy_and_by_whom(facts: dict[str, object]) -> None:
    err = failed_with_one_line(facts, "busy")
    assert "busy" in err
    assert "scenario_errors.py" in err  # the process holding it


def test_missing_endpoint_is_a_clear_error(facts: dict[str, object]) -> None:
    assert facts["noout_up"] is True
    err = failed_with_one_line(facts, "missing_endpoint")
    assert "no vendor-specific interface with a bulk IN and a bulk OUT endpoint" in err


def test_endpoints_that_always_stall_are_a_clear_error(facts: dict[str, object]) -> None:
    assert facts["stall_up"] is True
    err = failed_with_one_line(facts, "stalls")
    assert "stalls every transfer" in err


def test_babble_is_counted_and_dropped_and_the_next_frame_arrives(
    facts: dict[str, object],
) -> None:
    assert facts["babble_up"] is True
    assert facts["babble_counted"] == 1
    assert facts["after_babble"] == [10]
    assert facts["short_frame_intact"] is True


def test_broken_gadgets_are_removed(facts: dict[str, object]) -> None:
    assert facts["gadgets_left"] == []
