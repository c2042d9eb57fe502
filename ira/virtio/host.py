"""virtio over the bus, host side: the bus driver for ``virtio`` devices (DESIGN §5).

``VirtioHostDriver`` is a bus ``Driver`` for the type ``virtio``.  When such a
device appears it reads its virtio device id (the ``virtio_device_id``
attribute) and, if a ``VirtioClient`` (``ira.virtio.client``) is registered
for that id, binds them with a ``VirtioBinding`` (``ira.virtio.binding``),
which initialises the device (virtio 1.2 §3.1.1) and brings it back when it
needs a reset (``RecoveryPolicy``, ``ira.virtio.recovery``).  The driver runs
the bindings' timers and reports on them: ``devices()`` (a
``VirtioDeviceInfo`` per device), ``negotiations()``, ``statistics()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ira.busmodel.bus import Bus
from ira.busmodel.drivers import Driver
from ira.busmodel.events import DeviceEvent, DeviceInfo
from ira.virtio.binding import BindingState, VirtioBinding
from ira.virtio.calls import DEVICE_ID_ATTR
from ira.virtio.client import VirtioClient, WindowSpec
from ira.virtio.features import FeaturePolicy, Negotiation
from ira.virtio.recovery import RecoveryPolicy

__all__ = [
    "BindingState",
    "RecoveryPolicy",
    "VirtioBinding",
    "VirtioClient",
    "VirtioDeviceInfo",
    "VirtioHostDriver",
    "WindowSpec",
    "bindings_ready",
]


@dataclass(frozen=True, slots=True)
class VirtioDeviceInfo:
    """What the host knows of one ``virtio`` bus device (a snapshot, for tools)."""

    #: the bus device id
    device_id: int
    #: the virtio device id (virtio 1.2 §5: 1 network, 4 entropy, ...)
    virtio_id: int
    #: the binding's state; None when no client drives this virtio device id
    state: BindingState | None = None
    #: the feature negotiation, once the offer was read
    negotiation: Negotiation | None = None
    #: why the binding failed or needs a reset (the last failure's, once ready again)
    reason: str = ""
    #: failures seen: DEVICE_NEEDS_RESET, a broken queue, a reset that failed
    failures: int = 0
    #: resets the host made by itself to bring the device back
    resets: int = 0
    #: when the last failure was seen (the bus's monotonic clock), or None
    failed_at: float | None = None
    #: when the next reset is due, or None
    retry_at: float | None = None

    @property
    def settled(self) -> bool:
        """Initialisation is over, or never started (no client)."""
        return self.state is not BindingState.INITIALISING


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """The host's virtio driver over the bindings present now."""

    #: failures and resets, summed over the bindings
    failures: int
    resets: int
    #: bindings by state
    bindings: Mapping[BindingState, int]


class VirtioHostDriver(Driver):
    """The bus driver for ``virtio`` devices: binds each to the client for its device id."""

    def __init__(
        self,
        clients: Mapping[int, Callable[[], VirtioClient]],
        *,
        policy: FeaturePolicy | None = None,
        timeout_s: float | None = None,
        recovery: RecoveryPolicy | None = None,
    ) -> None:
        """``recovery``: how devices that need a reset are brought back (default
        ``RecoveryPolicy()``)."""
        self.clients = dict(clients)
        self.policy = policy or FeaturePolicy()
        self.timeout_s = timeout_s
        self.recovery = recovery or RecoveryPolicy()
        self.bindings: dict[int, VirtioBinding] = {}
        #: the virtio device id of every ``virtio`` device present, by bus device id
        self.virtio_ids: dict[int, int] = {}

    def probe(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        attrs = dict(device.attrs)
        try:
            virtio_id = int(attrs.get(DEVICE_ID_ATTR, ""))
        except ValueError:
            return
        self.virtio_ids[device.device_id] = virtio_id
        make = self.clients.get(virtio_id)
        if make is None:
            return
        self.bindings[device.device_id] = VirtioBinding(
            bus,
            device,
            make(),
            policy=self.policy,
            now=now,
            timeout_s=self.timeout_s,
            recovery=self.recovery,
        )

    def remove(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        self.virtio_ids.pop(device.device_id, None)
        binding = self.bindings.pop(device.device_id, None)
        if binding is not None:
            binding.removed()

    def handle_event(self, bus: Bus, event: DeviceEvent, *, now: float) -> None:
        binding = self.bindings.get(event.device_id)
        if binding is not None:
            binding.handle_event(event, now=now)

    def next_deadline(self) -> float | None:
        """The earliest reset planned by a binding (see ``RecoveryPolicy``), or None."""
        due = [d for b in self.bindings.values() if (d := b.next_deadline()) is not None]
        return min(due, default=None)

    def handle_timeout(self, bus: Bus, *, now: float) -> None:
        for binding in list(self.bindings.values()):
            deadline = binding.next_deadline()
            if deadline is not None and deadline <= now:
                binding.handle_timeout(now=now)

    def statistics(self) -> HostStatistics:
        """Counters over the bindings present: failures, resets, bindings by state."""
        bindings = self.bindings.values()
        return HostStatistics(
            failures=sum(b.failures for b in bindings),
            resets=sum(b.resets for b in bindings),
            bindings=Counter(b.state for b in bindings),
        )

    def negotiations(self) -> dict[int, Negotiation]:
        """The negotiated features of every bound device, by bus device id."""
        return {
            device_id: b.negotiation
            for device_id, b in self.bindings.items()
            if b.negotiation is not None
        }

    def devices(self) -> list[VirtioDeviceInfo]:
        """Every ``virtio`` device present, by bus device id, with its binding's state."""
        infos = []
        for device_id, virtio_id in sorted(self.virtio_ids.items()):
            b = self.bindings.get(device_id)
            if b is None:
                infos.append(VirtioDeviceInfo(device_id, virtio_id))
            else:
                infos.append(
                    VirtioDeviceInfo(
                        device_id,
                        virtio_id,
                        b.state,
                        b.negotiation,
                        b.reason,
                        b.failures,
                        b.resets,
                        b.failed_at,
                        b.retry_at,
                    )
                )
        return infos


def bindings_ready(driver: VirtioHostDriver) -> Sequence[VirtioBinding]:
    """The bindings that reached DRIVER_OK."""
    return [b for b in driver.bindings.values() if b.state is BindingState.READY]
