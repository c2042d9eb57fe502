"""virtio-net's counters: one field per counter, enum keys per reason.

Each end counts the frames of each direction (``rx``: device to driver,
``tx``: driver to device, as virtio-net names its queues) in a
``DirectionStatistics``: frames and bytes that made it, waits for buffers,
frames dropped by ``Drop``, and header compression by ``Kind``.  A core keeps
its running counts in these objects (an attribute increment per frame) and
``statistics()`` hands out a copy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Self

from ira.venet.vnethdr import Drop
from ira.wire.framedelta import Kind


@dataclass(slots=True)
class DeltaStatistics:
    """Header compression (IRA_HDR_DELTA) of the frames one end sent one way."""

    #: frames sent, by how they relate to their context
    frames: Counter[Kind] = field(default_factory=Counter)
    #: bytes the frames would have taken uncompressed, minus what they took
    bytes_saved: int = 0

    def copy(self) -> Self:
        return replace(self, frames=Counter(self.frames))


@dataclass(slots=True)
class DirectionStatistics:
    """Frames one way (``rx`` or ``tx``) through one end of a virtio-net device."""

    #: frames delivered, and their bytes (Ethernet frame, no virtio-net header)
    frames: int = 0
    frame_bytes: int = 0
    #: times a frame waited for the other side's buffers or for room in flight
    waits: int = 0
    #: device, rx: receive buffers shorter than a virtio-net header (returned unused)
    bad_buffers: int = 0
    #: frames dropped, by reason
    dropped: Counter[Drop] = field(default_factory=Counter)
    #: header compression of the frames this end sent this way
    delta: DeltaStatistics = field(default_factory=DeltaStatistics)

    def copy(self) -> Self:
        return replace(self, dropped=Counter(self.dropped), delta=self.delta.copy())


@dataclass(slots=True)
class NetDeviceStatistics:
    """The board's virtio-net device (``VirtioNetDevice``) since it was created."""

    #: frames to the driver (the receiveq)
    rx: DirectionStatistics = field(default_factory=DirectionStatistics)
    #: frames from the driver (the transmitq)
    tx: DirectionStatistics = field(default_factory=DirectionStatistics)

    def copy(self) -> Self:
        return replace(self, rx=self.rx.copy(), tx=self.tx.copy())


@dataclass(slots=True)
class NetDriverStatistics:
    """The host's virtio-net driver (``VirtioNetClient``) since it was created."""

    #: frames from the device (the receiveq)
    rx: DirectionStatistics = field(default_factory=DirectionStatistics)
    #: frames to the device (the transmitq)
    tx: DirectionStatistics = field(default_factory=DirectionStatistics)
    #: the binding failed (each failure is followed by a reset, or a give-up)
    failures: int = 0
    #: resets of the device by the host (the binding's count)
    device_resets: int = 0
    #: bytes of frames in the transmitq now, and the limit the driver keeps
    tx_inflight_bytes: int = 0
    tx_inflight_limit: int = 0
    #: frames queued by flow, waiting for room in the transmitq
    tx_queued_frames: int = 0

    def copy(self) -> Self:
        return replace(self, rx=self.rx.copy(), tx=self.tx.copy())
