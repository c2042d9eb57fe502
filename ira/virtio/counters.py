"""The virtio layer's counters: one field per counter, enum keys per reason.

A core keeps one of these as its running counts (an attribute increment per
event, nothing built from strings) and ``statistics()`` hands out a copy
(``copy()``): changing the copy changes nothing in the core.  Faults are
counted by ``ira.virtio.ring.Fault``, calls by ``ira.wire.virtio.VirtioFunc``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Self

from ira.virtio.ring import Fault
from ira.wire.virtio import VirtioFunc


@dataclass(slots=True)
class DeviceRingStatistics:
    """One virtqueue, the device's side (``VirtqueueDevice``)."""

    chains_popped: int = 0
    chains_pushed: int = 0
    #: ``publish()`` calls, and how many of them the driver asked to be notified of
    publishes: int = 0
    notifications: int = 0
    notifications_suppressed: int = 0
    #: why the queue broke (each queue breaks at most once)
    faults: Counter[Fault] = field(default_factory=Counter)

    def copy(self) -> Self:
        return replace(self, faults=Counter(self.faults))


@dataclass(slots=True)
class DriverRingStatistics:
    """One virtqueue, the driver's side (``VirtqueueDriver``)."""

    chains_added: int = 0
    chains_used: int = 0
    indirect_chains: int = 0
    #: ``publish()`` calls, and how many of them kicked the device
    publishes: int = 0
    kicks: int = 0
    kicks_suppressed: int = 0
    #: why the queue broke (each queue breaks at most once)
    faults: Counter[Fault] = field(default_factory=Counter)

    def copy(self) -> Self:
        return replace(self, faults=Counter(self.faults))


@dataclass(slots=True)
class DeviceStatistics:
    """A virtio device model (``VirtioDevice``) since it was created (all resets)."""

    driver_ok: int = 0
    driver_failed: int = 0
    resets: int = 0
    needs_reset: int = 0
    #: status writes and feature sets the device refused
    status_refused: int = 0
    features_refused: int = 0
    #: DEVCALLs that were not a virtio call the device could run
    bad_calls: int = 0
    #: notifications before DRIVER_OK (buffers wait for it)
    notify_ignored: int = 0
    ring_update_runs: int = 0
    #: interrupts sent to the driver, and those its flags suppressed
    virtio_notify: int = 0
    virtio_notify_suppressed: int = 0
    #: virtio DEVCALLs run, by function
    calls: Counter[VirtioFunc] = field(default_factory=Counter)
    #: queues broken by the driver, by fault
    queue_broken: Counter[Fault] = field(default_factory=Counter)
    #: each queue's own counters, by index (``None``: not set up now)
    queues: tuple[DeviceRingStatistics | None, ...] = ()

    def copy(self) -> Self:
        return replace(
            self,
            calls=Counter(self.calls),
            queue_broken=Counter(self.queue_broken),
            queues=tuple(None if q is None else q.copy() for q in self.queues),
        )
