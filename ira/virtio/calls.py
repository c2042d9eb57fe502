"""The DEVCALL interface of a ``virtio`` bus device: function numbers and payloads.

This is the transport's register file (the common configuration of virtio
over PCI, §4.1.4.3, turned into calls).  Payloads are little-endian and of
fixed size except where data follows.  A payload of the wrong size, or a
value out of range, is answered EINVAL; a call the device's state does not
allow, EPERM; a queue it does not have or config bytes past the end, ERANGE.

=====================  ==============================  =====================================
function               request                         reply
=====================  ==============================  =====================================
DEVICE_FEATURES   1    u32 select                      u32 feature bits 32*select..+31
DRIVER_FEATURES   2    u32 select                      u32 (what the driver wrote)
SET_DRIVER_FEAT.  3    u32 select, u32 bits            -
STATUS            4    -                               u8 device status
SET_STATUS        5    u8 status (0 resets)            u8 device status, re-read after it
CONFIG_READ       6    u32 offset, u32 length          u32 generation, bytes
CONFIG_WRITE      7    u32 offset, bytes               u32 generation
GENERATION        8    -                               u32 config generation
QUEUE_COUNT       9    -                               u16 number of queues
QUEUE_MAX         10   u16 queue                       u16 largest size (0: no such queue)
QUEUE_SET         11   u16 queue, u16 size,            -
                       u32 notify window,
                       u64 desc, u64 avail, u64 used
QUEUE_ENABLE      12   u16 queue                       -
RESET             13   -                               -
=====================  ==============================  =====================================

Addresses are ``window_id << 32 | offset`` (``ira.virtio.memory``); the
queue's notifications, both ways, are the signal of its notify window.
``CONFIG_READ`` returns the generation with the bytes, read at once, so one
call is consistent; a driver reading across calls compares generations
(§2.5.1).

The optional *event window* is attached as ``shm_id`` ``EVENT_SHM`` with a
signal and its first ``EVENT_BYTES`` bytes the device's: the device keeps
``u32 config generation, u8 device status`` there and notifies the signal
on a configuration change or when it sets DEVICE_NEEDS_RESET (§2.1.2).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ira.errors import RemoteProtocolError

#: the bus device type every virtio device announces
VIRTIO_TYPE = "virtio"
#: the DEVADD attribute carrying the virtio device id (§5: 1 net, 3 console, 4 entropy...)
DEVICE_ID_ATTR = "virtio_device_id"
#: shm_id of the event window
EVENT_SHM = 0
#: bytes of the event window written by the device
EVENT_BYTES = 8


class VirtioFunc(enum.IntEnum):
    DEVICE_FEATURES = 1
    DRIVER_FEATURES = 2
    SET_DRIVER_FEATURES = 3
    STATUS = 4
    SET_STATUS = 5
    CONFIG_READ = 6
    CONFIG_WRITE = 7
    GENERATION = 8
    QUEUE_COUNT = 9
    QUEUE_MAX = 10
    QUEUE_SET = 11
    QUEUE_ENABLE = 12
    RESET = 13


U8 = struct.Struct("<B")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U32_PAIR = struct.Struct("<II")
EVENT = struct.Struct("<IBxxx")
_QUEUE_SET = struct.Struct("<HHIQQQ")


@dataclass(frozen=True, slots=True)
class QueueSetup:
    """QUEUE_SET: where queue ``queue`` lives and which window's signal notifies it."""

    queue: int
    size: int
    notify_window: int
    desc: int
    avail: int
    used: int

    def encode(self) -> bytes:
        return _QUEUE_SET.pack(
            self.queue, self.size, self.notify_window, self.desc, self.avail, self.used
        )

    @classmethod
    def decode(cls, payload: bytes) -> QueueSetup:
        return cls(*unpack(_QUEUE_SET, payload))


def unpack(codec: struct.Struct, payload: bytes) -> tuple[int, ...]:
    """Decode a fixed-size payload; a wrong size is the peer's error."""
    if len(payload) != codec.size:
        raise RemoteProtocolError(f"payload of {len(payload)} bytes, expected {codec.size}")
    values: tuple[int, ...] = codec.unpack(payload)
    return values


def unpack_prefix(codec: struct.Struct, payload: bytes) -> tuple[tuple[int, ...], bytes]:
    """Decode a fixed-size header followed by data."""
    if len(payload) < codec.size:
        raise RemoteProtocolError(f"payload of {len(payload)} bytes, expected {codec.size}+")
    values: tuple[int, ...] = codec.unpack_from(payload)
    return values, payload[codec.size :]
