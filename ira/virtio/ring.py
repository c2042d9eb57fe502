"""The split virtqueue's memory layout, byte for byte (virtio 1.2 §2.7).

A split virtqueue of ``queue_size`` entries has three parts, each contiguous,
each written by one side only (§2.7, table "Virtqueue Part / Alignment / Size"):

===================  =========  ==================  ============
part                 alignment  size (bytes)        written by
===================  =========  ==================  ============
descriptor table     16         16 * queue_size     driver
available ring       2          6 + 2 * queue_size  driver
used ring            4          6 + 8 * queue_size  device
===================  =========  ==================  ============

Every field is little-endian (§2.7.3 contrasts this with legacy native-endian
rings).  Queue sizes are powers of two from 1 to 32768 (§2.7: "Queue Size
value is always a power of 2.  The maximum Queue Size value is 32768"), so a
16-bit free-running index always tells a full ring from an empty one
(§2.7.13).

Descriptor (§2.7.5)::

    0   le64 addr      see ira.virtio.memory: window id << 32 | offset
    8   le32 len
    12  le16 flags     NEXT 1, WRITE 2, INDIRECT 4
    14  le16 next

Available ring (§2.7.6), offsets from its start::

    0        le16 flags        NO_INTERRUPT 1
    2        le16 idx
    4 + 2i   le16 ring[i]      head of a descriptor chain
    4 + 2n   le16 used_event   only with VIRTIO_F_EVENT_IDX

Used ring (§2.7.8)::

    0        le16 flags        NO_NOTIFY 1
    2        le16 idx
    4 + 8i   le32 ring[i].id, le32 ring[i].len
    4 + 8n   le16 avail_event  only with VIRTIO_F_EVENT_IDX

``split_layout`` places the three parts one after another in one window at
their minimum alignments; ``legacy_layout`` pads the used ring to a page
boundary as legacy interfaces require (§2.7.2).  Both describe the same
structures; the rings only ever use the offsets they are given.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.virtio.memory import Memory, MemoryMap, make_addr
from ira.wire.virtio import MAX_QUEUE_SIZE as MAX_QUEUE_SIZE

#: one descriptor, in bytes (§2.7.5)
DESC_BYTES = 16
#: minimum alignment of each part (§2.7.1)
DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4
#: the page alignment of the used ring in the legacy layout (§2.7.2)
LEGACY_QUEUE_ALIGN = 4096

#: avail.flags: the driver asks not to be notified of used buffers (§2.7.7)
VRING_AVAIL_F_NO_INTERRUPT = 1
#: used.flags: the device asks not to be notified of available buffers (§2.7.10)
VRING_USED_F_NO_NOTIFY = 1

# Offsets of the fixed fields inside the rings (§2.7.6, §2.7.8).
RING_FLAGS = 0
RING_IDX = 2
RING_ENTRIES = 4
USED_ELEM_BYTES = 8

U16 = struct.Struct("<H")
USED_ELEM = struct.Struct("<II")
_DESC = struct.Struct("<QIHH")
_U16_MASK = 0xFFFF


class DescFlags(enum.IntFlag):
    """``virtq_desc.flags`` (§2.7.5)."""

    NEXT = 1
    WRITE = 2
    INDIRECT = 4


# the flags as plain ints, for the per-descriptor checks (IntFlag arithmetic costs ~1 us)
_NEXT, _WRITE, _INDIRECT = int(DescFlags.NEXT), int(DescFlags.WRITE), int(DescFlags.INDIRECT)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One 16-byte descriptor, decoded (a copy: never a view of shared memory)."""

    addr: int
    length: int
    flags: int
    next: int

    def encode(self) -> bytes:
        return _DESC.pack(self.addr, self.length, self.flags, self.next)

    @classmethod
    def decode(cls, data: bytes) -> Descriptor:
        addr, length, flags, nxt = _DESC.unpack(data)
        return cls(addr, length, flags, nxt)

    @property
    def has_next(self) -> bool:
        return bool(self.flags & _NEXT)

    @property
    def writable(self) -> bool:
        return bool(self.flags & _WRITE)

    @property
    def indirect(self) -> bool:
        return bool(self.flags & _INDIRECT)


def read_u16(memory: Memory, offset: int) -> int:
    """A little-endian u16 of shared memory."""
    value: int = U16.unpack(memory.read(offset, 2))[0]
    return value


def check_queue_size(queue_size: int) -> None:
    """Refuse a queue size that is not a power of two in [1, 32768] (§2.7)."""
    if not 1 <= queue_size <= MAX_QUEUE_SIZE or queue_size & (queue_size - 1):
        raise LocalProtocolError(
            f"queue size must be a power of two from 1 to {MAX_QUEUE_SIZE}, not {queue_size}"
        )


def desc_table_bytes(queue_size: int) -> int:
    """Size of the descriptor table (§2.7): 16 * queue_size."""
    return DESC_BYTES * queue_size


def avail_ring_bytes(queue_size: int) -> int:
    """Size of the available ring (§2.7): 6 + 2 * queue_size (used_event included)."""
    return 6 + 2 * queue_size


def used_ring_bytes(queue_size: int) -> int:
    """Size of the used ring (§2.7): 6 + 8 * queue_size (avail_event included)."""
    return 6 + USED_ELEM_BYTES * queue_size


def avail_entry_offset(index: int) -> int:
    """Offset of ``avail.ring[index]`` from the start of the available ring."""
    return RING_ENTRIES + 2 * index


def used_event_offset(queue_size: int) -> int:
    """Offset of ``used_event`` from the start of the available ring (§2.7.6)."""
    return RING_ENTRIES + 2 * queue_size


def used_entry_offset(index: int) -> int:
    """Offset of ``used.ring[index]`` from the start of the used ring."""
    return RING_ENTRIES + USED_ELEM_BYTES * index


def avail_event_offset(queue_size: int) -> int:
    """Offset of ``avail_event`` from the start of the used ring (§2.7.8)."""
    return RING_ENTRIES + USED_ELEM_BYTES * queue_size


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


@dataclass(frozen=True, slots=True)
class QueueLayout:
    """Where the three parts of one queue sit in a window (offsets in bytes)."""

    queue_size: int
    desc_offset: int
    avail_offset: int
    used_offset: int
    #: bytes from the start of the descriptor table to the end of the used ring
    size_bytes: int

    @property
    def desc_bytes(self) -> int:
        return desc_table_bytes(self.queue_size)

    @property
    def avail_bytes(self) -> int:
        return avail_ring_bytes(self.queue_size)

    @property
    def used_bytes(self) -> int:
        return used_ring_bytes(self.queue_size)


def split_layout(queue_size: int, *, base: int = 0) -> QueueLayout:
    """The three parts packed at their minimum alignments from ``base`` (§2.7, §2.7.1).

    ``base`` must be 16-aligned.  The device writes only
    ``[used_offset, used_offset + used_bytes)``, which makes it the window's
    device range.
    """
    check_queue_size(queue_size)
    if base % DESC_ALIGN:
        raise LocalProtocolError(f"a descriptor table must be {DESC_ALIGN}-aligned, not {base}")
    avail = base + desc_table_bytes(queue_size)  # a multiple of 16, so 2-aligned
    used = align_up(avail + avail_ring_bytes(queue_size), USED_ALIGN)
    return QueueLayout(queue_size, base, avail, used, used + used_ring_bytes(queue_size) - base)


def legacy_layout(queue_size: int, *, queue_align: int = LEGACY_QUEUE_ALIGN) -> QueueLayout:
    """The legacy ``struct virtq`` (§2.7.2): the used ring starts on a ``queue_align`` boundary.

    ``size_bytes`` is the spec's ``virtq_size()``: both halves rounded up to
    ``queue_align``.
    """
    check_queue_size(queue_size)
    if queue_align < 1 or queue_align & (queue_align - 1):
        raise LocalProtocolError(f"queue align must be a power of two, not {queue_align}")
    used = align_up(desc_table_bytes(queue_size) + avail_ring_bytes(queue_size), queue_align)
    size = used + align_up(used_ring_bytes(queue_size), queue_align)
    return QueueLayout(queue_size, 0, desc_table_bytes(queue_size), used, size)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """True if moving an index from ``old_idx`` to ``new_idx`` passed ``event_idx``.

    The rule of VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10; ``vring_need_event`` in
    the spec's virtio_queue.h): notify iff ``event_idx`` is one of the indices
    ``old_idx, ..., new_idx - 1`` just written, all arithmetic modulo 2**16::

        (u16)(new_idx - event_idx - 1) < (u16)(new_idx - old_idx)
    """
    return (new_idx - event_idx - 1) & _U16_MASK < (new_idx - old_idx) & _U16_MASK


def peer_wants_notification(
    peer: Memory,
    *,
    event_idx: bool,
    event_at: int,
    flags_at: int,
    suppress_flag: int,
    old_idx: int,
    new_idx: int,
) -> bool:
    """The publishing side's notification decision after moving its index from
    ``old_idx`` to ``new_idx`` (§2.7.10, §2.7.13): with EVENT_IDX the peer's event
    index (``used_event`` or ``avail_event`` at ``event_at``) decides, otherwise its
    ring flags (NO_INTERRUPT or NO_NOTIFY, ``suppress_flag``) at ``flags_at``."""
    if event_idx:
        return vring_need_event(read_u16(peer, event_at), new_idx, old_idx)
    return not read_u16(peer, flags_at) & suppress_flag


@dataclass(frozen=True, slots=True)
class QueueAddresses:
    """The addresses of a queue's three parts (virtio 1.x gives each its own, §2.7)."""

    desc: int
    avail: int
    used: int

    @classmethod
    def in_window(cls, window_id: int, layout: QueueLayout) -> QueueAddresses:
        """The parts of ``layout`` placed in window ``window_id``."""
        return cls(
            make_addr(window_id, layout.desc_offset),
            make_addr(window_id, layout.avail_offset),
            make_addr(window_id, layout.used_offset),
        )


@dataclass(frozen=True, slots=True)
class QueueParts:
    """The three parts resolved in one side's memory: ``(memory, offset)`` each."""

    desc: tuple[Memory, int]
    avail: tuple[Memory, int]
    used: tuple[Memory, int]


def resolve_parts(
    memory: MemoryMap, queue_size: int, addresses: QueueAddresses, *, device_side: bool
) -> QueueParts:
    """Check the parts' alignment (§2.7.1), bounds and writer, and resolve them.

    The driver must be able to write the descriptor table and the available
    ring, the device the used ring; the other side only reads them.
    """
    check_queue_size(queue_size)
    parts = (
        ("descriptor table", addresses.desc, desc_table_bytes(queue_size), DESC_ALIGN, False),
        ("available ring", addresses.avail, avail_ring_bytes(queue_size), AVAIL_ALIGN, False),
        ("used ring", addresses.used, used_ring_bytes(queue_size), USED_ALIGN, True),
    )
    resolved = []
    for name, addr, size, alignment, device_writes in parts:
        if addr % alignment:
            raise LocalProtocolError(f"the {name} at {addr:#x} is not {alignment}-aligned")
        resolved.append(memory.resolve(addr, size, write=device_writes == device_side))
    used_memory, used_at = resolved[2]
    used_end = used_at + used_ring_bytes(queue_size)
    for (name, _, size, _, _), (part_memory, at) in zip(parts[:2], resolved[:2], strict=True):
        if part_memory is used_memory and at < used_end and used_at < at + size:
            raise LocalProtocolError(f"the {name} overlaps the used ring")
    return QueueParts(*resolved)


class Fault(enum.StrEnum):
    """Why a queue broke: what the other side put in shared memory that cannot be used."""

    # found by the device in the driver's parts
    AVAIL_INDEX_JUMP = "avail_index_jump"  # more chains available than the queue holds
    HEAD_OUT_OF_RANGE = "head_out_of_range"
    NEXT_OUT_OF_RANGE = "next_out_of_range"
    DESCRIPTOR_LOOP = "descriptor_loop"
    CHAIN_TOO_LONG = "chain_too_long"
    CHAIN_TOO_MANY_BYTES = "chain_too_many_bytes"  # over 2**32 bytes in total (§2.7.5.2)
    DESCRIPTOR_IN_USE = "descriptor_in_use"  # part of a chain the device still holds
    WRITABLE_BEFORE_READABLE = "writable_before_readable"  # §2.7.4.2
    OUT_OF_WINDOW = "out_of_window"  # unknown window, or past its end
    NOT_DEVICE_WRITABLE = "not_device_writable"  # a WRITE buffer the device may not write
    INDIRECT_NOT_NEGOTIATED = "indirect_not_negotiated"  # §2.7.5.3.1
    INDIRECT_WITH_NEXT = "indirect_with_next"
    NESTED_INDIRECT = "nested_indirect"
    BAD_INDIRECT_TABLE = "bad_indirect_table"  # empty, not a multiple of 16, too long
    # found by the driver in the device's part
    USED_INDEX_JUMP = "used_index_jump"  # more buffers used than were outstanding
    USED_ID_UNKNOWN = "used_id_unknown"  # not the head of an outstanding chain
    USED_LEN_TOO_LONG = "used_len_too_long"  # more written than the chain can hold


class QueueBroken(RemoteProtocolError):
    """The other side broke the queue; the device reports DEVICE_NEEDS_RESET (§2.1).

    Raised by the call that found the fault and by every later use of the
    queue, which stays broken until it is rebuilt after a reset.
    """

    def __init__(self, fault: Fault, message: str) -> None:
        super().__init__(f"{fault}: {message}")
        self.fault = fault
