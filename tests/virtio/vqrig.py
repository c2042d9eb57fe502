"""A virtqueue driver and device sharing in-process memory.

Three regions, laid out as a transport would: window 1 holds the queue (the
device writes only its used ring), window 2 the driver's outgoing data (the
device only reads it), window 3 buffers the device fills (all of it the
device's to write).  Every chain gets its own slot of ``slot_bytes`` in
windows 2 and 3 (and in window 4 for an indirect table), so a test can fill
and check buffers by token.
"""

from __future__ import annotations

from dataclasses import dataclass

from ira.virtio import (
    Buffer,
    MemoryMap,
    QueueAddresses,
    Region,
    VirtqueueDevice,
    VirtqueueDriver,
    split_layout,
)
from ira.virtio.ring import DESC_BYTES, QueueLayout

RING, OUT, IN, TABLES = 1, 2, 3, 4


def pattern(token: int, length: int, salt: int = 0) -> bytes:
    """Recognisable bytes for ``token``."""
    return bytes((token * 7 + salt * 13 + i) & 0xFF for i in range(length))


@dataclass(frozen=True)
class ChainSpec:
    """The shape of a chain a test adds: buffer lengths, readable then writable."""

    readable: tuple[int, ...]
    writable: tuple[int, ...]
    indirect: bool = False


class Rig:
    def __init__(
        self,
        queue_size: int,
        *,
        event_idx: bool = False,
        indirect: bool = False,
        base: int = 0,
        slot_bytes: int = 64,
        max_buffers: int = 6,
        max_chain: int | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.slot_bytes = slot_bytes
        self.max_buffers = max_buffers
        self.layout: QueueLayout = split_layout(queue_size)
        lay = self.layout
        self.ring = Region(
            RING, lay.size_bytes, device_offset=lay.used_offset, device_length=lay.used_bytes
        )
        slots = queue_size * slot_bytes
        self.out = Region(OUT, slots)
        self.inb = Region(IN, slots, device_offset=0, device_length=slots)
        self.tables = Region(TABLES, queue_size * DESC_BYTES * max_buffers)
        regions = (self.ring, self.out, self.inb, self.tables)
        self.driver_memory = MemoryMap(r.driver for r in regions)
        self.device_memory = MemoryMap(r.device for r in regions)
        self.addresses = QueueAddresses.in_window(RING, lay)
        self.driver: VirtqueueDriver[int] = VirtqueueDriver(
            self.driver_memory,
            queue_size,
            self.addresses,
            event_idx=event_idx,
            indirect=indirect,
            base=base,
        )
        self.device = VirtqueueDevice(
            self.device_memory,
            queue_size,
            self.addresses,
            event_idx=event_idx,
            indirect=indirect,
            base=base,
            max_chain=max_chain,
        )
        self._free_slots = list(range(queue_size - 1, -1, -1))
        #: slot of each token in flight
        self.slots: dict[int, int] = {}

    def can_add(self, spec: ChainSpec) -> bool:
        buffers = len(spec.readable) + len(spec.writable)
        if spec.indirect and buffers > self.queue_size:  # no table longer than the queue
            return False
        needed = 1 if spec.indirect else buffers
        return bool(self._free_slots) and self.driver.num_free >= needed

    def add(self, token: int, spec: ChainSpec) -> int:
        """Add a chain for ``token``: its readable buffers filled with ``pattern(token)``."""
        assert sum(spec.readable) <= self.slot_bytes and sum(spec.writable) <= self.slot_bytes
        assert len(spec.readable) + len(spec.writable) <= self.max_buffers
        slot = self._free_slots.pop()
        self.slots[token] = slot
        base = slot * self.slot_bytes
        readable, writable = [], []
        pos = 0
        data = pattern(token, sum(spec.readable))
        self.out.driver.write(base, data)
        for n in spec.readable:
            readable.append(Buffer.at(OUT, base + pos, n))
            pos += n
        pos = 0
        for n in spec.writable:
            writable.append(Buffer.at(IN, base + pos, n))
            pos += n
        table = None
        if spec.indirect:
            count = len(readable) + len(writable)
            table = Buffer.at(TABLES, slot * DESC_BYTES * self.max_buffers, DESC_BYTES * count)
        return self.driver.add(readable, writable, token, indirect_table=table)

    def release(self, token: int) -> None:
        self._free_slots.append(self.slots.pop(token))

    def written(self, token: int, length: int) -> bytes:
        """What the device wrote for ``token`` (the first ``length`` bytes of its slot)."""
        base = self.slots[token] * self.slot_bytes
        return bytes(self.inb.data[base : base + length])
