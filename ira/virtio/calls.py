"""The DEVCALL interface of a ``virtio`` bus device, as the transport uses it.

The function numbers, the payload of every request and reply, the event
window and the address encoding are specified by the construct schemas of
``ira.wire.virtio`` (generated into docs/PROTOCOL.md, "virtio over the bus");
this module gathers what the board side (``ira.virtio.transport``) and the
host side (``ira.virtio.host``) use of it.

=====================  =====================  ======================
function               request                reply
=====================  =====================  ======================
DEVICE_FEATURES   1    ``DeviceFeatures``     ``FeaturesReply``
DRIVER_FEATURES   2    ``DriverFeatures``     ``FeaturesReply``
SET_DRIVER_FEAT.  3    ``SetDriverFeatures``  ``EmptyReply``
STATUS            4    ``GetStatus``          ``StatusReply``
SET_STATUS        5    ``SetStatus``          ``StatusReply``
CONFIG_READ       6    ``ConfigRead``         ``ConfigReadReply``
CONFIG_WRITE      7    ``ConfigWrite``        ``GenerationReply``
GENERATION        8    ``GetGeneration``      ``GenerationReply``
QUEUE_COUNT       9    ``QueueCount``         ``QueueCountReply``
QUEUE_MAX         10   ``QueueMax``           ``QueueMaxReply``
QUEUE_SET         11   ``QueueSet``           ``EmptyReply``
QUEUE_ENABLE      12   ``QueueEnable``        ``EmptyReply``
RESET             13   ``Reset``              ``EmptyReply``
=====================  =====================  ======================

Addresses are ``window_id << 32 | offset`` (``ira.virtio.memory``); the
queue's notifications, both ways, are the signal of its notify window.
``CONFIG_READ`` returns the generation with the bytes, read at once, so one
call is consistent; a driver reading across calls compares generations
(§2.5.1).  The optional *event window* is attached as ``shm_id``
``EVENT_SHM`` with a signal; the device keeps an ``EventRecord`` (config
generation, device status) in its first ``EVENT_BYTES`` bytes and notifies
the signal on a configuration change or when it sets DEVICE_NEEDS_RESET
(§2.1.2).
"""

from __future__ import annotations

from ira.wire.virtio import (
    DEVICE_ID_ATTR,
    EVENT_BYTES,
    EVENT_SHM,
    MAX_QUEUE_SIZE,
    VIRTIO_TYPE,
    ConfigRead,
    ConfigReadReply,
    ConfigWrite,
    DeviceFeatures,
    DriverFeatures,
    EmptyReply,
    EventRecord,
    FeaturesReply,
    GenerationReply,
    GetGeneration,
    GetStatus,
    QueueCount,
    QueueCountReply,
    QueueEnable,
    QueueMax,
    QueueMaxReply,
    QueueSet,
    Reply,
    Request,
    Reset,
    SetDriverFeatures,
    SetStatus,
    StatusReply,
    VirtioFunc,
    decode_event,
    decode_reply,
    decode_request,
    encode,
)

__all__ = [
    "DEVICE_ID_ATTR",
    "EVENT_BYTES",
    "EVENT_SHM",
    "MAX_QUEUE_SIZE",
    "VIRTIO_TYPE",
    "ConfigRead",
    "ConfigReadReply",
    "ConfigWrite",
    "DeviceFeatures",
    "DriverFeatures",
    "EmptyReply",
    "EventRecord",
    "FeaturesReply",
    "GenerationReply",
    "GetGeneration",
    "GetStatus",
    "QueueCount",
    "QueueCountReply",
    "QueueEnable",
    "QueueMax",
    "QueueMaxReply",
    "QueueSet",
    "Reply",
    "Request",
    "Reset",
    "SetDriverFeatures",
    "SetStatus",
    "StatusReply",
    "VirtioFunc",
    "decode_event",
    "decode_reply",
    "decode_request",
    "encode",
]
