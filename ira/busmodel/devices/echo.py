"""``echo``: answers function 0 with the payload it was given."""

from __future__ import annotations

import enum

from ira.busmodel.device import Device, Handle
from ira.wire.bus import Status


class EchoFunc(enum.IntEnum):
    #: return the payload unchanged
    ECHO = 0


class Echo(Device):
    type = "echo"
    version = 1

    def __init__(self) -> None:
        self.calls = 0

    def call(self, handle: Handle, func: int, payload: bytes, *, now: float) -> tuple[int, bytes]:
        if func == EchoFunc.ECHO:
            self.calls += 1
            return Status.OK, payload
        return Status.ENOSYS, b""
