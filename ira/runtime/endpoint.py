"""In-process frame endpoints: a TAP's interface without root, a kernel or an interface.

``FrameEndpoint.pair()`` returns two connected endpoints; a frame written to
one is read from the other.  Each is a frame port (``ira.venet.port``) like
``ira.runtime.tap.Tap``: non-blocking ``read_frame``/``write_frame``, a
``fileno`` that is readable while frames are waiting, the same checks and
drop counters.  Tests and programs that embed ira put one end where a TAP
would be and drive the other.

Each direction is a bounded queue (``capacity_frames``; a frame written to a
full queue is dropped and counted, as a TAP's queue would), with a pipe that
holds one byte while the queue is not empty, for ``select``.  The two ends may
be used from different threads.

Carrier: ``set_carrier(False)`` on one end is a cable pulled at that end:
frames the peer writes towards it are dropped (``Drop.NO_CARRIER``).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from types import TracebackType

from ira.errors import ConfigError, TransportError
from ira.venet.port import Buffer, PortCounters, PortStatistics
from ira.venet.vnethdr import Drop, FramePolicy
from ira.wire.venet import MAX_MTU, MIN_MTU

#: frames a direction holds before it drops (a TAP's default txqueuelen is 1000)
DEFAULT_CAPACITY_FRAMES = 256


class _Queue:
    """One direction: frames, a lock, and a pipe readable while frames wait."""

    def __init__(self, capacity_frames: int) -> None:
        self.capacity = capacity_frames
        self.frames: deque[bytes] = deque()
        self.lock = threading.Lock()
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signalled = False
        self.reader_closed = False
        self.carrier = True

    def put(self, frame: bytes) -> Drop | None:
        with self.lock:
            if self.reader_closed:
                return Drop.PEER_CLOSED
            if not self.carrier:
                return Drop.NO_CARRIER
            if len(self.frames) >= self.capacity:
                return Drop.QUEUE_FULL
            self.frames.append(frame)
            if not self.signalled:
                os.write(self.write_fd, b"\0")
                self.signalled = True
            return None

    def get(self) -> bytes | None:
        with self.lock:
            if not self.frames:
                return None
            frame = self.frames.popleft()
            if not self.frames and self.signalled:
                os.read(self.read_fd, 1)
                self.signalled = False
            return frame

    def close_reader(self) -> None:
        with self.lock:
            self.reader_closed = True
            self.frames.clear()
            os.close(self.read_fd)
            os.close(self.write_fd)


class FrameEndpoint:
    """One end of an in-process frame pair (see the module docstring)."""

    def __init__(
        self,
        name: str,
        inbox: _Queue,
        outbox: _Queue,
        *,
        vnet_hdr: bool,
        mtu: int,
    ) -> None:
        """Use ``FrameEndpoint.pair()``."""
        self._name = name
        self._inbox = inbox
        self._outbox = outbox
        self._vnet_hdr = vnet_hdr
        self._counters = PortCounters(FramePolicy(vnet_hdr=vnet_hdr, mtu=mtu))
        self._closed = False

    @classmethod
    def pair(
        cls,
        *,
        vnet_hdr: bool = False,
        mtu: int = 1500,
        capacity_frames: int = DEFAULT_CAPACITY_FRAMES,
        names: tuple[str, str] = ("endpoint-a", "endpoint-b"),
    ) -> tuple[FrameEndpoint, FrameEndpoint]:
        """Two connected endpoints with the same settings."""
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ConfigError(f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
        if capacity_frames < 1:
            raise ConfigError(f"capacity_frames must be at least 1, not {capacity_frames}")
        to_a, to_b = _Queue(capacity_frames), _Queue(capacity_frames)
        a = cls(names[0], to_a, to_b, vnet_hdr=vnet_hdr, mtu=mtu)
        b = cls(names[1], to_b, to_a, vnet_hdr=vnet_hdr, mtu=mtu)
        return a, b

    # -- the frame port --

    @property
    def name(self) -> str:
        return self._name

    @property
    def vnet_hdr(self) -> bool:
        return self._vnet_hdr

    @property
    def mtu(self) -> int:
        mtu = self._counters.policy.mtu
        assert mtu is not None
        return mtu

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """Readable while a frame waits for ``read_frame``."""
        self._check_open()
        return self._inbox.read_fd

    def read_frame(self) -> bytes | None:
        """The next frame the peer wrote, or ``None`` if none is waiting."""
        self._check_open()
        frame = self._inbox.get()
        if frame is not None:
            self._counters.read(len(frame))
        return frame

    def write_frame(self, frame: Buffer) -> bool:
        """Queue a frame for the peer; ``False`` if it was dropped (and counted)."""
        self._check_open()
        if not self._counters.check(frame):
            return False
        reason = self._outbox.put(bytes(frame))
        if reason is not None:
            self._counters.drop(reason)
            return False
        self._counters.written(len(frame))
        return True

    def set_mtu(self, mtu: int) -> None:
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ConfigError(f"MTU {mtu} is outside {MIN_MTU}..{MAX_MTU}")
        self._counters.set_mtu(mtu)

    def set_carrier(self, on: bool) -> None:
        """Off: frames the peer writes towards this end are dropped (``NO_CARRIER``)."""
        self._check_open()
        with self._inbox.lock:
            self._inbox.carrier = on

    def statistics(self) -> PortStatistics:
        return self._counters.statistics()

    def close(self) -> None:
        """Close this end; the peer's later writes are dropped (``PEER_CLOSED``).  Idempotent."""
        if not self._closed:
            self._closed = True
            self._inbox.close_reader()

    def __enter__(self) -> FrameEndpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameEndpoint({self._name!r}{', closed' if self._closed else ''})"

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"frame endpoint {self._name} is closed")
