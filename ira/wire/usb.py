"""USB descriptors and FunctionFS blobs of ira's USB link (USB 2.0 §9.6, USB 3.2 §9.6.7).

A board in USB gadget mode offers one *vendor-specific interface* (class
0xFF) with one bulk OUT and one bulk IN endpoint; each bulk transfer carries
one link frame (``ira.wire.link``).  The board's process writes the interface
to the kernel through FunctionFS (``Documentation/usb/functionfs.rst``): the
*descriptors blob* (a head, then the interface and endpoints once per speed),
the *strings blob*, then reads *events* from ``ep0``.  The host reads the same
interface and endpoint descriptors back from the device.

Nothing here does I/O: schemas, frozen dataclasses and ``encode``/``decode``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import construct as cs

from ira.errors import RemoteProtocolError
from ira.wire import Limit, MessageSpec, WireSpec

__all__ = [
    "SPEC",
    "DescriptorType",
    "EndpointDescriptor",
    "FfsDescriptors",
    "FfsEvent",
    "FfsEventType",
    "FfsStrings",
    "InterfaceDescriptor",
    "SsCompanion",
    "decode_event",
    "decode_interface",
    "encode",
    "vendor_function",
]

#: bInterfaceClass of a vendor-specific interface
VENDOR_CLASS = 0xFF
#: wMaxPacketSize of a bulk endpoint at full, high and super speed
FS_BULK_BYTES = 64
HS_BULK_BYTES = 512
SS_BULK_BYTES = 1024
#: the longest transfer a reader takes: a link frame of 64 KiB, rounded up to whole packets
MAX_TRANSFER_BYTES = (1 << 16) + SS_BULK_BYTES
#: FunctionFS magics (``linux/usb/functionfs.h``)
DESCRIPTORS_MAGIC_V2 = 3
STRINGS_MAGIC = 2
#: descriptor flags: full-, high- and super-speed descriptors present
HAS_FS_DESC = 1
HAS_HS_DESC = 2
HAS_SS_DESC = 4
ALL_SPEEDS = HAS_FS_DESC | HAS_HS_DESC | HAS_SS_DESC
#: bytes of one event read from ep0
EVENT_BYTES = 12
#: endpoint address bit of an IN (device to host) endpoint
DIR_IN = 0x80
#: bmAttributes of a bulk endpoint
BULK = 0x02
#: US English, the one language of the strings blob
LANG_EN_US = 0x0409


class DescriptorType(enum.IntEnum):
    """bDescriptorType values used here (USB 2.0 table 9-5, USB 3.2 table 9-6)."""

    INTERFACE = 4
    ENDPOINT = 5
    SS_ENDPOINT_COMPANION = 0x30


class FfsEventType(enum.IntEnum):
    """``usb_functionfs_event.type``: what the kernel tells the function on ep0."""

    BIND = 0
    UNBIND = 1
    ENABLE = 2
    DISABLE = 3
    SETUP = 4
    SUSPEND = 5
    RESUME = 6


INTERFACE_DESCRIPTOR = cs.Struct(
    "bLength" / cs.Const(9, cs.Int8ul) * "size of this descriptor",
    "bDescriptorType" / cs.Const(int(DescriptorType.INTERFACE), cs.Int8ul) * "INTERFACE",
    "bInterfaceNumber" / cs.Int8ul * "0 in the function (the kernel renumbers it)",
    "bAlternateSetting" / cs.Int8ul * "0",
    "bNumEndpoints" / cs.Int8ul * "2: bulk OUT and bulk IN",
    "bInterfaceClass" / cs.Int8ul * "0xff, vendor-specific",
    "bInterfaceSubClass" / cs.Int8ul * "0",
    "bInterfaceProtocol" / cs.Int8ul * "0",
    "iInterface" / cs.Int8ul * "string index of the interface name (1 in the strings blob)",
)

ENDPOINT_DESCRIPTOR = cs.Struct(
    "bLength" / cs.Const(7, cs.Int8ul) * "size of this descriptor",
    "bDescriptorType" / cs.Const(int(DescriptorType.ENDPOINT), cs.Int8ul) * "ENDPOINT",
    "bEndpointAddress" / cs.Int8ul * "endpoint number, bit 7 set for IN (device to host)",
    "bmAttributes" / cs.Int8ul * "2: bulk",
    "wMaxPacketSize" / cs.Int16ul * "64 at full speed, 512 at high speed, 1024 at super speed",
    "bInterval" / cs.Int8ul * "0 for bulk",
)

SS_COMPANION_DESCRIPTOR = cs.Struct(
    "bLength" / cs.Const(6, cs.Int8ul) * "size of this descriptor",
    "bDescriptorType"
    / cs.Const(int(DescriptorType.SS_ENDPOINT_COMPANION), cs.Int8ul)
    * "SuperSpeed endpoint companion, after each endpoint at super speed",
    "bMaxBurst" / cs.Int8ul * "0: one packet per burst",
    "bmAttributes" / cs.Int8ul * "0: no streams",
    "wBytesPerInterval" / cs.Int16ul * "0 for bulk",
)

FFS_DESCRIPTORS = cs.Struct(
    "magic" / cs.Const(DESCRIPTORS_MAGIC_V2, cs.Int32ul) * "FUNCTIONFS_DESCRIPTORS_MAGIC_V2",
    "length" / cs.Int32ul * "bytes of the whole blob",
    "flags" / cs.Int32ul * "1 | 2 | 4: full-, high- and super-speed descriptors follow",
    "fs_count" / cs.Int32ul * "descriptors at full speed",
    "hs_count" / cs.Int32ul * "descriptors at high speed",
    "ss_count" / cs.Int32ul * "descriptors at super speed",
    cs.Check(cs.this.flags == ALL_SPEEDS),
    "descriptors"
    / cs.Bytes(cs.this.length - 24)
    * "interface and endpoint descriptors (with companions at super speed), speed by speed",
)

FFS_STRINGS = cs.Struct(
    "magic" / cs.Const(STRINGS_MAGIC, cs.Int32ul) * "FUNCTIONFS_STRINGS_MAGIC",
    "length" / cs.Int32ul * "bytes of the whole blob",
    "str_count" / cs.Int32ul * "strings per language (1)",
    "lang_count" / cs.Int32ul * "languages (1)",
    "lang" / cs.Int16ul * "0x0409, US English",
    "strings" / cs.Bytes(cs.this.length - 18) * "the strings, each NUL-terminated UTF-8",
)

FFS_EVENT = cs.Struct(
    "bRequestType" / cs.Int8ul * "SETUP only: the control request's fields",
    "bRequest" / cs.Int8ul * "SETUP only",
    "wValue" / cs.Int16ul * "SETUP only",
    "wIndex" / cs.Int16ul * "SETUP only",
    "wLength" / cs.Int16ul * "SETUP only",
    "type" / cs.Int8ul * "BIND 0, UNBIND 1, ENABLE 2, DISABLE 3, SETUP 4, SUSPEND 5, RESUME 6",
    "pad" / cs.Bytes(3) * "zero",
    cs.Check(cs.this.type <= int(FfsEventType.RESUME)),
)


@dataclass(frozen=True, slots=True)
class InterfaceDescriptor:
    """An interface descriptor (USB 2.0 §9.6.5)."""

    number: int = 0
    num_endpoints: int = 2
    interface_class: int = VENDOR_CLASS
    subclass: int = 0
    protocol: int = 0
    string_index: int = 1


@dataclass(frozen=True, slots=True)
class EndpointDescriptor:
    """An endpoint descriptor (USB 2.0 §9.6.6)."""

    address: int
    max_packet_bytes: int
    attributes: int = BULK


@dataclass(frozen=True, slots=True)
class SsCompanion:
    """A SuperSpeed endpoint companion descriptor (USB 3.2 §9.6.7)."""


@dataclass(frozen=True, slots=True)
class FfsDescriptors:
    """The descriptors blob: ira's vendor interface at the three speeds."""

    fs: tuple[InterfaceDescriptor | EndpointDescriptor, ...]
    hs: tuple[InterfaceDescriptor | EndpointDescriptor, ...]
    ss: tuple[InterfaceDescriptor | EndpointDescriptor | SsCompanion, ...]


@dataclass(frozen=True, slots=True)
class FfsStrings:
    """The strings blob: the interface name (string index 1)."""

    strings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FfsEvent:
    """One event read from ep0."""

    type: FfsEventType
    request_type: int = 0
    request: int = 0
    value: int = 0
    index: int = 0
    length: int = 0


def vendor_function(*, out_ep: int = 1, in_ep: int = 2) -> FfsDescriptors:
    """ira's interface: one bulk OUT and one bulk IN endpoint, at every speed."""

    def eps(size: int) -> tuple[EndpointDescriptor, EndpointDescriptor]:
        return EndpointDescriptor(out_ep, size), EndpointDescriptor(DIR_IN | in_ep, size)

    iface = InterfaceDescriptor()
    out_ss, in_ss = eps(SS_BULK_BYTES)
    return FfsDescriptors(
        fs=(iface, *eps(FS_BULK_BYTES)),
        hs=(iface, *eps(HS_BULK_BYTES)),
        ss=(iface, out_ss, SsCompanion(), in_ss, SsCompanion()),
    )


def _build(schema: cs.Construct, values: dict[str, object]) -> bytes:
    data: bytes = schema.build(values)
    return data


def _descriptor(item: InterfaceDescriptor | EndpointDescriptor | SsCompanion) -> bytes:
    match item:
        case InterfaceDescriptor():
            return _build(
                INTERFACE_DESCRIPTOR,
                {
                    "bInterfaceNumber": item.number,
                    "bAlternateSetting": 0,
                    "bNumEndpoints": item.num_endpoints,
                    "bInterfaceClass": item.interface_class,
                    "bInterfaceSubClass": item.subclass,
                    "bInterfaceProtocol": item.protocol,
                    "iInterface": item.string_index,
                },
            )
        case EndpointDescriptor():
            return _build(
                ENDPOINT_DESCRIPTOR,
                {
                    "bEndpointAddress": item.address,
                    "bmAttributes": item.attributes,
                    "wMaxPacketSize": item.max_packet_bytes,
                    "bInterval": 0,
                },
            )
        case SsCompanion():
            return _build(
                SS_COMPANION_DESCRIPTOR, {"bMaxBurst": 0, "bmAttributes": 0, "wBytesPerInterval": 0}
            )


def encode(
    msg: FfsDescriptors
    | FfsStrings
    | FfsEvent
    | InterfaceDescriptor
    | EndpointDescriptor
    | SsCompanion,
) -> bytes:
    """The bytes of a blob, an event or a single descriptor."""
    match msg:
        case FfsDescriptors():
            body = b"".join(_descriptor(d) for d in (*msg.fs, *msg.hs, *msg.ss))
            return _build(
                FFS_DESCRIPTORS,
                {
                    "length": 24 + len(body),
                    "flags": ALL_SPEEDS,
                    "fs_count": len(msg.fs),
                    "hs_count": len(msg.hs),
                    "ss_count": len(msg.ss),
                    "descriptors": body,
                },
            )
        case FfsStrings():
            body = b"".join(s.encode() + b"\0" for s in msg.strings)
            return _build(
                FFS_STRINGS,
                {
                    "length": 18 + len(body),
                    "str_count": len(msg.strings),
                    "lang_count": 1,
                    "lang": LANG_EN_US,
                    "strings": body,
                },
            )
        case FfsEvent():
            return _build(
                FFS_EVENT,
                {
                    "bRequestType": msg.request_type,
                    "bRequest": msg.request,
                    "wValue": msg.value,
                    "wIndex": msg.index,
                    "wLength": msg.length,
                    "type": int(msg.type),
                    "pad": bytes(3),
                },
            )
        case InterfaceDescriptor() | EndpointDescriptor() | SsCompanion():
            return _descriptor(msg)


def decode_event(data: bytes) -> FfsEvent:
    """One ep0 event; ``RemoteProtocolError`` for an unknown type or a short read."""
    try:
        raw = FFS_EVENT.parse(data)
    except cs.ConstructError as exc:
        raise RemoteProtocolError(f"bad FunctionFS event {data.hex()}: {exc}") from exc
    return FfsEvent(
        FfsEventType(raw.type), raw.bRequestType, raw.bRequest, raw.wValue, raw.wIndex, raw.wLength
    )


def decode_interface(data: bytes) -> InterfaceDescriptor:
    """An interface descriptor as the host reads it back."""
    try:
        raw = INTERFACE_DESCRIPTOR.parse(data)
    except cs.ConstructError as exc:
        raise RemoteProtocolError(f"bad interface descriptor {data.hex()}: {exc}") from exc
    return InterfaceDescriptor(
        raw.bInterfaceNumber,
        raw.bNumEndpoints,
        raw.bInterfaceClass,
        raw.bInterfaceSubClass,
        raw.bInterfaceProtocol,
        raw.iInterface,
    )


_SUMMARY = """\
A board in USB gadget mode offers one vendor-specific interface (class 0xff) with one bulk OUT
endpoint (host to board) and one bulk IN endpoint (board to host). Each bulk transfer carries
exactly one link frame (section "Link frames"), with no COBS and no delimiter: the transfer's end
is the frame's end. A transfer whose length is a multiple of the endpoint's wMaxPacketSize is
followed by a zero-length packet, so the receiver sees where it ends (USB 2.0 §5.8.3). A receiver
reads with a buffer of `MAX_TRANSFER_BYTES`; a longer transfer is an error of the peer (babble)
and is dropped.

The board's process describes the interface to its kernel through FunctionFS: it writes the
descriptors blob, then the strings blob, to `ep0`; the kernel then creates the endpoint files
`ep1` (OUT) and `ep2` (IN) and reports the host's actions as 12-byte events read from `ep0`.
All integers are little-endian, as on the bus.
"""

_NOTES = """\
### Identification

The gadget's device descriptor carries idVendor 0x1d6b and idProduct 0x0104 unless the board
says otherwise (the Linux Foundation's "Multifunction Composite Gadget", the identity of a
configfs composite gadget), iSerialNumber the board's name, and the interface string `ira`. A
host finds a board by VID:PID and serial number, or by the bus port it is plugged into, and
picks the first interface of class 0xff with one bulk IN and one bulk OUT endpoint. With ACM
enabled the same gadget also carries a CDC-ACM function, a plain serial port for hosts without
USB support in ira.

### Carrier

ENABLE means the host configured the device: the endpoints carry frames. DISABLE, UNBIND and
SUSPEND mean they do not (a cable pulled, a host gone to sleep); the link's own keepalives then
declare it down, and it resumes when frames flow again.
"""

SPEC = WireSpec(
    title="USB descriptors and FunctionFS (`ira.wire.usb`)",
    summary=_SUMMARY,
    encode=encode,
    messages=(
        MessageSpec(
            name="FFS_STRINGS",
            tag=STRINGS_MAGIC,
            schema=FFS_STRINGS,
            meaning="The strings blob written to ep0 after the descriptors: the interface name.",
            example=FfsStrings(("ira",)),
            direction="board to its kernel",
        ),
        MessageSpec(
            name="FFS_DESCRIPTORS",
            tag=DESCRIPTORS_MAGIC_V2,
            schema=FFS_DESCRIPTORS,
            meaning="The descriptors blob written to ep0 first: the interface with its two bulk "
            "endpoints at full (64-byte packets), high (512) and super speed (1024, each "
            "endpoint followed by its companion).",
            example=vendor_function(),
            direction="board to its kernel",
        ),
        MessageSpec(
            name="INTERFACE",
            tag=int(DescriptorType.INTERFACE),
            schema=INTERFACE_DESCRIPTOR,
            meaning="ira's vendor-specific interface, as the host reads it back.",
            example=InterfaceDescriptor(),
            direction="board to host",
        ),
        MessageSpec(
            name="ENDPOINT",
            tag=int(DescriptorType.ENDPOINT),
            schema=ENDPOINT_DESCRIPTOR,
            meaning="One bulk endpoint; the example is the IN endpoint at high speed.",
            example=EndpointDescriptor(DIR_IN | 2, HS_BULK_BYTES),
            direction="board to host",
        ),
        MessageSpec(
            name="SS_ENDPOINT_COMPANION",
            tag=int(DescriptorType.SS_ENDPOINT_COMPANION),
            schema=SS_COMPANION_DESCRIPTOR,
            meaning="Follows each endpoint at super speed: no bursts, no streams.",
            example=SsCompanion(),
            direction="board to host",
        ),
        MessageSpec(
            name="FFS_EVENT",
            tag=0,
            schema=FFS_EVENT,
            meaning="What the kernel reports on ep0; the example is ENABLE (the host set a "
            "configuration). SETUP events are answered with a stall: the interface has no "
            "control requests.",
            example=FfsEvent(FfsEventType.ENABLE),
            direction="kernel to board",
        ),
    ),
    limits=(
        Limit("FS_BULK_BYTES", FS_BULK_BYTES, "wMaxPacketSize at full speed"),
        Limit("HS_BULK_BYTES", HS_BULK_BYTES, "wMaxPacketSize at high speed"),
        Limit("SS_BULK_BYTES", SS_BULK_BYTES, "wMaxPacketSize at super speed"),
        Limit("EVENT_BYTES", EVENT_BYTES, "bytes of one ep0 event"),
        Limit("MAX_TRANSFER_BYTES", MAX_TRANSFER_BYTES, "longest transfer a reader takes"),
    ),
    notes=_NOTES,
)
