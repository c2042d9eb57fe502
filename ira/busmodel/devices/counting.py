"""``counter``: counts calls, and posts counted events through a window; for tests.

Functions: ``INCREMENT`` (0) adds one and returns the new count, ``READ`` (1)
returns it, both as a little-endian u64.  A host may attach shm id ``EVENTS``
(0): a window of at least 8 bytes written by the board only, with a signal.
``post(n)`` (called on the board) then posts ``n`` events: each one adds to
the event count, writes it at offset 0 (u64) and notifies the signal, so
the host can check that every event was seen however many SIGNALs carried
them.
"""

from __future__ import annotations

import enum
import struct

from ira.busmodel.device import Attachment, Device, Handle
from ira.wire.bus import Status


class CounterFunc(enum.IntEnum):
    INCREMENT = 0
    READ = 1


class CounterShm(enum.IntEnum):
    EVENTS = 0


class CountingDevice(Device):
    type = "counter"
    version = 1

    def __init__(self) -> None:
        self.count = 0
        self.events = 0
        self._events: Attachment | None = None

    def call(self, handle: Handle, func: int, payload: bytes, *, now: float) -> tuple[int, bytes]:
        match func:
            case CounterFunc.INCREMENT:
                self.count += 1
                return Status.OK, struct.pack("<Q", self.count)
            case CounterFunc.READ:
                return Status.OK, struct.pack("<Q", self.count)
        return Status.ENOSYS, b""

    def attach(self, handle: Handle, attachment: Attachment, *, now: float) -> int:
        window = attachment.window
        if (
            attachment.shm_id != CounterShm.EVENTS
            or self._events is not None
            or attachment.signal is None
            or window.size_bytes < 8
            or not (window.device_offset == 0 and window.device_length >= 8)
        ):
            return Status.EINVAL
        self._events = attachment
        return Status.OK

    def detach(self, handle: Handle, attachment: Attachment, *, now: float) -> None:
        if attachment is self._events:
            self._events = None

    def post(self, n: int = 1) -> int:
        """Post ``n`` events; returns the number of SIGNAL messages they caused."""
        att = self._events
        if att is None or att.signal is None:
            return 0
        sent = 0
        for _ in range(n):
            self.events += 1
            att.window.write(0, struct.pack("<Q", self.events))
            sent += att.signal.notify()
        return sent
