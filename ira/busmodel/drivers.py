"""Host-side drivers and the registry that binds them to proxy devices.

A driver is bound to every proxy device whose type string equals the one it
registered for, exactly (the vbus-proxy rule): ``probe`` runs when the device
appears (DEVADD, live or replayed), ``remove`` when it goes (DEVDROP or a
session reset), and ``handle_event`` receives the events about that device
(``DeviceOpened``, ``CallCompleted``, ``CallFailed``, ``WindowAttached``,
``WindowDetached``, ``SignalReceived``) as they are queued; a driver with
timers of its own gives the bus its ``next_deadline`` and has its
``handle_timeout`` run when it comes.  A driver works
the device through the ``Bus`` it is given (``open``, ``call``, ``attach``...).
Callbacks run inside the bus core, on the thread that owns it; they must not
block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ira.busmodel.events import DeviceEvent, DeviceInfo
from ira.errors import ConfigError

if TYPE_CHECKING:
    from ira.busmodel.bus import Bus


class Driver:
    """Base class of a host-side driver; every method is optional."""

    def probe(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        """A device of this driver's type appeared."""

    def remove(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        """The device is gone; its handles, windows and pending requests are gone too."""

    def handle_event(self, bus: Bus, event: DeviceEvent, *, now: float) -> None:
        """An event about one of this driver's devices."""

    def next_deadline(self) -> float | None:
        """When this driver's own timer is due (a retry, a backoff), or None."""
        return None

    def handle_timeout(self, bus: Bus, *, now: float) -> None:
        """The deadline ``next_deadline`` gave has come."""


class DriverRegistry:
    """Drivers by exact device type string."""

    def __init__(self) -> None:
        self._drivers: dict[str, Driver] = {}
        #: the drivers that keep timers of their own (``next_deadline`` overridden)
        self.timed: tuple[Driver, ...] = ()

    def register(self, type_name: str, driver: Driver) -> None:
        if type_name in self._drivers:
            raise ConfigError(f"a driver for {type_name!r} is already registered")
        self._drivers[type_name] = driver
        self._update_timed()

    def unregister(self, type_name: str) -> None:
        self._drivers.pop(type_name, None)
        self._update_timed()

    def _update_timed(self) -> None:
        drivers = {id(d): d for d in self._drivers.values()}.values()
        self.timed = tuple(d for d in drivers if type(d).next_deadline is not Driver.next_deadline)

    def lookup(self, type_name: str) -> Driver | None:
        return self._drivers.get(type_name)

    def types(self) -> list[str]:
        return sorted(self._drivers)
