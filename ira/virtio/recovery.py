"""Bringing back a virtio device that needs a reset: the host's policy and record.

Theory of operation
-------------------

Sans-I/O: no clock and no log; time comes in as ``now``.  A binding keeps
one ``Recovery``: the count of failures and of resets it made by itself,
when the last failure was seen, when the next reset is due, and the resets
made in the current row.

A failure (DEVICE_NEEDS_RESET, a broken queue, a reset that failed) is
``failed()``.  Once its time is known, ``plan(now=)`` stamps it and decides
what comes next (a ``Plan``):

* ``WAIT``: the policy makes no resets by itself (``max_resets`` 0); the
  device waits for a reset by hand;
* ``RESET``: reset after ``delay_s``, which doubles with each reset of the
  row (``first_delay_s``, twice that, ... at most ``max_delay_s``);
  ``retry_at`` says when;
* ``GIVE_UP``: the row already holds ``max_resets`` resets.

A device that stayed ready ``healthy_s`` before it failed starts a new row.
When the reset is due (``due(now=)``) the binding makes it and calls
``start_reset()``; a reset that fails is the next failure of the same row;
one that reaches DRIVER_OK calls ``ready(now=)``.  ``new_row()`` (a reset by
hand) forgets the row, ``cancel()`` the planned reset.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ira.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """How the host brings back a device that needs a reset (see the module docstring)."""

    #: resets in a row (no healthy spell between them) before the host gives up;
    #: 0: none by itself (the binding stays NEEDS_RESET until ``reinitialise()``)
    max_resets: int = 6
    #: the wait before the first reset of a row; each next one waits twice as long
    first_delay_s: float = 0.1
    #: the longest wait before a reset
    max_delay_s: float = 10.0
    #: a device that stayed ready this long before failing starts a new row
    healthy_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_resets < 0:
            raise ConfigError("max_resets must be 0 (no automatic resets) or more")
        if not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ConfigError("first_delay_s must be between 0 and max_delay_s")
        if self.healthy_s < 0:
            raise ConfigError("healthy_s must not be negative")

    def delay_s(self, attempt: int) -> float:
        """The wait before reset ``attempt`` (1, 2, ...) of a row."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** (attempt - 1))


class Action(enum.Enum):
    """What follows a failure."""

    #: no automatic resets: wait for a reset by hand
    WAIT = "wait"
    #: reset the device after ``Plan.delay_s``
    RESET = "reset"
    #: the row is full: give the device up
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision after a failure."""

    action: Action
    #: RESET: the wait before the reset
    delay_s: float = 0.0
    #: RESET: which reset of the row it is (1, 2, ...); GIVE_UP: the resets made in the row
    attempt: int = 0


class Recovery:
    """One binding's failures and resets, and what comes next (see the module docstring)."""

    def __init__(self, policy: RecoveryPolicy) -> None:
        self.policy = policy
        #: failures seen, and resets made by the host itself
        self.failures = 0
        self.resets = 0
        #: when the last failure was seen, when the next reset is due, when last ready
        self.failed_at: float | None = None
        self.retry_at: float | None = None
        self.ready_at: float | None = None
        #: resets in the current row
        self.row = 0
        #: a reset of the host's own is running (not yet ready, not yet failed)
        self.resetting = False
        #: a failure was seen without a clock: ``plan()`` is due at the next timer
        self.unstamped = False

    def failed(self, *, counted: bool = True, timed: bool = True) -> None:
        """A failure; ``counted=False`` for a reset asked for, not a fault.

        ``timed=False``: its time is not known (``unstamped``): ``plan()`` it
        at the next timer.
        """
        self.failures += counted
        self.resetting = False
        self.unstamped = not timed

    def stamp(self, *, now: float) -> None:
        """The last failure was seen at ``now``."""
        self.unstamped = False
        self.failed_at = now

    def plan(self, *, now: float) -> Plan:
        """Stamp the failure at ``now`` and decide what comes next."""
        self.stamp(now=now)
        policy = self.policy
        if not policy.max_resets:
            return Plan(Action.WAIT)
        if self.ready_at is not None and now - self.ready_at >= policy.healthy_s:
            self.row = 0
        if self.row >= policy.max_resets:
            self.retry_at = None
            return Plan(Action.GIVE_UP, attempt=self.row)
        delay = policy.delay_s(self.row + 1)
        self.retry_at = now + delay
        return Plan(Action.RESET, delay, self.row + 1)

    def due(self, *, now: float) -> bool:
        """A planned reset is due."""
        return self.retry_at is not None and now >= self.retry_at

    def start_reset(self) -> None:
        """The planned reset begins: the next of the row."""
        self.retry_at = None
        self.row += 1
        self.resets += 1
        self.resetting = True

    def ready(self, *, now: float) -> int:
        """The device reached DRIVER_OK; returns the resets in a row that brought it back
        (0: it was not a reset of the host's own)."""
        self.ready_at = now
        row = self.row if self.resetting else 0
        self.resetting = False
        return row

    def cancel(self) -> None:
        """No reset is planned any more."""
        self.retry_at = None
        self.unstamped = False

    def new_row(self) -> None:
        """Forget the resets in a row (a reset by hand starts a new one)."""
        self.row = 0
        self.resetting = False
