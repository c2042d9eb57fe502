"""Memory the rings and buffers live in, and how a descriptor names it.

There is no guest-physical address space on a serial or USB link: memory is
a set of shared windows (``ira.busmodel.window``), each known to both sides
by its window id.  A descriptor's 64-bit ``addr`` (virtio 1.2 §2.7.5) therefore
names a window and an offset in it::

    addr = window_id << 32 | offset        (both unsigned 32-bit)

(``make_addr``/``split_addr``, specified in ``ira.wire.virtio``).
The same encoding is used for the queue's own parts (descriptor table,
available ring, used ring), which may be in one window or three.

Each byte of a window has one writer (DESIGN §4): the device writes its
window's device range, the driver everything else.  ``Memory`` is the view
one side has of one window: it can read anything and write only its own
bytes, and ``flush()`` is its write barrier (for a replicated window it
sends the dirty bytes; for memory shared in-process it does nothing).  A
``MemoryMap`` resolves addresses for one side and checks every access
against the bounds and the writer of its window.

``Region`` is plain memory shared by a driver and a device in one process
(tests, experiments); ``WindowMemory`` adapts a bus ``Window`` replica.

Over a link every byte written is a byte on the line, so ``WindowMemory``
writes only the bytes that change: a write is trimmed to the span from the
first to the last byte that differs from the replica (the replica holds
this side's own bytes exactly as the peer will see them once flushed, since
nobody else may write them), and a write that changes nothing is dropped.
A ring entry rewritten with the value it already has (a descriptor naming
the same buffer again, a head in the slot it was in a lap ago) costs
nothing (buffer contents are only checked for being unchanged whole).
``MemoryMap.barrier(last=...)`` flushes the named windows after
every other one: the rings use it so that one barrier sends the buffers
first and then the ring entries with the index that exposes them, in one
update (a replicated window applies an update whole, so the peer sees both
or neither).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from ira.busmodel.window import Window
from ira.errors import LocalProtocolError
from ira.wire.virtio import ADDR_OFFSET_BITS, make_addr, split_addr

__all__ = [
    "ADDR_OFFSET_BITS",
    "Memory",
    "MemoryMap",
    "Region",
    "RegionView",
    "WindowMemory",
    "make_addr",
    "split_addr",
]

_U32 = 0xFFFFFFFF
#: writes up to this long (ring entries, descriptors) are trimmed to the bytes that change
_TRIM_BYTES = 64


class Memory(Protocol):
    """One side's access to one window."""

    @property
    def window_id(self) -> int: ...

    @property
    def size_bytes(self) -> int: ...

    def read(self, offset: int, size: int) -> bytes:
        """The bytes at ``[offset, offset + size)`` (a copy)."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """Write this side's own bytes."""
        ...

    def writable(self, offset: int, length: int) -> bool:
        """True if this side may write every byte of ``[offset, offset + length)``."""
        ...

    def flush(self) -> None:
        """Write barrier: what was written so far becomes visible to the peer."""
        ...


class Region:
    """A bytearray shared in-process by a driver view and a device view.

    The device may write ``[device_offset, device_offset + device_length)``,
    the driver every other byte, exactly as in a bus window.
    """

    def __init__(
        self, window_id: int, size_bytes: int, *, device_offset: int = 0, device_length: int = 0
    ) -> None:
        if size_bytes < 1 or not 0 <= window_id <= _U32 or size_bytes > _U32 + 1:
            raise LocalProtocolError(f"bad region {window_id} of {size_bytes} bytes")
        if device_offset < 0 or device_length < 0 or device_offset + device_length > size_bytes:
            raise LocalProtocolError(
                f"device range {device_offset}+{device_length} outside {size_bytes} bytes"
            )
        self.window_id = window_id
        self.size_bytes = size_bytes
        self.device_offset = device_offset
        self.device_length = device_length
        self.data = bytearray(size_bytes)
        self.driver = RegionView(self, device_side=False)
        self.device = RegionView(self, device_side=True)

    def __repr__(self) -> str:
        return (
            f"<Region {self.window_id} {self.size_bytes}B "
            f"device=[{self.device_offset},+{self.device_length})>"
        )


class RegionView:
    """One side's ``Memory`` view of a ``Region``."""

    def __init__(self, region: Region, *, device_side: bool) -> None:
        self._region = region
        self._device_side = device_side

    @property
    def window_id(self) -> int:
        return self._region.window_id

    @property
    def size_bytes(self) -> int:
        return self._region.size_bytes

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self._region.size_bytes:
            raise LocalProtocolError(f"read {offset}+{size} outside {self._region!r}")
        return bytes(self._region.data[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        if not self.writable(offset, len(data)):
            side = "device" if self._device_side else "driver"
            raise LocalProtocolError(
                f"the {side} may not write {offset}+{len(data)} in {self._region!r}"
            )
        self._region.data[offset : offset + len(data)] = data

    def writable(self, offset: int, length: int) -> bool:
        r = self._region
        if offset < 0 or length < 0 or offset + length > r.size_bytes:
            return False
        start, end = r.device_offset, r.device_offset + r.device_length
        if self._device_side:
            return start <= offset and offset + length <= end
        return length == 0 or offset + length <= start or offset >= end

    def flush(self) -> None:
        """Nothing to do: both views share the bytes."""


class WindowMemory:
    """``Memory`` over one replica of a bus ``Window``: writes go out on ``flush()``."""

    def __init__(self, window: Window) -> None:
        self.window = window

    @property
    def window_id(self) -> int:
        return self.window.window_id

    @property
    def size_bytes(self) -> int:
        return self.window.size_bytes

    def read(self, offset: int, size: int) -> bytes:
        return self.window.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        """Write the bytes of ``data`` that differ from the replica (see the module docstring)."""
        window = self.window
        size = len(data)
        if not window.writable_by(window.side, offset, size):
            window.write(offset, data)  # refused there, with the reason
        current = window.read(offset, size)
        if current == data:
            return
        if size > _TRIM_BYTES:  # a buffer's contents: rarely worth the scan
            window.write(offset, data)
            return
        first = 0
        while current[first] == data[first]:
            first += 1
        last = size
        while current[last - 1] == data[last - 1]:
            last -= 1
        window.write(offset + first, data[first:last])

    def writable(self, offset: int, length: int) -> bool:
        return self.window.writable_by(self.window.side, offset, length)

    def flush(self) -> None:
        self.window.flush()


class MemoryMap:
    """The windows one side can address, by window id."""

    def __init__(self, memories: Iterable[Memory] = ()) -> None:
        self._memories: dict[int, Memory] = {}
        for memory in memories:
            self.add(memory)

    def add(self, memory: Memory) -> None:
        if memory.window_id in self._memories:
            raise LocalProtocolError(f"window {memory.window_id} is already mapped")
        self._memories[memory.window_id] = memory

    def remove(self, window_id: int) -> Memory | None:
        return self._memories.pop(window_id, None)

    def get(self, window_id: int) -> Memory | None:
        return self._memories.get(window_id)

    def __iter__(self) -> Iterator[Memory]:
        return iter(list(self._memories.values()))

    def __len__(self) -> int:
        return len(self._memories)

    def contains(self, addr: int, length: int, *, write: bool = False) -> bool:
        """True if ``[addr, addr + length)`` is inside one mapped window (and ours to write)."""
        window_id, offset = split_addr(addr)
        memory = self._memories.get(window_id)
        if memory is None or length < 0 or offset + length > memory.size_bytes:
            return False
        return not write or memory.writable(offset, length)

    def resolve(self, addr: int, length: int, *, write: bool = False) -> tuple[Memory, int]:
        """The window and offset of ``[addr, addr + length)``; refuses what is outside."""
        if not self.contains(addr, length, write=write):
            what = "write" if write else "access"
            raise LocalProtocolError(f"cannot {what} {length} bytes at {addr:#x}")
        window_id, offset = split_addr(addr)
        return self._memories[window_id], offset

    def read(self, addr: int, size: int) -> bytes:
        memory, offset = self.resolve(addr, size)
        return memory.read(offset, size)

    def write(self, addr: int, data: bytes) -> None:
        memory, offset = self.resolve(addr, len(data), write=True)
        memory.write(offset, data)

    def barrier(self, *, last: Iterable[Memory] = ()) -> None:
        """Write barrier over every window: all earlier writes become visible to the peer.

        The windows in ``last`` are flushed after all the others, so the peer
        sees what they expose (a ring index) no earlier than the rest.
        """
        late = {id(memory): memory for memory in last}
        for memory in self._memories.values():
            if id(memory) not in late:
                memory.flush()
        for memory in late.values():
            memory.flush()
