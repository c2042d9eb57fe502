"""Shared windows: byte arrays replicated on both sides of a link (DESIGN §4).

There is no shared memory on a serial or USB link, so a window is two
replicas kept equal by messages.  Each byte has exactly one writer: the board
writes ``[device_offset, device_offset + device_length)`` and the host writes
every other byte.  A write changes the local replica and marks the range
dirty; ``flush()`` sends the *current contents* of the dirty ranges as
WINDOW spans, in address order.  Because spans carry absolute contents (not
deltas), replicas converge once both writers have flushed and the link is
quiet, whatever the interleaving.

Before the window is attached (host side) a flush is remembered and carried
out when the attach completes; after it is detached, writes are refused and
flushes do nothing.  The peer's updates are checked whole (bounds and writer)
before any span is applied.

One flush may take several WINDOW messages (at most ``MAX_SPANS`` spans and
``FLUSH_MESSAGE_BYTES`` each).  When the session marks where a flush ends
(bus v2, ``connect(..., flush_ends=True)``) every message of a flush but its
last carries MORE, and ``on_update`` runs after the last one is applied: the
replica then holds everything the peer wrote before that flush, never half
of it (a ring index without the entries it publishes).  Without the marks
(a v1 peer) ``on_update`` never runs: nothing says where a flush ends.

``flush_notifies`` (bus v4, ``connect(..., flush_notifies=True)``): the peer
acts on the end of this side's flushes as it would on a SIGNAL, so a writer
that only wants to say "look at what I flushed" need not send one (a virtio
driver publishing available buffers, ``ira.virtio.binding``).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from ira.errors import LocalProtocolError
from ira.wire.bus import (
    MAX_SPAN_BYTES,
    MAX_SPANS,
    SPAN_HEADER_BYTES,
    Span,
    Status,
    WindowUpdate,
)

if TYPE_CHECKING:
    from ira.busmodel.signal import Signal

#: a flush puts at most this many data bytes in one WINDOW message (as many as its spans
#: can hold: a frame of a 64 KiB GSO segment takes two messages, not five)
FLUSH_MESSAGE_BYTES = MAX_SPANS * MAX_SPAN_BYTES


class Side(enum.Enum):
    """Which end of the link a replica (or a writer) is on."""

    HOST = "host"
    BOARD = "board"


class Window:
    """One replica of a shared window."""

    def __init__(
        self,
        window_id: int,
        size_bytes: int,
        *,
        side: Side,
        device_offset: int = 0,
        device_length: int = 0,
    ) -> None:
        if size_bytes < 1:
            raise LocalProtocolError(f"window size must be positive, not {size_bytes}")
        if device_offset < 0 or device_length < 0 or device_offset + device_length > size_bytes:
            raise LocalProtocolError(
                f"device range {device_offset}+{device_length} is outside a "
                f"{size_bytes}-byte window"
            )
        self.window_id = window_id
        self.size_bytes = size_bytes
        self.side = side
        self.device_offset = device_offset
        self.device_length = device_length
        #: the window's signal, when it has one (set by the core once attached)
        self.signal: Signal | None = None
        self._data = bytearray(size_bytes)
        self._dirty: list[tuple[int, int]] = []  # sorted, disjoint, non-adjacent [start, end)
        #: run after the last message of each of the peer's flushes is applied (see above)
        self.on_update: Callable[[], None] | None = None
        self._sink: Callable[[WindowUpdate], None] | None = None
        self._flush_ends = False
        #: the end of this side's flush is the peer's notification (see the module docstring)
        self.flush_notifies = False
        self._flush_requested = False
        self._closed = False
        self.updates_sent = 0
        self.updates_applied = 0

    def __repr__(self) -> str:
        return (
            f"<Window {self.window_id} {self.size_bytes}B {self.side.value} "
            f"device=[{self.device_offset},+{self.device_length})>"
        )

    # -- ranges ---------------------------------------------------------

    def writable_by(self, side: Side, offset: int, length: int) -> bool:
        """True if ``side`` is the one writer of every byte of ``[offset, offset+length)``."""
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            return False
        start, end = self.device_offset, self.device_offset + self.device_length
        if side is Side.BOARD:
            return start <= offset and offset + length <= end
        return offset + length <= start or offset >= end or length == 0

    @property
    def attached(self) -> bool:
        return self._sink is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dirty_bytes(self) -> int:
        return sum(end - start for start, end in self._dirty)

    # -- local access ---------------------------------------------------

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        """The local replica's bytes at ``[offset, offset+size)`` (to the end by default)."""
        if size is None:
            size = self.size_bytes - offset
        if offset < 0 or size < 0 or offset + size > self.size_bytes:
            raise LocalProtocolError(f"read {offset}+{size} outside window {self.window_id}")
        return bytes(self._data[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        """Write into the local replica; it reaches the peer at the next ``flush()``."""
        if self._closed:
            raise LocalProtocolError(f"window {self.window_id} is detached")
        if not self.writable_by(self.side, offset, len(data)):
            raise LocalProtocolError(
                f"{self.side.value} may not write {offset}+{len(data)} in {self!r}"
            )
        if not data:
            return
        self._data[offset : offset + len(data)] = data
        self._mark_dirty(offset, offset + len(data))

    def flush(self) -> int:
        """Send the dirty ranges as WINDOW updates; returns the number of messages queued."""
        if self._closed:
            return 0
        if self._sink is None:
            self._flush_requested = True
            return 0
        if not self._dirty:
            return 0  # a barrier flushes every window; most have nothing to send
        sent = 0
        spans: list[Span] = []
        budget = FLUSH_MESSAGE_BYTES
        more = self._flush_ends  # every message but the last says MORE (bus v2)
        for start, end in self._coalesced():
            for chunk in range(start, end, MAX_SPAN_BYTES):
                stop = min(end, chunk + MAX_SPAN_BYTES)
                if spans and (len(spans) == MAX_SPANS or budget < stop - chunk):
                    self._sink(WindowUpdate(self.window_id, tuple(spans), more))
                    sent += 1
                    spans, budget = [], FLUSH_MESSAGE_BYTES
                spans.append(Span(chunk, bytes(self._data[chunk:stop])))
                budget -= stop - chunk
        if spans:
            self._sink(WindowUpdate(self.window_id, tuple(spans)))
            sent += 1
        self._dirty.clear()
        self._flush_requested = False
        self.updates_sent += sent
        return sent

    def _coalesced(self) -> list[tuple[int, int]]:
        """The dirty ranges, with a gap no longer than a span's header closed up when
        this side is the writer of it: its bytes are the same in both replicas, and
        sending them costs less than the header of another span."""
        dirty = self._dirty
        if len(dirty) < 2:
            return dirty
        merged = [dirty[0]]
        for start, end in dirty[1:]:
            last_start, last_end = merged[-1]
            gap = start - last_end
            if gap <= SPAN_HEADER_BYTES and self.writable_by(self.side, last_end, gap):
                merged[-1] = (last_start, end)
            else:
                merged.append((start, end))
        return merged

    def _mark_dirty(self, start: int, end: int) -> None:
        dirty = self._dirty
        # First interval that ends at or after ``start`` (adjacent ones merge too).
        i = bisect.bisect_left(dirty, start, key=lambda iv: iv[1])
        j = i
        while j < len(dirty) and dirty[j][0] <= end:
            start = min(start, dirty[j][0])
            end = max(end, dirty[j][1])
            j += 1
        dirty[i:j] = [(start, end)]

    # -- used by the cores ----------------------------------------------

    def connect(
        self,
        sink: Callable[[WindowUpdate], None],
        *,
        flush_ends: bool = False,
        flush_notifies: bool = False,
    ) -> None:
        """Start replicating through ``sink``; carries out a flush asked for before.

        ``flush_ends``: the session marks where a flush ends (bus v2), both in
        what this side sends (MORE) and in what it receives (``on_update``);
        ``flush_notifies``: the peer acts on their ends (bus v4).
        """
        self._sink = sink
        self._flush_ends = flush_ends
        self.flush_notifies = flush_ends and flush_notifies
        if self._flush_requested:
            self.flush()

    def disconnect(self) -> None:
        """Stop replicating for good (detach, close, device gone, session reset)."""
        self._sink = None
        self._closed = True
        self.flush_notifies = False
        self._dirty.clear()
        self.on_update = None
        if self.signal is not None:
            self.signal.disconnect()

    def apply(self, update: WindowUpdate, *, writer: Side) -> Status:
        """Apply the peer's update if every span is in bounds and ``writer``'s to write."""
        for span in update.spans:
            if span.offset + len(span.data) > self.size_bytes:
                return Status.ERANGE
            if not self.writable_by(writer, span.offset, len(span.data)):
                return Status.EPERM
        for span in update.spans:
            self._data[span.offset : span.offset + len(span.data)] = span.data
        self.updates_applied += 1
        if not update.more and self._flush_ends and self.on_update is not None:
            self.on_update()
        return Status.OK
