"""virtio over the bus: split virtqueues in shared windows (DESIGN §5).

Sans-I/O.  Modules, one concern each:

``ring``       the split virtqueue's memory layout, flags, ``vring_need_event``, faults
``memory``     windows as memory: descriptor addresses, bounds and writers, barriers
``driver``     ``VirtqueueDriver``: add chains, publish (kick decision), collect used
``device``     ``VirtqueueDevice``: pop checked chains, read/write them, push, publish
``features``   feature bits, device status bits, the host's ``FeaturePolicy``
``status``     the device status state machine (its transition table)
``calls``      the DEVCALL interface of a ``virtio`` bus device
``transport``  ``VirtioDevice``: the board side, base class of virtio device models
``host``       ``VirtioHostDriver``: the host side's bus driver, device reports
``binding``    ``VirtioBinding``: one device bound to one client: state, events, recovery
``initialise`` the §3.1.1 sequence (returns ``Initialised``), config re-read, FAILED
``client``     ``VirtioClient``: what a host-side driver of one device type implements
``steps``      the steps of a binding's DEVCALL sequences and their replies
``runner``     ``SequenceRunner``: runs a sequence of steps over the bus, reply by reply
``recovery``   ``RecoveryPolicy``/``Recovery``: resets in a row, waits, giving up
``entropy``    virtio-rng, device and host driver, proving the transport
"""

from ira.virtio.device import Chain, Segment, VirtqueueDevice
from ira.virtio.driver import Buffer, UsedBuffer, VirtqueueDriver
from ira.virtio.features import DeviceStatus, Feature, FeaturePolicy, Negotiation
from ira.virtio.host import (
    BindingState,
    VirtioBinding,
    VirtioClient,
    VirtioDeviceInfo,
    VirtioHostDriver,
)
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
from ira.virtio.transport import VirtioDevice

__all__ = [
    "MAX_QUEUE_SIZE",
    "BindingState",
    "Buffer",
    "Chain",
    "DeviceStatus",
    "Fault",
    "Feature",
    "FeaturePolicy",
    "Memory",
    "MemoryMap",
    "Negotiation",
    "QueueAddresses",
    "QueueBroken",
    "QueueLayout",
    "Region",
    "Segment",
    "UsedBuffer",
    "VirtioBinding",
    "VirtioClient",
    "VirtioDevice",
    "VirtioDeviceInfo",
    "VirtioHostDriver",
    "VirtqueueDevice",
    "VirtqueueDriver",
    "WindowMemory",
    "legacy_layout",
    "make_addr",
    "split_addr",
    "split_layout",
    "vring_need_event",
]
