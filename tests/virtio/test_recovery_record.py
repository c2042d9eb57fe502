"""The recovery policy and record on their own: timelines with explicit ``now``."""

from __future__ import annotations

import pytest

from ira.errors import ConfigError
from ira.virtio.recovery import Action, Plan, Recovery, RecoveryPolicy


@pytest.mark.parametrize(
    "fields",
    [{"max_resets": -1}, {"first_delay_s": -1.0}, {"first_delay_s": 20.0}, {"healthy_s": -1.0}],
)
def test_bad_recovery_policies_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RecoveryPolicy(**fields)  # type: ignore[arg-type]


def test_the_waits_double_up_to_the_longest() -> None:
    policy = RecoveryPolicy(first_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def fail_and_reset(recovery: Recovery, now: float) -> Plan:
    """A failure at ``now``; if a reset is planned, make it when due and fail again."""
    recovery.failed()
    plan = recovery.plan(now=now)
    if plan.action is Action.RESET:
        assert recovery.retry_at == pytest.approx(now + plan.delay_s)
        assert not recovery.due(now=now + plan.delay_s / 2)
        assert recovery.due(now=now + plan.delay_s)
        recovery.start_reset()
        assert recovery.retry_at is None and recovery.resetting
    return plan


def test_resets_in_a_row_wait_longer_each_time_then_give_up() -> None:
    recovery = Recovery(RecoveryPolicy(max_resets=3, first_delay_s=1.0, max_delay_s=3.0))
    plans = [fail_and_reset(recovery, now) for now in (10.0, 12.0, 15.0, 19.0)]
    assert plans == [
        Plan(Action.RESET, 1.0, 1),
        Plan(Action.RESET, 2.0, 2),
        Plan(Action.RESET, 3.0, 3),
        Plan(Action.GIVE_UP, attempt=3),
    ]
    assert (recovery.failures, recovery.resets, recovery.row) == (4, 3, 3)
    assert recovery.failed_at == 19.0 and recovery.retry_at is None


def test_a_healthy_spell_starts_a_new_row() -> None:
    recovery = Recovery(RecoveryPolicy(max_resets=1, healthy_s=5.0))
    fail_and_reset(recovery, 0.0)
    assert recovery.ready(now=1.0) == 1  # back after one reset of the row
    assert recovery.ready(now=1.0) == 0  # ready again, but not through a reset of its own
    assert recovery.plan(now=6.0).action is Action.RESET  # ready for 5 s: a new row
    recovery.start_reset()
    recovery.ready(now=6.5)
    assert recovery.plan(now=7.0) == Plan(Action.GIVE_UP, attempt=1)


def test_a_reset_asked_for_is_not_a_failure_but_counts_in_the_row() -> None:
    recovery = Recovery(RecoveryPolicy(max_resets=1))
    recovery.failed(counted=False)
    assert recovery.plan(now=0.0).action is Action.RESET
    recovery.start_reset()
    recovery.failed()
    assert recovery.plan(now=1.0).action is Action.GIVE_UP
    assert (recovery.failures, recovery.resets) == (1, 1)


def test_without_automatic_resets_the_record_only_counts() -> None:
    recovery = Recovery(RecoveryPolicy(max_resets=0))
    recovery.failed()
    assert recovery.plan(now=3.0) == Plan(Action.WAIT)
    assert (recovery.failures, recovery.failed_at, recovery.retry_at) == (1, 3.0, None)


def test_a_failure_without_a_clock_is_planned_later() -> None:
    recovery = Recovery(RecoveryPolicy())
    recovery.failed(timed=False)
    assert recovery.unstamped and recovery.failed_at is None
    assert recovery.plan(now=2.0).action is Action.RESET
    assert not recovery.unstamped and recovery.failed_at == 2.0


def test_a_failed_reset_is_the_next_of_the_row_and_new_row_forgets_it() -> None:
    recovery = Recovery(RecoveryPolicy(max_resets=2))
    fail_and_reset(recovery, 0.0)
    recovery.failed()  # the reset itself failed
    assert not recovery.resetting
    assert recovery.plan(now=0.5) == Plan(Action.RESET, 0.2, 2)
    recovery.cancel()
    recovery.new_row()
    assert recovery.retry_at is None and recovery.row == 0
    assert recovery.plan(now=1.0) == Plan(Action.RESET, 0.1, 1)
