"""A container: one bus instance (one per link) and everything that lives in it.

Device ids come from a counter and are never reused.  Handles and signal
handles are opaque u32 values, also from counters (never reused), scrambled
with a per-container salt so that a number from another container or from an
earlier session is not a valid handle here by accident.  Every id or handle a
peer names is resolved by table lookup in *this* container only ("never trust
the handle"): nothing is ever indexed, cast or computed from it.

The container enforces the limits of ``ContainerLimits`` and counts every
refusal by reason; the connector reads the counters into ``statistics()``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

from ira.busmodel.config import ContainerLimits
from ira.busmodel.counters import Refusal
from ira.busmodel.device import Attachment, Device, Handle
from ira.errors import LocalProtocolError

_U32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # odd, so n -> n * _GOLDEN + salt is a bijection of u32


class _Numbering:
    """Opaque, never-reused u32 numbers: a counter through a salted bijection."""

    def __init__(self, salt: int) -> None:
        self._salt = salt & _U32
        self._next = 1

    def take(self) -> int:
        while True:
            n, self._next = self._next, self._next + 1
            value = (n * _GOLDEN + self._salt) & _U32
            if value != 0:  # 0 means "none" on the wire
                return value


class Container:
    """Devices, open handles, attached windows and signals of one link."""

    def __init__(self, limits: ContainerLimits, *, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.limits = limits
        self.refusals: Counter[Refusal] = Counter()
        self._next_device_id = 1
        self._devices: dict[int, Device] = {}
        self._handles: dict[int, Handle] = {}
        self._windows: dict[int, Attachment] = {}
        self._signals: dict[int, Attachment] = {}
        self._window_bytes = 0
        self._handle_numbers = _Numbering(rng.getrandbits(32))
        self._signal_numbers = _Numbering(rng.getrandbits(32))

    def refuse(self, reason: Refusal) -> None:
        """Count one refused request or message."""
        self.refusals[reason] += 1

    # -- devices --------------------------------------------------------

    def add_device(self, device: Device) -> int:
        if len(self._devices) >= self.limits.max_devices:
            raise LocalProtocolError(f"the container holds {self.limits.max_devices} devices")
        if any(d is device for d in self._devices.values()):
            raise LocalProtocolError("this device is already in the container")
        if self._next_device_id > _U32:
            raise LocalProtocolError("device ids exhausted")
        device_id, self._next_device_id = self._next_device_id, self._next_device_id + 1
        self._devices[device_id] = device
        return device_id

    def remove_device(self, device_id: int) -> Device:
        try:
            return self._devices.pop(device_id)
        except KeyError:
            raise LocalProtocolError(f"no device {device_id} in the container") from None

    def device(self, device_id: int) -> Device | None:
        return self._devices.get(device_id)

    def devices(self) -> dict[int, Device]:
        return dict(self._devices)

    # -- handles --------------------------------------------------------

    def can_open(self) -> bool:
        return len(self._handles) < self.limits.max_handles

    def new_handle(self, device_id: int, version: int) -> Handle:
        handle = Handle(self._handle_numbers.take(), device_id, version)
        self._handles[handle.handle_id] = handle
        return handle

    def handle(self, handle_id: int) -> Handle | None:
        return self._handles.get(handle_id)

    def drop_handle(self, handle: Handle) -> None:
        self._handles.pop(handle.handle_id, None)

    def handles(self, device_id: int | None = None) -> list[Handle]:
        return [h for h in self._handles.values() if device_id in (None, h.device_id)]

    # -- windows and signals ---------------------------------------------

    def window_room(self, size_bytes: int) -> bool:
        """True if a window of ``size_bytes`` fits the count and byte limits."""
        return (
            len(self._windows) < self.limits.max_windows
            and self._window_bytes + size_bytes <= self.limits.max_total_window_bytes
        )

    def new_signal_id(self) -> int:
        return self._signal_numbers.take()

    def add_attachment(self, att: Attachment) -> None:
        self._windows[att.window.window_id] = att
        self._window_bytes += att.window.size_bytes
        if att.signal is not None:
            self._signals[att.signal.signal_id] = att
        att.handle.attachments[att.window.window_id] = att

    def drop_attachment(self, att: Attachment) -> None:
        if self._windows.pop(att.window.window_id, None) is att:
            self._window_bytes -= att.window.size_bytes
        if att.signal is not None:
            self._signals.pop(att.signal.signal_id, None)
        att.handle.attachments.pop(att.window.window_id, None)

    def window(self, window_id: int) -> Attachment | None:
        return self._windows.get(window_id)

    def signal(self, signal_id: int) -> Attachment | None:
        return self._signals.get(signal_id)

    def attachments(self) -> Iterator[Attachment]:
        return iter(list(self._windows.values()))

    # -- accounting -----------------------------------------------------

    @property
    def window_bytes(self) -> int:
        """Bytes of all windows attached now."""
        return self._window_bytes

    @property
    def signal_count(self) -> int:
        return len(self._signals)

    @property
    def window_count(self) -> int:
        return len(self._windows)

    @property
    def handle_count(self) -> int:
        return len(self._handles)
