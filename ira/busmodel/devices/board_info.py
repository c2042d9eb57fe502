"""``board-info``: what board this is, how long it has run, how its link is doing.

Function ``INFO`` (0) returns a UTF-8 JSON object::

    {"board": "bb-1", "ira_version": "0.1.0", "uptime_s": 12.5,
     "link": {"frames_sent": 1234, ...}}

``uptime_s`` is measured from ``started_at`` to the ``now`` of the call (both
monotonic seconds supplied by the runtime); ``link`` is whatever the
``link_statistics`` callable returns (the link core's ``statistics()``).
Function ``UPTIME_MS`` (1) returns the uptime in milliseconds as a
little-endian u64.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Callable, Mapping

from ira import __version__
from ira.busmodel.device import Device, Handle
from ira.wire.bus import Status


class BoardInfoFunc(enum.IntEnum):
    INFO = 0
    UPTIME_MS = 1


class BoardInfo(Device):
    type = "board-info"
    version = 1

    def __init__(
        self,
        board: str,
        *,
        started_at: float,
        link_statistics: Callable[[], Mapping[str, int | float]] | None = None,
    ) -> None:
        self.board = board
        self.started_at = started_at
        self._link_statistics = link_statistics

    def attributes(self) -> Mapping[str, str]:
        return {"board": self.board, "ira_version": __version__}

    def info(self, *, now: float) -> dict[str, object]:
        link = dict(self._link_statistics()) if self._link_statistics else {}
        return {
            "board": self.board,
            "ira_version": __version__,
            "uptime_s": round(max(0.0, now - self.started_at), 3),
            "link": link,
        }

    def call(self, handle: Handle, func: int, payload: bytes, *, now: float) -> tuple[int, bytes]:
        match func:
            case BoardInfoFunc.INFO:
                return Status.OK, json.dumps(self.info(now=now), sort_keys=True).encode()
            case BoardInfoFunc.UPTIME_MS:
                uptime_ms = int(max(0.0, now - self.started_at) * 1000)
                return Status.OK, struct.pack("<Q", uptime_ms)
        return Status.ENOSYS, b""
