"""virtio over the bus: the DEVCALL payloads of a ``virtio`` device, and its event window.

A virtio device on the board is a bus device of type ``virtio`` whose
transport registers are DEVCALLs (the common configuration of
virtio over PCI, virtio 1.2 §4.1.4.3, turned into calls).  The function number
travels in ``DEVCALL.func``; the payloads below travel in ``DEVCALL.payload``
and ``DEVCALL_REPLY.payload``.  Each function is defined once, by its entry in
``FUNCTIONS``: one request schema and one reply schema, both little-endian
and of fixed size except where data follows to the end of the payload; an
empty payload is the empty ``Struct``.

``decode_request(func, payload)`` and ``decode_reply(func, payload)`` return
frozen dataclasses (or raise ``RemoteProtocolError``); ``encode(msg)`` does
the reverse (or raises ``LocalProtocolError``).  The wire rejects what it
cannot represent: a payload of the wrong size, a function it does not know,
status bits the spec reserves.  Well-formed requests that the device's state
does not allow, or that name a queue it lacks, are the device's business
(``ira.virtio.transport``), which answers them with a negative status.

The event window (``EVENT_SHM``) carries ``EventRecord``: the device's
configuration generation and status, so that the host learns about a
configuration change or DEVICE_NEEDS_RESET without polling.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from construct import (
    Bytes,
    Check,
    ConstructError,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Struct,
    Terminated,
    len_,
    this,
)

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.wire import Limit, MessageSpec, WireSpec

# ---------------------------------------------------------------------------
# Constants and limits
# ---------------------------------------------------------------------------

#: the bus device type every virtio device announces in DEVADD
VIRTIO_TYPE = "virtio"
#: the DEVADD attribute carrying the virtio device id (virtio 1.2 §5: 1 net, 3 console, 4 entropy)
DEVICE_ID_ATTR = "virtio_device_id"
#: ``shm_id`` of the event window
EVENT_SHM = 0
#: bytes of the event window written by the device (one ``EventRecord``)
EVENT_BYTES = 8
#: feature selectors the transport answers; bits past 32 * FEATURE_WORDS are 0
FEATURE_WORDS = 4
#: the largest queue size (virtio 1.2 §2.7)
MAX_QUEUE_SIZE = 32768
#: low bits of an address holding the offset in its window; the window id is above them
ADDR_OFFSET_BITS = 32


class VirtioFunc(enum.IntEnum):
    """``DEVCALL.func`` of a ``virtio`` device."""

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


class DeviceStatus(enum.IntFlag):
    """The device status field (virtio 1.2 §2.1)."""

    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 64
    FAILED = 128


#: status bits the spec does not define (a payload with any of them is refused)
_STATUS_RESERVED = 0xFF & ~int(
    DeviceStatus.ACKNOWLEDGE
    | DeviceStatus.DRIVER
    | DeviceStatus.DRIVER_OK
    | DeviceStatus.FEATURES_OK
    | DeviceStatus.DEVICE_NEEDS_RESET
    | DeviceStatus.FAILED
)

# ---------------------------------------------------------------------------
# Messages (decoded form)
# ---------------------------------------------------------------------------

# Requests: one class per function, named after it.


@dataclass(frozen=True, slots=True)
class DeviceFeatures:
    """DEVICE_FEATURES: read the device's feature bits ``32*select .. 32*select+31``."""

    func: ClassVar[VirtioFunc] = VirtioFunc.DEVICE_FEATURES
    select: int


@dataclass(frozen=True, slots=True)
class DriverFeatures:
    """DRIVER_FEATURES: read back the driver feature bits written for ``select``."""

    func: ClassVar[VirtioFunc] = VirtioFunc.DRIVER_FEATURES
    select: int


@dataclass(frozen=True, slots=True)
class SetDriverFeatures:
    """SET_DRIVER_FEATURES: write the driver feature bits of ``select``."""

    func: ClassVar[VirtioFunc] = VirtioFunc.SET_DRIVER_FEATURES
    select: int
    bits: int


@dataclass(frozen=True, slots=True)
class GetStatus:
    """STATUS: read the device status."""

    func: ClassVar[VirtioFunc] = VirtioFunc.STATUS


@dataclass(frozen=True, slots=True)
class SetStatus:
    """SET_STATUS: write the device status (0 resets, virtio 1.2 §2.4)."""

    func: ClassVar[VirtioFunc] = VirtioFunc.SET_STATUS
    status: int


@dataclass(frozen=True, slots=True)
class ConfigRead:
    """CONFIG_READ: read ``length`` bytes of configuration space at ``offset``."""

    func: ClassVar[VirtioFunc] = VirtioFunc.CONFIG_READ
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ConfigWrite:
    """CONFIG_WRITE: write ``data`` to configuration space at ``offset``."""

    func: ClassVar[VirtioFunc] = VirtioFunc.CONFIG_WRITE
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class GetGeneration:
    """GENERATION: read the configuration generation."""

    func: ClassVar[VirtioFunc] = VirtioFunc.GENERATION


@dataclass(frozen=True, slots=True)
class QueueCount:
    """QUEUE_COUNT: how many queues the device has."""

    func: ClassVar[VirtioFunc] = VirtioFunc.QUEUE_COUNT


@dataclass(frozen=True, slots=True)
class QueueMax:
    """QUEUE_MAX: the largest size of queue ``queue`` (0: no such queue)."""

    func: ClassVar[VirtioFunc] = VirtioFunc.QUEUE_MAX
    queue: int


@dataclass(frozen=True, slots=True)
class QueueSet:
    """QUEUE_SET: where queue ``queue`` lives and which window's signal notifies it.

    ``desc``, ``avail`` and ``used`` are addresses: ``window_id << 32 | offset``.
    """

    func: ClassVar[VirtioFunc] = VirtioFunc.QUEUE_SET
    queue: int
    size: int
    notify_window: int
    desc: int
    avail: int
    used: int


@dataclass(frozen=True, slots=True)
class QueueEnable:
    """QUEUE_ENABLE: enable queue ``queue`` as set up."""

    func: ClassVar[VirtioFunc] = VirtioFunc.QUEUE_ENABLE
    queue: int


@dataclass(frozen=True, slots=True)
class Reset:
    """RESET: reset the device (virtio 1.2 §2.4)."""

    func: ClassVar[VirtioFunc] = VirtioFunc.RESET


Request = (
    DeviceFeatures
    | DriverFeatures
    | SetDriverFeatures
    | GetStatus
    | SetStatus
    | ConfigRead
    | ConfigWrite
    | GetGeneration
    | QueueCount
    | QueueMax
    | QueueSet
    | QueueEnable
    | Reset
)
"""Every request payload."""

# Replies: one class per shape.


@dataclass(frozen=True, slots=True)
class FeaturesReply:
    """Reply to DEVICE_FEATURES and DRIVER_FEATURES: 32 feature bits."""

    bits: int


@dataclass(frozen=True, slots=True)
class StatusReply:
    """Reply to STATUS and SET_STATUS: the device status (after the write)."""

    status: int


@dataclass(frozen=True, slots=True)
class ConfigReadReply:
    """Reply to CONFIG_READ: the generation and the bytes, read at once."""

    generation: int
    data: bytes


@dataclass(frozen=True, slots=True)
class GenerationReply:
    """Reply to CONFIG_WRITE and GENERATION: the configuration generation."""

    generation: int


@dataclass(frozen=True, slots=True)
class QueueCountReply:
    """Reply to QUEUE_COUNT."""

    count: int


@dataclass(frozen=True, slots=True)
class QueueMaxReply:
    """Reply to QUEUE_MAX: the largest queue size, 0 if there is no such queue."""

    size: int


@dataclass(frozen=True, slots=True)
class EmptyReply:
    """The empty reply of SET_DRIVER_FEATURES, QUEUE_SET, QUEUE_ENABLE and RESET."""


Reply = (
    FeaturesReply
    | StatusReply
    | ConfigReadReply
    | GenerationReply
    | QueueCountReply
    | QueueMaxReply
    | EmptyReply
)
"""Every reply payload."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """The device's bytes of the event window."""

    generation: int
    status: int


Message = Request | Reply | EventRecord
"""Everything this module encodes."""

# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------

_SELECT = "select" / Int32ul * "feature word: bits 32*select .. 32*select+31 (0 past FEATURE_WORDS)"
_QUEUE = "queue" / Int16ul * "queue index, from 0"
_GENERATION = "generation" / Int32ul * "configuration generation (moves on every change, mod 2**32)"
_STATUS = "status" / Int8ul * "DeviceStatus bits; 0x10 and 0x20 are reserved and must be 0"
_STATUS_OK = Check((this.status & _STATUS_RESERVED) == 0)

EMPTY = Struct(Terminated)
"""An empty payload."""

FEATURE_SELECT = Struct(_SELECT, Terminated)
FEATURE_BITS = Struct(
    "bits" / Int32ul * "the 32 feature bits of the selected word",
    Terminated,
)
DRIVER_FEATURE_WORD = Struct(
    _SELECT,
    "bits" / Int32ul * "the driver's feature bits of that word (a subset of the offer)",
    Terminated,
)
STATUS_BYTE = Struct(_STATUS, _STATUS_OK, Terminated)
CONFIG_RANGE = Struct(
    "offset" / Int32ul * "first byte of configuration space",
    "length" / Int32ul * "bytes to read",
    Terminated,
)
CONFIG_DATA = Struct(
    _GENERATION,
    "data" / GreedyBytes * "the configuration bytes, to the end of the payload",
)
CONFIG_WRITE = Struct(
    "offset" / Int32ul * "first byte of configuration space",
    "data" / GreedyBytes * "the bytes to write, to the end of the payload",
)
GENERATION = Struct(_GENERATION, Terminated)
QUEUE_INDEX = Struct(_QUEUE, Terminated)
QUEUE_TOTAL = Struct("count" / Int16ul * "number of queues", Terminated)
QUEUE_SIZE = Struct(
    "size" / Int16ul * "largest size of the queue (a power of two), 0: no such queue",
    Terminated,
)
QUEUE_SETUP = Struct(
    _QUEUE,
    "size" / Int16ul * "queue size: a power of two, at most what QUEUE_MAX said",
    "notify_window" / Int32ul * "window whose signal carries this queue's notifications, both ways",
    "desc" / Int64ul * "address of the descriptor table: window_id << 32 | offset",
    "avail" / Int64ul * "address of the available (driver) ring: window_id << 32 | offset",
    "used" / Int64ul * "address of the used (device) ring: window_id << 32 | offset",
    Terminated,
)
EVENT_RECORD = Struct(
    _GENERATION,
    _STATUS,
    _STATUS_OK,
    "reserved" / Bytes(3) * "written as 0; ignored",
    Check(len_(this.reserved) == 3),
    Terminated,
)
"""The first ``EVENT_BYTES`` bytes of the event window."""


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """One function of a virtio device, whole: its request and its reply.

    ``FUNCTIONS`` holds one per function; the request and reply schemas and classes
    by function, the codecs and the document are derived from it.
    """

    func: VirtioFunc
    request: type[Any]
    #: construct ``Struct`` of the request payload (``EMPTY``: no payload)
    request_schema: Any
    reply: type[Any]
    #: construct ``Struct`` of the reply payload of a status >= 0 (``EMPTY``: none)
    reply_schema: Any
    #: what the request asks and what the device does (for a request with a payload)
    meaning: str = ""
    request_example: object = None
    reply_meaning: str = ""
    reply_example: object = None


FUNCTIONS: tuple[FunctionDef, ...] = (
    FunctionDef(
        VirtioFunc.DEVICE_FEATURES,
        DeviceFeatures,
        FEATURE_SELECT,
        FeaturesReply,
        FEATURE_BITS,
        "Read 32 of the device's feature bits (selector 1: bits 32-63, VERSION_1 is bit 32).",
        DeviceFeatures(select=1),
        "32 offered feature bits (selector 1 of a virtio 1.x device: VERSION_1).",
        FeaturesReply(bits=1),
    ),
    FunctionDef(
        VirtioFunc.DRIVER_FEATURES,
        DriverFeatures,
        FEATURE_SELECT,
        FeaturesReply,
        FEATURE_BITS,
        "Read back the driver feature bits of one selector, as written.",
        DriverFeatures(select=0),
        "32 driver feature bits (INDIRECT_DESC and EVENT_IDX).",
        FeaturesReply(bits=0x30000000),
    ),
    FunctionDef(
        VirtioFunc.SET_DRIVER_FEATURES,
        SetDriverFeatures,
        DRIVER_FEATURE_WORD,
        EmptyReply,
        EMPTY,
        "Write the driver's accepted feature bits of one selector. Only while DRIVER is set and "
        "FEATURES_OK is not (else EPERM); a selector past FEATURE_WORDS takes only 0.",
        SetDriverFeatures(select=0, bits=0x30000000),
    ),
    FunctionDef(
        VirtioFunc.STATUS,
        GetStatus,
        EMPTY,
        StatusReply,
        STATUS_BYTE,
        reply_meaning="The device status.",
        reply_example=StatusReply(status=int(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)),
    ),
    FunctionDef(
        VirtioFunc.SET_STATUS,
        SetStatus,
        STATUS_BYTE,
        StatusReply,
        STATUS_BYTE,
        "Write the device status (virtio 1.2 §2.1, §3.1.1): bits are set in order and never "
        "cleared; 0 resets. A write the status rules forbid is EINVAL. Writing FEATURES_OK "
        "makes the device check the driver features: if it refuses them FEATURES_OK stays "
        "clear, which the driver sees in the reply.",
        SetStatus(status=int(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)),
        "The device status re-read after the write (also with EINVAL, when it was refused).",
        StatusReply(
            status=int(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK)
        ),
    ),
    FunctionDef(
        VirtioFunc.CONFIG_READ,
        ConfigRead,
        CONFIG_RANGE,
        ConfigReadReply,
        CONFIG_DATA,
        "Read configuration space. Past its end: ERANGE.",
        ConfigRead(offset=0, length=6),
        "The generation and the bytes, read at once, so one call is consistent; a driver "
        "reading across calls compares generations (virtio 1.2 §2.5.1).",
        ConfigReadReply(generation=2, data=b"\x02\x00\x00\x00\x00\x01"),
    ),
    FunctionDef(
        VirtioFunc.CONFIG_WRITE,
        ConfigWrite,
        CONFIG_WRITE,
        GenerationReply,
        GENERATION,
        "Write configuration space (the device decides; read-only spaces answer EPERM).",
        ConfigWrite(offset=4, data=b"\x01\x00"),
        "The generation after the write.",
        GenerationReply(generation=3),
    ),
    FunctionDef(
        VirtioFunc.GENERATION,
        GetGeneration,
        EMPTY,
        GenerationReply,
        GENERATION,
        reply_meaning="The configuration generation.",
        reply_example=GenerationReply(generation=3),
    ),
    FunctionDef(
        VirtioFunc.QUEUE_COUNT,
        QueueCount,
        EMPTY,
        QueueCountReply,
        QUEUE_TOTAL,
        reply_meaning="The number of queues.",
        reply_example=QueueCountReply(count=2),
    ),
    FunctionDef(
        VirtioFunc.QUEUE_MAX,
        QueueMax,
        QUEUE_INDEX,
        QueueMaxReply,
        QUEUE_SIZE,
        "The largest size of a queue.",
        QueueMax(queue=0),
        "The largest size of the queue, 0 if the device has no such queue.",
        QueueMaxReply(size=64),
    ),
    FunctionDef(
        VirtioFunc.QUEUE_SET,
        QueueSet,
        QUEUE_SETUP,
        EmptyReply,
        EMPTY,
        "Set a queue up: its size and the addresses of its three parts. Only after "
        "FEATURES_OK, before DRIVER_OK, and while the queue is not enabled (else EPERM); the "
        "notify window must be attached to the device with a signal (else EINVAL). The "
        "example puts a queue of 16 in window 3 (descriptors at 0, available ring at 256, used "
        "ring at 296).",
        QueueSet(
            queue=0,
            size=16,
            notify_window=3,
            desc=3 << ADDR_OFFSET_BITS | 0,
            avail=3 << ADDR_OFFSET_BITS | 256,
            used=3 << ADDR_OFFSET_BITS | 296,
        ),
    ),
    FunctionDef(
        VirtioFunc.QUEUE_ENABLE,
        QueueEnable,
        QUEUE_INDEX,
        EmptyReply,
        EMPTY,
        "Enable a queue that was set up; the device checks the layout (alignment, bounds, "
        "writer of each part) and answers EINVAL if it does not hold.",
        QueueEnable(queue=0),
    ),
    FunctionDef(VirtioFunc.RESET, Reset, EMPTY, EmptyReply, EMPTY),
)
"""Every function of a virtio device, in function order: the definition the rest derives from."""

#: the request schema of each function
REQUESTS: dict[VirtioFunc, Any] = {d.func: d.request_schema for d in FUNCTIONS}
#: the reply schema of each function (of a reply with status >= 0)
REPLIES: dict[VirtioFunc, Any] = {d.func: d.reply_schema for d in FUNCTIONS}
_REQUEST_CLASSES: dict[VirtioFunc, type[Any]] = {d.func: d.request for d in FUNCTIONS}
_REPLY_CLASSES: dict[VirtioFunc, type[Any]] = {d.func: d.reply for d in FUNCTIONS}

#: each schema, compiled once; what ``encode``/``decode_*`` use (parity is tested)
_COMPILED: dict[int, Any] = {
    id(schema): schema.compile() for schema in (*REQUESTS.values(), *REPLIES.values(), EVENT_RECORD)
}

#: the schema of each message class
_SCHEMA_OF: dict[type[Any], Any] = {
    **{_REQUEST_CLASSES[f]: REQUESTS[f] for f in VirtioFunc},
    **{_REPLY_CLASSES[f]: REPLIES[f] for f in VirtioFunc},
    EventRecord: EVENT_RECORD,
}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _SCHEMA_OF
}

# The compiled parser reports short reads through ``struct.error``.
_PARSE_ERRORS = (ConstructError, struct.error)
_BUILD_ERRORS = (ConstructError, struct.error, KeyError, TypeError)


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _func(func: int) -> VirtioFunc:
    try:
        return VirtioFunc(func)
    except ValueError:
        raise RemoteProtocolError(f"no virtio function {func}") from None


def _parse(schema: Any, cls: type[Any], data: bytes, what: str, *, compiled: bool) -> Any:
    parser = _COMPILED[id(schema)] if compiled else schema
    try:
        parsed = parser.parse(bytes(data))
    except _PARSE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed {what}: {_why(exc)}") from exc
    return cls(**{name: parsed[name] for name in _FIELDS[cls]})


def encode(msg: Message) -> bytes:
    """The payload of ``msg``; ``LocalProtocolError`` if a field is out of range."""
    schema = _SCHEMA_OF.get(type(msg))
    if schema is None:
        raise LocalProtocolError(f"not a virtio payload: {type(msg).__name__}")
    values = {name: getattr(msg, name) for name in _FIELDS[type(msg)]}
    if isinstance(msg, EventRecord):
        values["reserved"] = bytes(3)
    try:
        data: bytes = _COMPILED[id(schema)].build(values)
    except _BUILD_ERRORS as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {_why(exc)}") from exc
    return data


def decode_request(func: int, payload: bytes, *, compiled: bool = True) -> Request:
    """The request ``payload`` of function ``func``; ``RemoteProtocolError`` if it is not one."""
    f = _func(func)
    request: Request = _parse(
        REQUESTS[f], _REQUEST_CLASSES[f], payload, f"{f.name} request", compiled=compiled
    )
    return request


def decode_reply(func: int, payload: bytes, *, compiled: bool = True) -> Reply:
    """The reply ``payload`` of function ``func``; ``RemoteProtocolError`` if it is not one."""
    f = _func(func)
    reply: Reply = _parse(
        REPLIES[f], _REPLY_CLASSES[f], payload, f"{f.name} reply", compiled=compiled
    )
    return reply


def decode_event(data: bytes, *, compiled: bool = True) -> EventRecord:
    """The ``EVENT_BYTES`` bytes of the event window; ``RemoteProtocolError`` if malformed."""
    record: EventRecord = _parse(EVENT_RECORD, EventRecord, data, "event record", compiled=compiled)
    return record


def make_addr(window_id: int, offset: int) -> int:
    """The address of ``offset`` in window ``window_id`` (both unsigned 32-bit)."""
    if not 0 <= window_id <= 0xFFFFFFFF or not 0 <= offset <= 0xFFFFFFFF:
        raise LocalProtocolError(f"window {window_id} offset {offset} does not fit an address")
    return window_id << ADDR_OFFSET_BITS | offset


def split_addr(addr: int) -> tuple[int, int]:
    """``(window_id, offset)`` of an address."""
    return addr >> ADDR_OFFSET_BITS & 0xFFFFFFFF, addr & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Documentation (ira.wire.gendoc)
# ---------------------------------------------------------------------------

_HOST = "host → board"
_BOARD = "board → host"


def _messages() -> tuple[MessageSpec, ...]:
    specs = [
        MessageSpec(
            name="EVENT_WINDOW",
            tag=0,
            schema=EVENT_RECORD,
            meaning="Not a call: the device's bytes of the event window (shm_id EVENT_SHM), "
            "rewritten and flushed by the device on every status change and configuration "
            "change. See “The event window” below.",
            example=EventRecord(generation=1, status=int(DeviceStatus.DEVICE_NEEDS_RESET | 15)),
            direction=_BOARD,
            channel="window (event window, bytes 0..7)",
        )
    ]
    for d in FUNCTIONS:
        if d.request_example is not None:
            specs.append(
                MessageSpec(
                    name=d.func.name,
                    tag=int(d.func),
                    schema=d.request_schema,
                    meaning=d.meaning,
                    example=d.request_example,
                    direction=_HOST,
                    channel="DEVCALL payload",
                )
            )
        if d.reply_example is not None:
            specs.append(
                MessageSpec(
                    name=f"{d.func.name}_REPLY",
                    tag=int(d.func),
                    schema=d.reply_schema,
                    meaning=d.reply_meaning,
                    example=d.reply_example,
                    direction=_BOARD,
                    channel="DEVCALL_REPLY payload",
                )
            )
    return tuple(specs)


def _function_table() -> str:
    def cell(func: VirtioFunc, schemas: dict[VirtioFunc, Any], suffix: str) -> str:
        if schemas[func] is EMPTY:
            return "empty"
        name = f"{func.name}{suffix}"
        anchor = f"{name.lower()}-tag-{int(func):#04x}"
        return f"[{name}](#{anchor})"

    rows = ["| func | name | request payload | reply payload |", "|---:|---|---|---|"]
    for func in VirtioFunc:
        rows.append(
            f"| {int(func)} | {func.name} | {cell(func, REQUESTS, '')} "
            f"| {cell(func, REPLIES, '_REPLY')} |"
        )
    return "\n".join(rows)


_SUMMARY = f"""\
A virtio device on a board is a bus device of type `{VIRTIO_TYPE}` whose DEVADD carries the
virtio device id (virtio 1.2 §5: 1 network, 3 console, 4 entropy...) in the attribute
`{DEVICE_ID_ATTR}`. Its transport registers (the common configuration of virtio over PCI,
§4.1.4.3) are DEVCALLs: `DEVCALL.func` names the function and the payloads below travel in
`DEVCALL.payload` and `DEVCALL_REPLY.payload`. Each heading's *tag* is the function number
(0x00: not a call). All integers are little-endian; a payload is exactly its fields (data, where
there is some, runs to the end of the payload).

A payload of the wrong size or with reserved status bits is answered EINVAL; a call the device's
state does not allow, EPERM; a queue the device does not have or configuration bytes past the
end, ERANGE; an unknown function, ENOSYS (statuses of the bus protocol). A reply with a negative
status has an empty payload, except SET_STATUS, whose reply always carries the status.

{_function_table()}
"""

_NOTES = """\
### Addresses

There is no guest-physical memory on a serial or USB link: memory is a set of shared windows
(see the bus protocol), each known to both sides by its window id. Every 64-bit address — a
descriptor's `addr` (virtio 1.2 §2.7.5) and the `desc`, `avail` and `used` of QUEUE_SET — names a
window and an offset in it:

```
addr = window_id << 32 | offset          (both unsigned 32-bit)
```

Little-endian, so the eight bytes of an address are the offset (bytes 0-3) then the window id
(bytes 4-7): `make_addr(3, 0x100)` is `00 01 00 00 03 00 00 00`. Never a host pointer. Each side
resolves an address in the windows attached to the device and checks it before use: the window
must be attached, `[offset, offset + len)` must lie inside it, and a buffer the device writes
(and the used ring) must lie in the window's device range. A queue's parts may share one window
or use three; the split layout is that of virtio 1.2 §2.7 (16-byte descriptors `le64 addr, le32
len, le16 flags, le16 next`; available ring `flags, idx, ring[n], used_event`; used ring
`flags, idx, ring[n] of {le32 id, le32 len}, avail_event`), at alignments 16, 2 and 4.

### The event window

The host attaches a window of at least `EVENT_BYTES` bytes with `shm_id` `EVENT_SHM` and a
signal; its device range must cover bytes `[0, EVENT_BYTES)` (else the attach is refused with
EINVAL). The device keeps an EVENT_WINDOW
record there: its configuration generation and its device status. It rewrites the record on
every status change; on a configuration change, or when it sets DEVICE_NEEDS_RESET (§2.1.2), it
also notifies the window's signal, which is the host's configuration-change interrupt. A host
reads the record when the signal arrives: a new generation means re-read the configuration; the
DEVICE_NEEDS_RESET bit means reset the device. Without an event window the host polls
GENERATION and STATUS.

### Queues and notifications

The driver's available-buffer notifications and the device's used-buffer notifications are bus
SIGNALs on the signal of the queue's `notify_window` (usually the window holding its rings).
Window updates flushed before a SIGNAL arrive before it, so a notification never overtakes the
ring entries it announces. The rings keep VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY and
VIRTIO_F_EVENT_IDX exactly; over a link the bus signal also coalesces (at most one SIGNAL in
flight per signal).

From bus version 2 on a device also runs a queue when the driver's flush of the window holding
the queue's available ring has ended (its last WINDOW update, without MORE, is applied), unless
the device has disabled the queue's notifications; a device that enables them again MUST look
at the ring itself (virtio 1.2 §2.7.10's re-check), as it would with a notification. From bus
version 4 on the driver therefore sends no SIGNAL after publishing available buffers: the end
of the flush is the notification, and the SIGNAL and the SIGNAL_STATE that answered it no longer
cross per publish. Used-buffer notifications are unchanged.

### Initialisation (virtio 1.2 §3.1.1)

```
host                                             board (virtio device)
DEVOPEN                                 ---->    (a second open: EBUSY; DEVCLOSE resets)
SET_STATUS 0                            ---->    reset; reply 0x00
SET_STATUS ACKNOWLEDGE, then +DRIVER    ---->
DEVICE_FEATURES select 0..3             ---->    the offer, 32 bits at a time
    (host: accepted = offer & policy & driver's support)
SET_DRIVER_FEATURES select 0..3         ---->
SET_STATUS +FEATURES_OK                 ---->    reply: FEATURES_OK still set, or refused
SHM_ATTACH event window (shm 0)         ---->
per queue: QUEUE_MAX, SHM_ATTACH ring window (with signal), QUEUE_SET, QUEUE_ENABLE
SHM_ATTACH data windows
SET_STATUS +DRIVER_OK                   ---->    the device is live; buffers added before now
                                                 are used now
```
"""

SPEC = WireSpec(
    title="virtio over the bus",
    summary=_SUMMARY,
    encode=encode,
    messages=_messages(),
    limits=(
        Limit("EVENT_SHM", EVENT_SHM, "shm_id of the event window"),
        Limit("EVENT_BYTES", EVENT_BYTES, "bytes of the event window the device writes"),
        Limit("FEATURE_WORDS", FEATURE_WORDS, "feature selectors answered (32 bits each)"),
        Limit("MAX_QUEUE_SIZE", MAX_QUEUE_SIZE, "largest queue size (a power of two)"),
        Limit("ADDR_OFFSET_BITS", ADDR_OFFSET_BITS, "low bits of an address: the offset"),
    ),
    notes=_NOTES,
)
