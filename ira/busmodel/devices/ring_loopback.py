"""``ring-loopback``: copies what the host writes into one window into another, and signals.

The host attaches two windows of the same size, each with a signal:

* shm id ``IN`` (0): written by the host only (``device_length=0``);
* shm id ``OUT`` (1): written by the board only (the whole window).

Each time the ``IN`` signal is delivered, the device copies the ``IN`` window
into ``OUT`` (as many bytes as both hold), flushes it and notifies the
``OUT`` signal; the host sees the copy before the SIGNAL (same channel,
in order).  Function ``COPIES`` (0) returns the number of copies made as a
little-endian u32.
"""

from __future__ import annotations

import enum
import struct

from ira.busmodel.device import Attachment, Device, Handle
from ira.wire.bus import Status


class RingShm(enum.IntEnum):
    IN = 0
    OUT = 1


class RingLoopbackFunc(enum.IntEnum):
    COPIES = 0


class RingLoopback(Device):
    type = "ring-loopback"
    version = 1

    def __init__(self) -> None:
        self.copies = 0

    def call(self, handle: Handle, func: int, payload: bytes, *, now: float) -> tuple[int, bytes]:
        if func == RingLoopbackFunc.COPIES:
            return Status.OK, struct.pack("<I", self.copies & 0xFFFFFFFF)
        return Status.ENOSYS, b""

    def attach(self, handle: Handle, attachment: Attachment, *, now: float) -> int:
        window = attachment.window
        if attachment.signal is None or handle.attachment(attachment.shm_id) is not None:
            return Status.EINVAL
        match attachment.shm_id:
            case RingShm.IN if window.device_length == 0:
                attachment.signal.handler = lambda: self._copy(handle)
                return Status.OK
            case RingShm.OUT if window.device_offset == 0 and (
                window.device_length == window.size_bytes
            ):
                return Status.OK
        return Status.EINVAL

    def _copy(self, handle: Handle) -> None:
        src, dst = handle.attachment(RingShm.IN), handle.attachment(RingShm.OUT)
        if src is None or dst is None or dst.signal is None:
            return
        size = min(src.window.size_bytes, dst.window.size_bytes)
        dst.window.write(0, src.window.read(0, size))
        self.copies += 1
        dst.signal.notify()  # flushes the window first
