"""How much a link holds that its peer has not yet acknowledged, for a device that paces
itself by the line (``ira.venet.device.LinkPacing``).

A board's network device must not commit more frames to the link than the line
carries in a short while: what it commits waits in the link's queue, first in,
first out, and a ping behind it.  The device learns what the line took from
the link, not from the host's driver (whose refills of receive buffers come in
batches of half the ring, on purpose).  ``LinkBacklog`` counts the bytes of
every message the runtime hands the link core and takes them off, oldest
first, as the core counts messages acknowledged (or discarded
with a session): ``unacked_bytes``.  Messages are acknowledged in order within
a channel; between the two channels the oldest-first guess may mix up which
sizes went, never how many, and it is exact whenever all are acknowledged.

On the thread that owns the link core only (the runtime's loop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ira.link.core import Link


class LinkBacklog:
    """Bytes handed to one link core and not yet acknowledged (see the module docstring)."""

    def __init__(self, core: Link, clock: Callable[[], float] = time.monotonic) -> None:
        self._core = core
        self._clock = clock
        self._sizes: deque[int] = deque()
        self._unacked = 0
        self._acked = 0
        self._waiters: list[Callable[[], None]] = []
        self._seen_acked = 0

    def handed(self, nbytes: int) -> None:
        """The runtime gave the core a message of ``nbytes``."""
        self._sizes.append(nbytes)
        self._unacked += nbytes

    def _refresh(self) -> None:
        unacked = max(0, self._core.messages_outstanding())
        sizes = self._sizes
        while len(sizes) > unacked:
            n = sizes.popleft()
            self._unacked -= n
            self._acked += n

    def unacked_bytes(self) -> int:
        """Bytes of messages given to the link that the peer has not acknowledged."""
        self._refresh()
        return self._unacked

    def acked_bytes(self) -> int:
        """Bytes of messages acknowledged (or discarded) so far, a running total."""
        self._refresh()
        return self._acked

    def now(self) -> float:
        return self._clock()

    def when_acknowledged(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once, on this thread, the next time messages are acknowledged."""
        if fn not in self._waiters:
            self._waiters.append(fn)

    def poll(self) -> None:
        """Call the waiters if messages were acknowledged (the runtime, once a turn)."""
        if not self._waiters:
            return
        self._refresh()
        if self._acked == self._seen_acked:
            return
        self._seen_acked = self._acked
        waiters, self._waiters = self._waiters, []
        for fn in waiters:
            fn()
