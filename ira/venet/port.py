"""The small interface every frame port offers: a TAP, or an in-process endpoint.  Sans-I/O.

A *port* is where venet hands Ethernet frames to a network stack and takes
them back: ``ira.runtime.tap.Tap`` (a Linux TAP interface) or
``ira.runtime.endpoint.FrameEndpoint`` (a pair of in-process queues, for tests
and embedding programs).  Both are non-blocking and selectable:

* ``read_frame()`` returns the next frame the stack sent, or ``None`` when
  there is none now (wait with ``select`` on ``fileno()``);
* ``write_frame(frame)`` hands a frame to the stack; it returns ``False`` when
  the frame was dropped (malformed, queue full, interface down...), and the
  drop is counted in ``statistics().dropped``.  It raises only when the port
  itself is unusable (closed, or gone).

With ``vnet_hdr`` every frame, in both directions, starts with the 12-byte
virtio-net header (``ira.wire.venet``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from ira.venet.vnethdr import Drop, FramePolicy, check_frame

Buffer = bytes | bytearray | memoryview
"""What ``write_frame`` takes."""


@dataclass(frozen=True, slots=True)
class PortStatistics:
    """Counters of one port since it was opened."""

    frames_read: int
    bytes_read: int
    frames_written: int
    bytes_written: int
    #: frames refused by ``write_frame``, by reason (reasons never seen are absent)
    dropped: Mapping[Drop, int]

    @property
    def malformed(self) -> int:
        """Frames dropped because they were malformed (see ``Drop.malformed``)."""
        return sum(n for reason, n in self.dropped.items() if reason.malformed)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class FramePort(Protocol):
    """A TAP or an in-process endpoint (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def vnet_hdr(self) -> bool: ...

    @property
    def mtu(self) -> int: ...

    def fileno(self) -> int: ...

    def read_frame(self) -> bytes | None: ...

    def write_frame(self, frame: Buffer) -> bool: ...

    def set_mtu(self, mtu: int) -> None: ...

    def set_carrier(self, on: bool) -> None: ...

    def statistics(self) -> PortStatistics: ...

    def close(self) -> None: ...


class PortCounters:
    """The checks and counters a port runs for every frame (one owner, no locks)."""

    def __init__(self, policy: FramePolicy) -> None:
        self.policy = policy
        self._frames_read = 0
        self._bytes_read = 0
        self._frames_written = 0
        self._bytes_written = 0
        self._dropped: Counter[Drop] = Counter()

    def set_mtu(self, mtu: int) -> None:
        self.policy = replace(self.policy, mtu=mtu)

    def check(self, frame: Buffer) -> bool:
        """True if ``frame`` may be written; otherwise the drop is counted."""
        reason = check_frame(frame, self.policy)
        if reason is None:
            return True
        self._dropped[reason] += 1
        return False

    def drop(self, reason: Drop) -> None:
        self._dropped[reason] += 1

    def read(self, size_bytes: int) -> None:
        self._frames_read += 1
        self._bytes_read += size_bytes

    def written(self, size_bytes: int) -> None:
        self._frames_written += 1
        self._bytes_written += size_bytes

    def statistics(self) -> PortStatistics:
        return PortStatistics(
            frames_read=self._frames_read,
            bytes_read=self._bytes_read,
            frames_written=self._frames_written,
            bytes_written=self._bytes_written,
            dropped=dict(self._dropped),
        )
