"""Bus messages: the constants, limits, tags, statuses and decoded forms.

The definitions ``ira.wire.bus`` builds its schemas, codecs and message table
from (and re-exports): every constant and limit of the bus protocol, the
``Tag`` of every message, the flag and ``Status`` enums, one frozen
dataclass per message, and ``why``, the codecs' wording of an error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# ---------------------------------------------------------------------------
# Constants and limits
# ---------------------------------------------------------------------------

#: first bytes of BUS_HELLO
BUS_MAGIC = b"IRAB"
#: bus protocol versions this implementation speaks (inclusive range)
BUS_VERSION_MIN = 1
BUS_VERSION_MAX = 4
#: the first bus version whose WINDOW messages mark where a flush ends (``WINDOW_MORE``)
BUS_VERSION_FLUSH_ENDS = 2
#: the first bus version in which the host announces its limits (BUS_LIMITS) before the replay
BUS_VERSION_LIMITS = 3
#: the first bus version with WINDOWS (several window updates in one message), in which a
#: virtio driver also sends no SIGNAL for a flush of its available ring (the device runs the
#: queue at the flush's end, as it does since version 2)
BUS_VERSION_WINDOWS = 4
#: most window updates in one WINDOWS message
MAX_BATCH_UPDATES = 16
#: the most devices a host may announce in BUS_LIMITS (``max_devices`` is 1..this)
MAX_HOST_DEVICES = 0xFFFF
#: what a host keeps by default (BUS_LIMITS ``max_devices``): about 2.5 MiB of DEVADDs at most
DEFAULT_MAX_DEVICES = 256

#: longest device type string, UTF-8 bytes
MAX_TYPE_BYTES = 64
#: most attributes in one DEVADD
MAX_ATTRS = 32
#: longest attribute key, UTF-8 bytes
MAX_ATTR_KEY_BYTES = 32
#: longest attribute value, UTF-8 bytes
MAX_ATTR_VALUE_BYTES = 256
#: largest DEVCALL / DEVCALL_REPLY payload
MAX_CALL_PAYLOAD_BYTES = 65536
#: largest shared window
MAX_WINDOW_BYTES = 1 << 20
#: most spans in one WINDOW message
MAX_SPANS = 16
#: largest span in a WINDOW message
MAX_SPAN_BYTES = 4096
#: bytes a span takes before its data (offset, length)
SPAN_HEADER_BYTES = 6
#: WINDOW's ``head``: the span count in bits 0-4, MORE in bit 7, bits 5-6 reserved (0)
WINDOW_COUNT_MASK = 0x1F
WINDOW_MORE = 0x80
WINDOW_HEAD_RESERVED = 0xFF & ~(WINDOW_COUNT_MASK | WINDOW_MORE)


class Tag(enum.IntEnum):
    """The first byte of every bus message."""

    BUS_HELLO = 0x01
    BUS_WELCOME = 0x02
    BUS_SYNCED = 0x03
    BUS_LIMITS = 0x04
    DEVADD = 0x10
    DEVDROP = 0x11
    DEVOPEN = 0x20
    DEVOPEN_REPLY = 0x21
    DEVCLOSE = 0x22
    DEVCALL = 0x30
    DEVCALL_REPLY = 0x31
    SHM_ATTACH = 0x40
    SHM_ATTACH_REPLY = 0x41
    SHM_DETACH = 0x42
    SHM_DETACH_REPLY = 0x43
    WINDOW = 0x50
    WINDOWS = 0x51
    SIGNAL = 0x60
    SIGNAL_STATE = 0x61


class CallFlags(enum.IntFlag):
    """``DEVCALL.flags``."""

    NONE = 0
    #: run the call but send no DEVCALL_REPLY
    NO_REPLY = 1 << 0


class ShmFlags(enum.IntFlag):
    """``SHM_ATTACH.flags``."""

    NONE = 0
    #: give the window a signal (an shm-signal pair, see "Signals")
    SIGNAL = 1 << 0


#: flag bits that must be 0 (a receiver rejects a message with any of them set)
CALL_FLAGS_RESERVED = 0xFFFFFFFF & ~int(CallFlags.NO_REPLY)
SHM_FLAGS_RESERVED = 0xFFFFFFFF & ~int(ShmFlags.SIGNAL)


class Status(enum.IntEnum):
    """Statuses: 0 or positive is success (device-defined), negative is an errno-style error.

    Devices may return any negative errno; these are the ones the bus itself uses.
    """

    OK = 0
    EPERM = -1
    EIO = -5
    EBADF = -9
    EBUSY = -16
    EEXIST = -17
    ENODEV = -19
    EINVAL = -22
    EMFILE = -24
    ENOSPC = -28
    ERANGE = -34
    ENOSYS = -38
    EBADMSG = -74
    EMSGSIZE = -90
    EPROTONOSUPPORT = -93
    EOPNOTSUPP = -95
    ENOTCONN = -107


STATUS_MEANINGS = {
    Status.OK: "success (a positive value is a device-defined success value)",
    Status.EPERM: "not permitted (e.g. the device refuses the request in its current state)",
    Status.EIO: "the device failed to carry the request out",
    Status.EBADF: "unknown handle: never issued in this container, or closed",
    Status.EBUSY: "the device refuses another open",
    Status.EEXIST: "the window id is already attached in this container",
    Status.ENODEV: "unknown device id in this container",
    Status.EINVAL: "invalid argument (size, range, unknown shm id)",
    Status.EMFILE: "too many open handles in this container",
    Status.ENOSPC: "a per-container limit on windows or window bytes is reached",
    Status.ERANGE: "an offset or size falls outside a window",
    Status.ENOSYS: "unknown function number",
    Status.EBADMSG: "the request could not be decoded (truncated, trailing bytes, a length or "
    "flag out of range); its call_id was readable",
    Status.EMSGSIZE: "a reply payload would exceed MAX_CALL_PAYLOAD_BYTES",
    Status.EPROTONOSUPPORT: "no common bus version, or the device ABI version is not supported",
    Status.EOPNOTSUPP: "the device has no shared windows",
    Status.ENOTCONN: "the host has not registered (no BUS_HELLO in this session)",
}

# ---------------------------------------------------------------------------
# Messages (decoded form)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusHello:
    version_min: int
    version_max: int


@dataclass(frozen=True, slots=True)
class BusWelcome:
    status: int
    version: int
    max_call_payload_bytes: int
    max_handles: int
    max_windows: int
    max_window_bytes: int
    max_total_window_bytes: int


@dataclass(frozen=True, slots=True)
class BusSynced:
    device_count: int


@dataclass(frozen=True, slots=True)
class BusLimits:
    """The host's limits (bus v3): what the board may make it hold."""

    max_devices: int


@dataclass(frozen=True, slots=True)
class Attribute:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class DevAdd:
    device_id: int
    version: int
    type: str
    attrs: tuple[Attribute, ...] = ()


@dataclass(frozen=True, slots=True)
class DevDrop:
    device_id: int


@dataclass(frozen=True, slots=True)
class DevOpen:
    call_id: int
    device_id: int
    version: int


@dataclass(frozen=True, slots=True)
class DevOpenReply:
    call_id: int
    status: int
    handle: int


@dataclass(frozen=True, slots=True)
class DevClose:
    handle: int


@dataclass(frozen=True, slots=True)
class DevCall:
    call_id: int
    handle: int
    func: int
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DevCallReply:
    call_id: int
    status: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ShmAttach:
    call_id: int
    handle: int
    shm_id: int
    window: int
    size_bytes: int
    device_offset: int
    device_length: int
    flags: int


@dataclass(frozen=True, slots=True)
class ShmAttachReply:
    call_id: int
    status: int
    signal: int


@dataclass(frozen=True, slots=True)
class ShmDetach:
    call_id: int
    handle: int
    window: int


@dataclass(frozen=True, slots=True)
class ShmDetachReply:
    call_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Span:
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    window: int
    spans: tuple[Span, ...]
    #: more messages of the same flush follow (bus v2; never set towards a v1 peer)
    more: bool = False


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """Bus v4: window updates that travel as one message, applied in order as if each came
    alone (WINDOWS)."""

    updates: tuple[WindowUpdate, ...]


@dataclass(frozen=True, slots=True)
class SignalNotify:
    signal: int


@dataclass(frozen=True, slots=True)
class SignalState:
    signal: int
    enabled: bool
    signals_seen: int


Message = (
    BusHello
    | BusWelcome
    | BusSynced
    | BusLimits
    | DevAdd
    | DevDrop
    | DevOpen
    | DevOpenReply
    | DevClose
    | DevCall
    | DevCallReply
    | ShmAttach
    | ShmAttachReply
    | ShmDetach
    | ShmDetachReply
    | WindowUpdate
    | WindowBatch
    | SignalNotify
    | SignalState
)
"""Every bus message."""


def why(exc: Exception) -> str:
    """An exception a codec caught, in one line, for the message of the error it raises."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
