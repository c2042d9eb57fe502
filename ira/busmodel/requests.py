"""The host's table of requests in flight (DEVOPEN, DEVCALL, SHM attach/detach).

Each request has a call id (from a counter, never reused on one bus), the
time it was issued and a deadline.  Deadlines sit in a heap with lazy
deletion, so ``next_deadline()`` and ``expire()`` cost O(log n) per request
however many are in flight.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass

from ira.busmodel.window import Window
from ira.errors import LocalProtocolError

_U32 = 0xFFFFFFFF


class RequestKind(enum.Enum):
    OPEN = "DEVOPEN"
    CALL = "DEVCALL"
    ATTACH = "SHM_ATTACH"
    DETACH = "SHM_DETACH"


@dataclass(slots=True, eq=False)
class Request:
    call_id: int
    kind: RequestKind
    device_id: int
    issued_at: float
    deadline: float
    func: int = 0
    handle: int = 0
    window: Window | None = None


class RequestTable:
    """Requests awaiting their reply."""

    def __init__(self) -> None:
        self._next_call_id = 1
        self._pending: dict[int, Request] = {}
        self._deadlines: list[tuple[float, int]] = []

    def new_call_id(self) -> int:
        if self._next_call_id > _U32:
            raise LocalProtocolError("call ids exhausted on this bus")
        call_id, self._next_call_id = self._next_call_id, self._next_call_id + 1
        return call_id

    def add(self, request: Request) -> None:
        self._pending[request.call_id] = request
        heapq.heappush(self._deadlines, (request.deadline, request.call_id))

    def peek(self, call_id: int) -> Request | None:
        return self._pending.get(call_id)

    def pop(self, call_id: int) -> Request | None:
        return self._pending.pop(call_id, None)

    def issued(self, call_id: int) -> bool:
        """True if ``call_id`` was ever handed out (a late reply, not a forged one)."""
        return 1 <= call_id < self._next_call_id

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[Request]:
        """Remove and return every request whose deadline is at or before ``now``."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, call_id = heapq.heappop(self._deadlines)
            request = self._pending.pop(call_id, None)
            if request is not None:
                expired.append(request)
        return expired

    def drain(self) -> list[Request]:
        """Remove and return every pending request, oldest first."""
        requests = sorted(self._pending.values(), key=lambda r: r.call_id)
        self._pending.clear()
        self._deadlines.clear()
        return requests

    def __len__(self) -> int:
        return len(self._pending)
