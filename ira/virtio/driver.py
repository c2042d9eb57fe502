"""The driver's side of a split virtqueue (virtio 1.2 §2.7.13, §2.7.14).

Theory of operation
-------------------

The driver owns the descriptor table and the available ring and only reads
the used ring, which the device writes.  It never reads back what it wrote:
free descriptors, the chains in flight, their tokens and their writable
sizes are kept here, so nothing the device does to shared memory can
mislead the driver about its own state.  Everything read from the used
ring is checked; a device that reports an unknown head, a length larger than
the chain or more buffers than were outstanding breaks the queue
(``QueueBroken``).

Supplying buffers follows §2.7.13 step by step::

    add()      place a chain in free descriptors, its head in the next ring slot
    add()      ... as many as fit (batching, step 3)
    publish()  barrier; avail.idx += added; barrier; suppressed?  -> notify or not

``publish()`` is the kick decision: it returns True when the device must be
sent an available buffer notification, which the caller sends (over the
bus, a SIGNAL).  Without VIRTIO_F_EVENT_IDX that is "used.flags has no
NO_NOTIFY" (§2.7.10); with it, ``vring_need_event(avail_event, new, old)``
where ``old`` is avail.idx at the previous publish.

``collect()`` takes used buffers off the used ring (§2.7.14) in ring order,
each with the token given to ``add()`` and the bytes the device wrote.
Used buffer notifications are suppressed with ``disable_callbacks()`` and
re-armed with ``enable_callbacks()`` (NO_INTERRUPT, or used_event with
EVENT_IDX, §2.7.7); re-arming returns True if buffers were used meanwhile,
so the caller collects again instead of waiting for a notification that
will not come.  ``detach()`` hands back every token not yet used, after a
reset, when the device will never use them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

from ira.errors import LocalProtocolError
from ira.virtio.counters import DriverRingStatistics
from ira.virtio.memory import MemoryMap, make_addr
from ira.virtio.ring import (
    DESC_BYTES,
    RING_FLAGS,
    RING_IDX,
    U16,
    USED_ELEM,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_USED_F_NO_NOTIFY,
    DescFlags,
    Descriptor,
    Fault,
    QueueAddresses,
    QueueBroken,
    avail_entry_offset,
    avail_event_offset,
    peer_wants_notification,
    read_u16,
    resolve_parts,
    used_entry_offset,
    used_event_offset,
)

T = TypeVar("T")
_U16_MASK = 0xFFFF
_MAX_CHAIN_BYTES = 1 << 32


@dataclass(frozen=True, slots=True)
class Buffer:
    """A buffer element: ``length`` bytes at ``addr`` (window id << 32 | offset)."""

    addr: int
    length: int

    @classmethod
    def at(cls, window_id: int, offset: int, length: int) -> Buffer:
        return cls(make_addr(window_id, offset), length)


@dataclass(frozen=True, slots=True)
class UsedBuffer(Generic[T]):
    """A chain the device has used: the token it was added with, and the bytes written."""

    token: T
    written_bytes: int


@dataclass(slots=True)
class _InFlight(Generic[T]):
    token: T
    descriptors: list[int]
    writable_bytes: int


class VirtqueueDriver(Generic[T]):
    """The driver end of one split virtqueue, over one side's ``MemoryMap``."""

    def __init__(
        self,
        memory: MemoryMap,
        queue_size: int,
        addresses: QueueAddresses,
        *,
        event_idx: bool = False,
        indirect: bool = False,
        base: int = 0,
    ) -> None:
        """Take over the queue's driver parts and initialise them.

        ``event_idx`` and ``indirect`` say whether VIRTIO_F_EVENT_IDX and
        VIRTIO_F_INDIRECT_DESC were negotiated.  ``base`` is the ring index
        to start from (0 after a reset; like vhost's VRING_BASE when a
        queue is resumed); the device must start from the same one.  The
        driver writes avail.flags, avail.idx and used_event; the used ring
        is the device's to initialise.
        """
        self.queue_size = queue_size
        self.event_idx = event_idx
        self.indirect = indirect
        self._memory = memory
        parts = resolve_parts(memory, queue_size, addresses, device_side=False)
        self._desc_mem, self._desc_at = parts.desc
        self._avail_mem, self._avail_at = parts.avail
        self._used_mem, self._used_at = parts.used
        self._used_event_at = self._avail_at + used_event_offset(queue_size)
        self._avail_event_at = self._used_at + avail_event_offset(queue_size)
        base &= _U16_MASK
        # Free descriptors in FIFO order: when the device uses chains in the order
        # they were made available (virtio-net does), each head lands in the ring
        # slot of its own number and rewrites the same bytes every lap, which a
        # replicated window does not send again (``ira.virtio.memory``).
        self._free: deque[int] = deque(range(queue_size))
        self._in_flight: dict[int, _InFlight[T]] = {}
        self._avail_idx = base  # shadow of avail.idx, including chains not yet published
        self._published_idx = base  # avail.idx as the device can see it
        self._last_used = base
        self._avail_flags = 0
        self._broken: QueueBroken | None = None
        self._detached = False
        self._counts = DriverRingStatistics()
        self._write_avail(RING_FLAGS, 0)
        self._write_avail(RING_IDX, base)
        self._avail_mem.write(self._used_event_at, U16.pack(base))
        memory.barrier()

    # -- state ----------------------------------------------------------

    @property
    def num_free(self) -> int:
        """Free descriptors; a chain needs one per buffer (one in all if indirect)."""
        return len(self._free)

    @property
    def outstanding(self) -> int:
        """Chains added and not yet collected."""
        return len(self._in_flight)

    @property
    def broken(self) -> QueueBroken | None:
        """The fault that broke the queue, if any."""
        return self._broken

    @property
    def callbacks_enabled(self) -> bool:
        """The driver asked for used buffer notifications (it has not disabled them)."""
        return not self._avail_flags & VRING_AVAIL_F_NO_INTERRUPT

    @property
    def unpublished(self) -> int:
        """Chains added since the last ``publish()``."""
        return (self._avail_idx - self._published_idx) & _U16_MASK

    def statistics(self) -> DriverRingStatistics:
        return self._counts.copy()

    # -- supplying buffers (§2.7.13) ------------------------------------

    def add(
        self,
        readable: Sequence[Buffer],
        writable: Sequence[Buffer],
        token: T,
        *,
        indirect_table: Buffer | None = None,
    ) -> int:
        """Add a chain (device-readable buffers, then device-writable ones); returns its head.

        The chain is exposed to the device at the next ``publish()``.  With
        ``indirect_table`` (VIRTIO_F_INDIRECT_DESC, §2.7.5.3) the chain's
        descriptors are written there, 16 bytes each, and it takes a single
        descriptor of the ring.
        """
        self._check_usable()
        buffers = [*readable, *writable]
        if not buffers:
            raise LocalProtocolError("a chain needs at least one buffer")
        if sum(b.length for b in buffers) > _MAX_CHAIN_BYTES:
            raise LocalProtocolError("a chain may not exceed 2**32 bytes (§2.7.5.2)")
        for b in buffers:
            if not 0 <= b.length < _MAX_CHAIN_BYTES:
                raise LocalProtocolError(f"bad buffer length {b.length}")
        n_readable = len(readable)
        if indirect_table is not None:
            head = self._add_indirect(buffers, n_readable, indirect_table)
            descriptors = [head]
        else:
            if len(buffers) > len(self._free):
                raise LocalProtocolError(
                    f"{len(buffers)} descriptors needed, {len(self._free)} free"
                )
            descriptors = [self._free.popleft() for _ in buffers]
            for i, (b, index) in enumerate(zip(buffers, descriptors, strict=True)):
                last = i == len(buffers) - 1
                flags = (DescFlags.WRITE if i >= n_readable else 0) | (
                    0 if last else DescFlags.NEXT
                )
                nxt = 0 if last else descriptors[i + 1]
                self._write_desc(index, Descriptor(b.addr, b.length, flags, nxt))
            head = descriptors[0]
        slot = self._avail_idx % self.queue_size
        self._avail_mem.write(self._avail_at + avail_entry_offset(slot), U16.pack(head))
        self._avail_idx = (self._avail_idx + 1) & _U16_MASK
        writable_bytes = sum(b.length for b in writable)
        self._in_flight[head] = _InFlight(token, descriptors, writable_bytes)
        self._counts.chains_added += 1
        return head

    def _add_indirect(self, buffers: list[Buffer], n_readable: int, table: Buffer) -> int:
        if not self.indirect:
            raise LocalProtocolError("VIRTIO_F_INDIRECT_DESC was not negotiated")
        if len(buffers) > self.queue_size:
            raise LocalProtocolError("an indirect table may not be longer than the queue")
        if table.length != DESC_BYTES * len(buffers):
            raise LocalProtocolError(
                f"an indirect table of {len(buffers)} descriptors is "
                f"{DESC_BYTES * len(buffers)} bytes, not {table.length}"
            )
        if not self._free:
            raise LocalProtocolError("no free descriptor")
        entries = []
        for i, b in enumerate(buffers):
            last = i == len(buffers) - 1
            flags = (DescFlags.WRITE if i >= n_readable else 0) | (0 if last else DescFlags.NEXT)
            entries.append(Descriptor(b.addr, b.length, flags, 0 if last else i + 1).encode())
        self._memory.write(table.addr, b"".join(entries))
        head = self._free.popleft()
        self._write_desc(head, Descriptor(table.addr, table.length, DescFlags.INDIRECT, 0))
        self._counts.indirect_chains += 1
        return head

    def publish(self) -> bool:
        """Expose the chains added since the last publish; True if the device must be notified.

        §2.7.13 steps 4-7: a write barrier, the avail.idx update, a barrier,
        then the suppression check (§2.7.10) on used.flags or avail_event.
        The two barriers are one ``MemoryMap.barrier`` that flushes the ring's
        window last: buffers, then ring entries and index in one update, so
        the device can never see the index before what it exposes.
        """
        self._check_usable()
        added = (self._avail_idx - self._published_idx) & _U16_MASK
        if not added:
            return False
        old, new = self._published_idx, self._avail_idx
        self._write_avail(RING_IDX, new)
        self._published_idx = new
        # Steps 4-6 as one barrier: the buffers' windows first, then the ring with
        # its entries and the index together (applied whole by the peer).
        self._memory.barrier(last=(self._desc_mem, self._avail_mem))
        notify = peer_wants_notification(
            self._used_mem,
            event_idx=self.event_idx,
            event_at=self._avail_event_at,
            flags_at=self._used_at + RING_FLAGS,
            suppress_flag=VRING_USED_F_NO_NOTIFY,
            old_idx=old,
            new_idx=new,
        )
        self._counts.publishes += 1
        if notify:
            self._counts.kicks += 1
        else:
            self._counts.kicks_suppressed += 1
        return notify

    # -- receiving used buffers (§2.7.14) -------------------------------

    def pending(self) -> int:
        """Used buffers waiting to be collected (checked against what is outstanding)."""
        self._check_usable()
        used_idx = read_u16(self._used_mem, self._used_at + RING_IDX)
        waiting = (used_idx - self._last_used) & _U16_MASK
        if waiting > len(self._in_flight):
            self._break(
                Fault.USED_INDEX_JUMP,
                f"used.idx {used_idx} is {waiting} past {self._last_used}, "
                f"{len(self._in_flight)} outstanding",
            )
        return waiting

    def collect(self, limit: int | None = None) -> list[UsedBuffer[T]]:
        """Take used buffers off the used ring, in ring order (at most ``limit``)."""
        waiting = self.pending()
        if limit is not None:
            waiting = min(waiting, limit)
        used: list[UsedBuffer[T]] = []
        for _ in range(waiting):
            slot = self._last_used % self.queue_size
            head, length = USED_ELEM.unpack(
                self._used_mem.read(self._used_at + used_entry_offset(slot), USED_ELEM.size)
            )
            entry = self._in_flight.get(head)
            if entry is None:
                self._break(Fault.USED_ID_UNKNOWN, f"used id {head} is not outstanding")
            if length > entry.writable_bytes:
                self._break(
                    Fault.USED_LEN_TOO_LONG,
                    f"used len {length} for a chain of {entry.writable_bytes} writable bytes",
                )
            del self._in_flight[head]
            self._free.extend(entry.descriptors)
            self._last_used = (self._last_used + 1) & _U16_MASK
            used.append(UsedBuffer(entry.token, length))
        if used:
            self._counts.chains_used += len(used)
            if self.event_idx and not self._avail_flags & VRING_AVAIL_F_NO_INTERRUPT:
                self._write_used_event(self._last_used)
        return used

    def disable_callbacks(self) -> None:
        """Ask the device not to notify used buffers (a hint, §2.7.7)."""
        self._check_usable()
        self._avail_flags = VRING_AVAIL_F_NO_INTERRUPT
        if not self.event_idx:  # with EVENT_IDX the flags stay 0 and used_event stays behind
            self._write_avail(RING_FLAGS, self._avail_flags)

    def enable_callbacks(self) -> bool:
        """Ask for a notification at the next used buffer; True if some are already waiting.

        The barrier between re-arming and re-checking used.idx is what keeps
        a buffer used meanwhile from going unnoticed (§2.7.14, note).
        """
        return self._enable_callbacks(0)

    def enable_callbacks_delayed(self) -> bool:
        """Like ``enable_callbacks`` but, with EVENT_IDX, only after 3/4 of what is outstanding."""
        return self._enable_callbacks(len(self._in_flight) * 3 // 4 if self.event_idx else 0)

    def _enable_callbacks(self, delay: int) -> bool:
        self._check_usable()
        self._avail_flags = 0
        if self.event_idx:
            self._write_used_event((self._last_used + delay) & _U16_MASK)
        else:
            self._write_avail(RING_FLAGS, 0)
        self._memory.barrier()
        return self.pending() > 0

    # -- teardown -------------------------------------------------------

    def detach(self) -> list[T]:
        """Every token not yet used, in the order added; the queue cannot be used again.

        For after a device reset (§2.4): the device will never use them.
        """
        tokens = [entry.token for entry in self._in_flight.values()]
        self._in_flight.clear()
        self._detached = True
        return tokens

    # -- helpers --------------------------------------------------------

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._detached:
            raise LocalProtocolError("the virtqueue was detached")

    def _break(self, fault: Fault, message: str) -> NoReturn:
        self._broken = QueueBroken(fault, message)
        self._counts.faults[fault] += 1
        raise self._broken

    def _write_desc(self, index: int, desc: Descriptor) -> None:
        self._desc_mem.write(self._desc_at + DESC_BYTES * index, desc.encode())

    def _write_avail(self, field: int, value: int) -> None:
        self._avail_mem.write(self._avail_at + field, U16.pack(value))

    def _write_used_event(self, value: int) -> None:
        self._avail_mem.write(self._used_event_at, U16.pack(value))
