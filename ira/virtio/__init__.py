"""virtio over the bus: split virtqueues in shared windows (DESIGN §5).

Sans-I/O.  Modules, one concern each:

``ring``     the split virtqueue's memory layout, flags, ``vring_need_event``, faults
``memory``   windows as memory: descriptor addresses, bounds and writers, barriers
``driver``   ``VirtqueueDriver``: add chains, publish (kick decision), collect used
``device``   ``VirtqueueDevice``: pop checked chains, read/write them, push, publish
"""

from ira.virtio.device import Chain, Segment, VirtqueueDevice
from ira.virtio.driver import Buffer, UsedBuffer, VirtqueueDriver
from ira.virtio.memory import Memory, MemoryMap, Region, WindowMemory, make_addr, split_addr
from ira.virtio.ring import (
    MAX_QUEUE_SIZE,
    Fault,
    QueueAddresses,
    QueueBroken,
    QueueLayout,
    legacy_layout,
    split_layout,
    vring_need_event,
)

__all__ = [
    "MAX_QUEUE_SIZE",
    "Buffer",
    "Chain",
    "Fault",
    "Memory",
    "MemoryMap",
    "QueueAddresses",
    "QueueBroken",
    "QueueLayout",
    "Region",
    "Segment",
    "UsedBuffer",
    "VirtqueueDevice",
    "VirtqueueDriver",
    "WindowMemory",
    "legacy_layout",
    "make_addr",
    "split_addr",
    "split_layout",
    "vring_need_event",
]
