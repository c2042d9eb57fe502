"""The device status field as a state machine (virtio 1.2 §2.1, §2.4, §3.1.1).

Theory of operation
-------------------

Everything that decides whether a write of the device status is accepted
lives here.  The driver initialises a device by setting bits in order
(§3.1.1): reset, ACKNOWLEDGE, DRIVER, (features) FEATURES_OK, (queues)
DRIVER_OK.  It never clears a bit (§2.1.1); writing 0 resets the device
(§2.4).  FAILED may be set at any time (the driver gave up on the device)
and then only a reset is accepted.
DEVICE_NEEDS_RESET is the device's own bit: a driver cannot set or clear it.

A write names the whole new status.  ``STATUS_REQUIRES`` is the transition
table: a bit may be newly set only together with (or after) the bits it
requires.  ``decide()`` maps ``(current, requested)`` to what the device
does.  FEATURES_OK and DRIVER_OK are never set by one write: the driver
re-reads FEATURES_OK and sets up the queues in between.  FEATURES_OK is
special: the device may refuse the accepted feature set, in which case the
bit is simply not set and the driver, re-reading the status, finds it
missing (§3.1.1 step 6).
"""

from __future__ import annotations

import enum

from ira.virtio.features import DeviceStatus

S = DeviceStatus

#: bits the driver sets, and what each needs set with or before it
STATUS_REQUIRES: dict[DeviceStatus, DeviceStatus] = {
    S.ACKNOWLEDGE: S(0),
    S.DRIVER: S.ACKNOWLEDGE,
    S.FEATURES_OK: S.ACKNOWLEDGE | S.DRIVER,
    S.DRIVER_OK: S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK,
    S.FAILED: S(0),
}
DRIVER_BITS = S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK | S.FAILED


class StatusWrite(enum.Enum):
    """What the device does with a status write."""

    #: 0 was written: reset the device
    RESET = "reset"
    #: set the new bits (nothing to check)
    ACCEPT = "accept"
    #: FEATURES_OK is newly set: check the driver's features first
    CHECK_FEATURES = "check_features"
    #: DRIVER_OK is newly set: the device goes live
    GO_LIVE = "go_live"
    #: FAILED is newly set: the driver gave up on the device (§2.1)
    FAIL = "fail"
    #: refused: a bit cleared, set out of order, unknown, or FAILED is set
    REFUSE = "refuse"


def decide(current: int, requested: int) -> StatusWrite:
    """The transition for writing ``requested`` over ``current`` (see the module docstring)."""
    if requested == 0:
        return StatusWrite.RESET
    if requested & ~(DRIVER_BITS | S.DEVICE_NEEDS_RESET) or requested > 0xFF:
        return StatusWrite.REFUSE
    if current & S.FAILED:
        return StatusWrite.REFUSE
    requested &= DRIVER_BITS  # DEVICE_NEEDS_RESET is the device's
    if current & DRIVER_BITS & ~requested:
        return StatusWrite.REFUSE  # a bit would be cleared
    added = requested & ~current
    if added & S.FEATURES_OK and added & S.DRIVER_OK:
        return StatusWrite.REFUSE  # FEATURES_OK is re-read, and queues set up, in between
    for bit, needs in STATUS_REQUIRES.items():
        if added & bit and needs & ~requested:
            return StatusWrite.REFUSE
    if added & S.FAILED:
        return StatusWrite.FAIL
    if added & S.FEATURES_OK:
        return StatusWrite.CHECK_FEATURES
    if added & S.DRIVER_OK:
        return StatusWrite.GO_LIVE
    return StatusWrite.ACCEPT
