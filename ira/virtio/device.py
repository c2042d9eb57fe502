"""The device's side of a split virtqueue (virtio 1.2 §2.7).

Theory of operation
-------------------

The device owns the used ring and only reads the descriptor table and the
available ring, which the driver writes — and which it must not trust.
``pop()`` takes the next available chain and checks all of it before any
of it is used:

* each descriptor is *copied* out of shared memory (16 bytes, decoded once)
  and only the copy is checked and used, so a driver rewriting the table
  meanwhile changes nothing;
* an indirect table (§2.7.5.3) is copied whole the same way;
* the available index may run at most a queue size ahead (§2.7.13); heads
  and ``next`` links must be inside the table (or the indirect table);
  no descriptor may appear twice in a chain (a loop, §2.7.5.2) or belong to
  a chain the device still holds; a chain has at most ``max_chain``
  descriptors (at most the queue size, §2.7.5.3.1) and 2**32 bytes;
* device-writable buffers come after every device-readable one (§2.7.4.2);
* every buffer lies inside a window the device can address, and every
  device-writable buffer inside bytes the device may write;
* INDIRECT only if VIRTIO_F_INDIRECT_DESC was negotiated, never with NEXT,
  never inside an indirect table, and a table of whole descriptors.

Anything else breaks the queue: ``QueueBroken`` is raised (and counted by
fault), now and at every later use, and the transport sets
DEVICE_NEEDS_RESET.  Nothing a driver writes makes ``pop()`` raise anything
else.

Returning buffers mirrors the driver: ``push()`` writes used elements,
``publish()`` is the notify decision — barrier, used.idx update, barrier,
then avail.flags NO_INTERRUPT or, with VIRTIO_F_EVENT_IDX,
``vring_need_event(used_event, new, old)`` (§2.7.7).  The device suppresses
available buffer notifications with ``disable_notifications()`` and re-arms
them with ``enable_notifications()``, which returns True when chains became
available meanwhile (§2.7.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from ira.errors import LocalProtocolError
from ira.virtio.counters import DeviceRingStatistics
from ira.virtio.memory import Memory, MemoryMap, make_addr, split_addr
from ira.virtio.ring import (
    DESC_BYTES,
    RING_FLAGS,
    RING_IDX,
    U16,
    USED_ELEM,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_USED_F_NO_NOTIFY,
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

_U16_MASK = 0xFFFF
_MAX_CHAIN_BYTES = 1 << 32


@dataclass(frozen=True, slots=True)
class Segment:
    """One buffer of a popped chain: ``length`` bytes at ``offset`` in window ``window_id``."""

    window_id: int
    offset: int
    length: int

    @property
    def addr(self) -> int:
        return make_addr(self.window_id, self.offset)


@dataclass(frozen=True, slots=True)
class Chain:
    """A validated descriptor chain: what the device may read, then what it may write."""

    head: int
    readable: tuple[Segment, ...]
    writable: tuple[Segment, ...]
    #: True if (part of) the chain came from an indirect table
    indirect: bool

    @property
    def readable_bytes(self) -> int:
        return sum(s.length for s in self.readable)

    @property
    def writable_bytes(self) -> int:
        return sum(s.length for s in self.writable)


class _Walk:
    """A chain being gathered and checked, descriptor by descriptor."""

    def __init__(self, device: VirtqueueDevice) -> None:
        self.device = device
        self.readable: list[Segment] = []
        self.writable: list[Segment] = []
        self.total_bytes = 0
        self.count = 0

    def take(self, desc: Descriptor) -> None:
        dev = self.device
        self.count += 1
        if self.count > dev.max_chain:
            dev.fail(Fault.CHAIN_TOO_LONG, f"more than {dev.max_chain} descriptors")
        self.total_bytes += desc.length
        if self.total_bytes > _MAX_CHAIN_BYTES:
            dev.fail(Fault.CHAIN_TOO_MANY_BYTES, "more than 2**32 bytes")
        if not dev.memory.contains(desc.addr, desc.length):
            dev.fail(Fault.OUT_OF_WINDOW, f"{desc.length} bytes at {desc.addr:#x}")
        window_id, offset = split_addr(desc.addr)
        segment = Segment(window_id, offset, desc.length)
        if desc.writable:
            if not dev.memory.contains(desc.addr, desc.length, write=True):
                dev.fail(Fault.NOT_DEVICE_WRITABLE, f"{desc.length} bytes at {desc.addr:#x}")
            self.writable.append(segment)
        else:
            if self.writable:
                dev.fail(Fault.WRITABLE_BEFORE_READABLE, "a readable buffer after a writable one")
            self.readable.append(segment)


class VirtqueueDevice:
    """The device end of one split virtqueue, over one side's ``MemoryMap``."""

    def __init__(
        self,
        memory: MemoryMap,
        queue_size: int,
        addresses: QueueAddresses,
        *,
        event_idx: bool = False,
        indirect: bool = False,
        base: int = 0,
        max_chain: int | None = None,
    ) -> None:
        """Take over the queue's used ring and initialise it.

        ``event_idx``/``indirect``: VIRTIO_F_EVENT_IDX / VIRTIO_F_INDIRECT_DESC
        negotiated.  ``base``: the ring index both sides start from (0
        after a reset).  ``max_chain``: the device's limit on descriptors
        per chain (§2.7.4.1), at most (and by default) the queue size.
        Raises ``LocalProtocolError`` if the parts are misaligned, outside
        their windows or the used ring is not the device's to write.
        """
        self.memory = memory
        self.queue_size = queue_size
        self.event_idx = event_idx
        self.indirect = indirect
        if max_chain is None:
            max_chain = queue_size
        if not 1 <= max_chain <= queue_size:
            raise LocalProtocolError(f"max_chain must be in [1, {queue_size}], not {max_chain}")
        self.max_chain = max_chain
        parts = resolve_parts(memory, queue_size, addresses, device_side=True)
        self._desc_mem, self._desc_at = parts.desc
        self._avail_mem, self._avail_at = parts.avail
        self._used_mem, self._used_at = parts.used
        self._used_event_at = self._avail_at + used_event_offset(queue_size)
        self._avail_event_at = self._used_at + avail_event_offset(queue_size)
        base &= _U16_MASK
        self._last_avail = base
        self._used_idx = base  # shadow of used.idx, including elements not yet published
        self._published_idx = base
        self._notifications = True
        self._held: dict[int, tuple[int, ...]] = {}  # head -> descriptor indices, per chain
        self._busy: set[int] = set()
        self._broken: QueueBroken | None = None
        self._counts = DeviceRingStatistics()
        self._write_used(RING_FLAGS, 0)
        self._write_used(RING_IDX, base)
        self._used_mem.write(self._avail_event_at, U16.pack(base))
        memory.barrier()

    # -- state ----------------------------------------------------------

    @property
    def broken(self) -> QueueBroken | None:
        """The fault that broke the queue, if any."""
        return self._broken

    @property
    def in_flight(self) -> int:
        """Chains popped and not yet pushed back."""
        return len(self._held)

    @property
    def notifications_enabled(self) -> bool:
        """The device asked for available buffer notifications (it has not disabled them)."""
        return self._notifications

    @property
    def unpublished(self) -> int:
        """Chains pushed since the last ``publish()``."""
        return (self._used_idx - self._published_idx) & _U16_MASK

    def statistics(self) -> DeviceRingStatistics:
        return self._counts.copy()

    def fail(self, fault: Fault, message: str) -> NoReturn:
        """Break the queue (counted once per queue) and raise ``QueueBroken``."""
        if self._broken is None:
            self._broken = QueueBroken(fault, message)
            self._counts.faults[fault] += 1
        raise self._broken

    # -- taking chains --------------------------------------------------

    def pending(self) -> int:
        """Chains available and not yet popped."""
        self._check_usable()
        idx = read_u16(self._avail_mem, self._avail_at + RING_IDX)
        waiting = (idx - self._last_avail) & _U16_MASK
        if waiting > self.queue_size:
            self.fail(
                Fault.AVAIL_INDEX_JUMP,
                f"avail.idx {idx} is {waiting} past {self._last_avail} in a queue of "
                f"{self.queue_size}",
            )
        return waiting

    def pop(self) -> Chain | None:
        """The next available chain, checked whole; None if there is none."""
        if not self.pending():
            return None
        slot = self._last_avail % self.queue_size
        head = read_u16(self._avail_mem, self._avail_at + avail_entry_offset(slot))
        if head >= self.queue_size:
            self.fail(Fault.HEAD_OUT_OF_RANGE, f"head {head} in a queue of {self.queue_size}")
        walk = _Walk(self)
        indices: list[int] = []
        seen: set[int] = set()
        index = head
        indirect = False
        while True:
            if index in seen:
                self.fail(Fault.DESCRIPTOR_LOOP, f"descriptor {index} twice in chain {head}")
            if index in self._busy:
                self.fail(Fault.DESCRIPTOR_IN_USE, f"descriptor {index} is held by another chain")
            indices.append(index)
            seen.add(index)
            desc = Descriptor.decode(self._desc_mem.read(self._desc_at + DESC_BYTES * index, 16))
            if desc.indirect:
                self._walk_indirect(desc, walk)
                indirect = True
                break
            walk.take(desc)
            if not desc.has_next:
                break
            if desc.next >= self.queue_size:
                self.fail(
                    Fault.NEXT_OUT_OF_RANGE, f"next {desc.next} in a queue of {self.queue_size}"
                )
            index = desc.next
        self._last_avail = (self._last_avail + 1) & _U16_MASK
        self._held[head] = tuple(indices)
        self._busy.update(indices)
        self._counts.chains_popped += 1
        if self.event_idx and self._notifications:
            self._write_avail_event(self._last_avail)
        return Chain(head, tuple(walk.readable), tuple(walk.writable), indirect)

    def _walk_indirect(self, desc: Descriptor, walk: _Walk) -> None:
        if not self.indirect:
            self.fail(Fault.INDIRECT_NOT_NEGOTIATED, "INDIRECT without VIRTIO_F_INDIRECT_DESC")
        if desc.has_next:
            self.fail(Fault.INDIRECT_WITH_NEXT, "INDIRECT and NEXT on one descriptor")
        entries, rest = divmod(desc.length, DESC_BYTES)
        if not entries or rest:
            self.fail(Fault.BAD_INDIRECT_TABLE, f"an indirect table of {desc.length} bytes")
        if entries > self.max_chain:
            self.fail(Fault.CHAIN_TOO_LONG, f"an indirect table of {entries} descriptors")
        if not self.memory.contains(desc.addr, desc.length):
            self.fail(Fault.OUT_OF_WINDOW, f"indirect table of {desc.length} at {desc.addr:#x}")
        table = self.memory.read(desc.addr, desc.length)  # one copy, checked and used
        seen: set[int] = set()
        index = 0
        while True:
            if index in seen:
                self.fail(Fault.DESCRIPTOR_LOOP, f"indirect descriptor {index} twice")
            seen.add(index)
            entry = Descriptor.decode(table[DESC_BYTES * index : DESC_BYTES * (index + 1)])
            if entry.indirect:
                self.fail(Fault.NESTED_INDIRECT, "INDIRECT inside an indirect table")
            walk.take(entry)
            if not entry.has_next:
                return
            if entry.next >= entries:
                self.fail(Fault.NEXT_OUT_OF_RANGE, f"next {entry.next} in a table of {entries}")
            index = entry.next

    # -- buffers --------------------------------------------------------

    def read(self, chain: Chain, offset: int = 0, size: int | None = None) -> bytes:
        """The chain's device-readable bytes ``[offset, offset + size)`` (to the end by default)."""
        end = chain.readable_bytes if size is None else offset + size
        if offset < 0 or not offset <= end <= chain.readable_bytes:
            raise LocalProtocolError(f"read {offset}..{end} of {chain.readable_bytes} bytes")
        out = []
        pos = 0
        for seg in chain.readable:
            lo, hi = max(offset, pos), min(end, pos + seg.length)
            if lo < hi:
                out.append(self._segment_memory(seg).read(seg.offset + lo - pos, hi - lo))
            pos += seg.length
        return b"".join(out)

    def write(self, chain: Chain, data: bytes, offset: int = 0) -> None:
        """Write ``data`` into the chain's device-writable buffers, from ``offset``."""
        end = offset + len(data)
        if offset < 0 or end > chain.writable_bytes:
            raise LocalProtocolError(f"write {offset}+{len(data)} of {chain.writable_bytes} bytes")
        pos = 0
        for seg in chain.writable:
            lo, hi = max(offset, pos), min(end, pos + seg.length)
            if lo < hi:
                mem = self._segment_memory(seg)
                mem.write(seg.offset + lo - pos, data[lo - offset : hi - offset])
            pos += seg.length

    def _segment_memory(self, seg: Segment) -> Memory:
        memory = self.memory.get(seg.window_id)
        if memory is None:
            raise LocalProtocolError(f"window {seg.window_id} is no longer mapped")
        return memory

    # -- returning chains -----------------------------------------------

    def push(self, chain: Chain, written_bytes: int) -> None:
        """Return a chain as used, ``written_bytes`` written from its first writable byte.

        It reaches the driver at the next ``publish()``.  Chains may be
        returned in any order.
        """
        self._check_usable()
        indices = self._held.pop(chain.head, None)
        if indices is None:
            raise LocalProtocolError(f"chain {chain.head} is not held by the device")
        if not 0 <= written_bytes <= chain.writable_bytes:
            self._held[chain.head] = indices
            raise LocalProtocolError(
                f"{written_bytes} bytes written in a chain of {chain.writable_bytes}"
            )
        self._busy.difference_update(indices)
        slot = self._used_idx % self.queue_size
        self._used_mem.write(
            self._used_at + used_entry_offset(slot), USED_ELEM.pack(chain.head, written_bytes)
        )
        self._used_idx = (self._used_idx + 1) & _U16_MASK
        self._counts.chains_pushed += 1

    def publish(self) -> bool:
        """Expose the chains pushed since the last publish; True if the driver must be notified.

        The notify decision of §2.7.7: after a barrier and the used.idx
        update, avail.flags NO_INTERRUPT or, with EVENT_IDX, used_event.
        """
        self._check_usable()
        if self._used_idx == self._published_idx:
            return False
        old, new = self._published_idx, self._used_idx
        self._write_used(RING_IDX, new)
        self._published_idx = new
        # buffers, then used elements with used.idx in one update (§2.7.8.2)
        self.memory.barrier(last=(self._used_mem,))
        notify = peer_wants_notification(
            self._avail_mem,
            event_idx=self.event_idx,
            event_at=self._used_event_at,
            flags_at=self._avail_at + RING_FLAGS,
            suppress_flag=VRING_AVAIL_F_NO_INTERRUPT,
            old_idx=old,
            new_idx=new,
        )
        self._counts.publishes += 1
        if notify:
            self._counts.notifications += 1
        else:
            self._counts.notifications_suppressed += 1
        return notify

    def disable_notifications(self) -> None:
        """Ask the driver not to notify available buffers (a hint, §2.7.10)."""
        self._check_usable()
        self._notifications = False
        if not self.event_idx:  # with EVENT_IDX avail_event simply stays behind
            self._write_used(RING_FLAGS, VRING_USED_F_NO_NOTIFY)

    def enable_notifications(self) -> bool:
        """Ask for a notification at the next available chain; True if some are already there."""
        self._check_usable()
        self._notifications = True
        if self.event_idx:
            self._write_avail_event(self._last_avail)
        else:
            self._write_used(RING_FLAGS, 0)
        self.memory.barrier()
        return self.pending() > 0

    # -- helpers --------------------------------------------------------

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _write_used(self, field: int, value: int) -> None:
        self._used_mem.write(self._used_at + field, U16.pack(value))

    def _write_avail_event(self, value: int) -> None:
        self._used_mem.write(self._avail_event_at, U16.pack(value))
