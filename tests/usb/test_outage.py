"""A USB cable pulled and plugged back, and a board restarted, on a real kernel USB stack.

``scenario_outage.py`` runs once for the module (see its docstring); each test
asserts one acceptance item on what it saw.
"""

from __future__ import annotations

import pytest
from usbrig import GuestStack, LocalStack, run_scenario

from ira.runtime.port import REOPEN_MAX_S

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def facts(usb_stack: LocalStack | GuestStack) -> dict[str, object]:
    return run_scenario(usb_stack, "scenario_outage", timeout_s=600)


def test_unplugged_for_3_s_the_host_reports_the_link_down(facts: dict[str, object]) -> None:
    assert facts["enumerated"] is True and facts["before"] is True
    events = facts["events_outage"]
    assert isinstance(events, list)
    names = [name for _, name in events]
    assert names.index("PortLost") < names.index("PortBack")
    assert "LinkDown" in names
    down_at = next(t for t, name in events if name == "LinkDown")
    assert down_at < float(facts["replug_s"])  # type: ignore[arg-type]
    assert facts["calls_done_while_unplugged"] == 0


def test_unplugged_the_board_reports_its_link_down_at_once_and_resumes(
    facts: dict[str, object],
) -> None:
    """ep0 UNBIND/DISABLE take the board's carrier: its FunctionFS port is gone (PortGone),
    the link down at once, not after the dead interval; ENABLE brings both back."""
    log = facts["board_outage"]
    assert isinstance(log, list)
    messages = [message for _, message in log]
    gone = next(i for i, m in enumerate(messages) if m.startswith("port gone"))
    assert "the host went away" in messages[gone]
    down = next(i for i, m in enumerate(messages) if m.startswith("link down"))
    back = next(i for i, m in enumerate(messages) if m.startswith("port back"))
    up = next(i for i, m in enumerate(messages) if m.startswith("link up"))
    assert gone <= down < back < up
    assert log[down][0] < 1.0  # at once: the dead interval is longer
    assert log[back][0] >= 3.0 - 0.1  # not before the cable was back
    assert not any(m.startswith("peer restarted") for m in messages)


def test_plugged_back_nothing_is_lost_and_the_session_is_kept(facts: dict[str, object]) -> None:
    assert facts["calls_after_replug"] == [True, True, True, True]
    names = [name for _, name in facts["events_outage"]]  # type: ignore[union-attr]
    assert names[-1] == "LinkUp"
    assert "PeerRestarted" not in names and "SessionLost" not in names


def test_board_killed_and_restarted_the_host_sees_the_restart(facts: dict[str, object]) -> None:
    assert facts["unplugged_when_killed"] is True  # FunctionFS unbinds a closed function
    names = facts["events_restart"]
    assert isinstance(names, list)
    # back within the session timeout: PeerRestarted; later: the session was lost first
    restart = [i for i, name in enumerate(names) if name in ("PeerRestarted", "SessionLost")]
    assert restart, names
    assert "BusReady" in names[restart[0] :]
    assert names[-1] == "BusReady"
    assert facts["after_restart"] is True


def test_restarted_board_rediscovered_within_1_s_of_the_new_gadgets_bind(
    facts: dict[str, object],
) -> None:
    """The host opens the new gadget when the kernel announces it (a hotplug hint),
    not at the next step of its backoff (``REOPEN_MAX_S`` by then): from the new
    gadget's bind to its UDC to the board's devices found again within 1 s."""
    rediscovered = facts["rediscovered_s"]
    assert isinstance(rediscovered, float)
    assert rediscovered < 1.0 < REOPEN_MAX_S


def test_gadgets_removed_also_after_a_kill(facts: dict[str, object]) -> None:
    assert facts["board_rc"] == 0
    assert facts["gadgets_left"] == []
