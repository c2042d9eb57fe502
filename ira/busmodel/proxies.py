"""The host's proxy devices of one link, their open handles, and bound drivers.

A proxy is what DEVADD said about a device (``DeviceInfo``); it lives from
DEVADD to DEVDROP or the end of the session.  Handles come from DEVOPEN
replies and die with DEVCLOSE, their device, or the session.  A driver is
bound at DEVADD when the registry has one for the exact type string.
"""

from __future__ import annotations

from ira.busmodel.counters import Refusal
from ira.busmodel.drivers import Driver, DriverRegistry
from ira.busmodel.events import DeviceInfo
from ira.wire.bus import DevAdd


class Proxies:
    """Proxy devices by id, open handles by number, bound drivers by device id."""

    def __init__(self, registry: DriverRegistry, max_devices: int) -> None:
        self._registry = registry
        self._max_devices = max_devices
        self._devices: dict[int, DeviceInfo] = {}
        self._bound: dict[int, Driver] = {}
        self._handles: dict[int, int] = {}  # handle -> device id

    def __len__(self) -> int:
        return len(self._devices)

    def devices(self) -> list[DeviceInfo]:
        return [self._devices[k] for k in sorted(self._devices)]

    def device(self, device_id: int) -> DeviceInfo | None:
        return self._devices.get(device_id)

    def driver(self, device_id: int) -> Driver | None:
        return self._bound.get(device_id)

    def add(self, msg: DevAdd) -> DeviceInfo | Refusal:
        """The new proxy, or the reason it is refused."""
        if msg.device_id in self._devices:
            return Refusal.DUPLICATE_DEVICE
        if len(self._devices) >= self._max_devices:
            return Refusal.LIMIT
        attrs = tuple((a.key, a.value) for a in msg.attrs)
        info = DeviceInfo(msg.device_id, msg.type, msg.version, attrs)
        self._devices[msg.device_id] = info
        driver = self._registry.lookup(info.type)
        if driver is not None:
            self._bound[info.device_id] = driver
        return info

    def remove(self, device_id: int) -> tuple[DeviceInfo, Driver | None]:
        """Forget a device and its handles; returns it and the driver to call ``remove`` on."""
        info = self._devices.pop(device_id)
        for handle in [h for h, d in self._handles.items() if d == device_id]:
            del self._handles[handle]
        return info, self._bound.pop(device_id, None)

    # -- handles --------------------------------------------------------

    @property
    def handle_count(self) -> int:
        return len(self._handles)

    def device_of(self, handle: int) -> int | None:
        return self._handles.get(handle)

    def opened(self, handle: int, device_id: int) -> bool:
        """Record a handle from DEVOPEN_REPLY; False if it is not acceptable."""
        if device_id not in self._devices or handle == 0 or handle in self._handles:
            return False
        self._handles[handle] = device_id
        return True

    def closed(self, handle: int) -> bool:
        return self._handles.pop(handle, None) is not None

    def forget_handles(self) -> None:
        self._handles.clear()
