"""Which of a board's devices its host was told about, within the host's limit.

A bus v3 host announces in BUS_LIMITS how many devices it keeps (``max_devices``).
The board announces (DEVADD) no more than that at once: the devices of the lowest
ids first, the others withheld and counted until an announced one is dropped.
Sessions of bus v1 and v2 announce no limit: every device is announced.
"""

from __future__ import annotations

from collections.abc import Iterable


class Announced:
    """The device ids announced this session, and the host's limit on them."""

    def __init__(self) -> None:
        #: the host's ``max_devices`` this session (None: none announced)
        self.limit: int | None = None
        #: devices not announced because the limit was reached (every session)
        self.withheld = 0
        self._ids: set[int] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, device_id: int) -> bool:
        return device_id in self._ids

    def reset(self) -> None:
        """A session ended: no device is announced, no limit is known."""
        self.limit = None
        self._ids.clear()

    def admit(self, device_id: int) -> bool:
        """True when ``device_id`` may be announced now (then it counts as announced);
        False when the limit is reached (counted as withheld)."""
        if self.limit is not None and len(self._ids) >= self.limit:
            self.withheld += 1
            return False
        self._ids.add(device_id)
        return True

    def drop(self, device_id: int) -> bool:
        """Forget a device; True if it had been announced (the host must hear DEVDROP)."""
        if device_id not in self._ids:
            return False
        self._ids.discard(device_id)
        return True

    def first_withheld(self, device_ids: Iterable[int]) -> int | None:
        """The lowest of ``device_ids`` not announced, or None."""
        return min((d for d in device_ids if d not in self._ids), default=None)
