"""Bus messages: the construct schemas of their bodies (everything after the tag byte).

The specification of every bus message: ``ira.wire.busmessages`` gives each schema its
tag, and ``ira.wire.bus`` builds the whole message (``MESSAGE``) and the document from
them.  The fast codecs (``ira.wire.buscall``, ``ira.wire.buswindow``) are held to these
byte for byte by tests/wire/test_bus_messages.py.
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Check,
    Const,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Rebuild,
    Struct,
    len_,
    this,
)

from ira.wire.busdefs import (
    BUS_MAGIC,
    CALL_FLAGS_RESERVED,
    MAX_ATTR_KEY_BYTES,
    MAX_ATTR_VALUE_BYTES,
    MAX_ATTRS,
    MAX_BATCH_UPDATES,
    MAX_CALL_PAYLOAD_BYTES,
    MAX_SPAN_BYTES,
    MAX_SPANS,
    MAX_TYPE_BYTES,
    SHM_FLAGS_RESERVED,
    WINDOW_COUNT_MASK,
    WINDOW_HEAD_RESERVED,
)

_CALL_ID = "call_id" / Int32ul * "request id chosen by the host, echoed in the reply"
_STATUS = "status" / Int32sl * "0/positive: success; negative: an error status (see Statuses)"
_HANDLE = "handle" / Int32ul * "an open handle issued by DEVOPEN_REPLY in this container"
_WINDOW = "window" / Int32ul * "window id chosen by the host, unique on this link"
_SIGNAL = "signal" / Int32ul * "signal handle issued by SHM_ATTACH_REPLY in this container"

BUS_HELLO = Struct(
    "magic" / Const(BUS_MAGIC) * 'the ASCII bytes "IRAB"',
    "version_min" / Int16ul * "lowest bus protocol version the host speaks",
    "version_max" / Int16ul * "highest bus protocol version the host speaks",
    Check(this.version_min <= this.version_max),
)
BUS_WELCOME = Struct(
    _STATUS,
    "version" / Int16ul * "the chosen bus version (the highest both speak); 0 when refused",
    "max_call_payload_bytes" / Int32ul * "largest DEVCALL payload the container accepts",
    "max_handles" / Int16ul * "most open handles in the container",
    "max_windows" / Int16ul * "most attached windows in the container",
    "max_window_bytes" / Int32ul * "largest single window",
    "max_total_window_bytes" / Int32ul * "largest sum of window sizes in the container",
)
BUS_SYNCED = Struct(
    "device_count" / Int32ul * "number of DEVADD messages the replay sent",
)
BUS_LIMITS = Struct(
    "max_devices" / Int16ul * "most devices the host keeps for this link, 1..MAX_HOST_DEVICES",
    Check(this.max_devices >= 1),
)
ATTRIBUTE = Struct(
    "key_len" / Rebuild(Int8ul, len_(this.key)) * "key length, at most MAX_ATTR_KEY_BYTES",
    Check(this.key_len <= MAX_ATTR_KEY_BYTES),
    "key" / Bytes(this.key_len) * "attribute name, UTF-8",
    Check(len_(this.key) == this.key_len),
    "value_len" / Rebuild(Int16ul, len_(this.value)) * "value length, at most MAX_ATTR_VALUE_BYTES",
    Check(this.value_len <= MAX_ATTR_VALUE_BYTES),
    "value" / Bytes(this.value_len) * "attribute value, UTF-8",
    Check(len_(this.value) == this.value_len),
)
DEVADD = Struct(
    "device_id" / Int32ul * "device id, from the container's counter, never reused",
    "version" / Int32ul * "the device's ABI version",
    "type_len" / Rebuild(Int8ul, len_(this.type)) * "type length, 1..MAX_TYPE_BYTES",
    Check(this.type_len >= 1),
    Check(this.type_len <= MAX_TYPE_BYTES),
    "type" / Bytes(this.type_len) * "device type string (drivers bind by exact match), UTF-8",
    Check(len_(this.type) == this.type_len),
    "attr_count" / Rebuild(Int8ul, len_(this.attrs)) * "number of attributes, at most MAX_ATTRS",
    Check(this.attr_count <= MAX_ATTRS),
    "attrs" / Array(this.attr_count, ATTRIBUTE) * "attributes: key/value pairs, see ATTRIBUTE",
)
DEVDROP = Struct(
    "device_id" / Int32ul * "the device that is gone",
)
DEVOPEN = Struct(
    _CALL_ID,
    "device_id" / Int32ul * "device id from DEVADD",
    "version" / Int32ul * "the ABI version the host's driver speaks",
)
DEVOPEN_REPLY = Struct(
    _CALL_ID,
    _STATUS,
    "handle" / Int32ul * "opaque handle for DEVCALL/SHM/DEVCLOSE; 0 when status < 0",
)
DEVCLOSE = Struct(
    _HANDLE,
)
DEVCALL = Struct(
    _CALL_ID,
    _HANDLE,
    "func" / Int32ul * "device-defined function number",
    "flags" / Int32ul * "CallFlags: bit 0 NO_REPLY; other bits must be 0",
    Check((this.flags & CALL_FLAGS_RESERVED) == 0),
    "payload_len" / Rebuild(Int32ul, len_(this.payload)) * "at most MAX_CALL_PAYLOAD_BYTES",
    Check(this.payload_len <= MAX_CALL_PAYLOAD_BYTES),
    "payload" / Bytes(this.payload_len) * "argument bytes, device-defined",
    Check(len_(this.payload) == this.payload_len),
)
DEVCALL_REPLY = Struct(
    _CALL_ID,
    _STATUS,
    "payload_len" / Rebuild(Int32ul, len_(this.payload)) * "at most MAX_CALL_PAYLOAD_BYTES",
    Check(this.payload_len <= MAX_CALL_PAYLOAD_BYTES),
    "payload" / Bytes(this.payload_len) * "result bytes, device-defined",
    Check(len_(this.payload) == this.payload_len),
)
SHM_ATTACH = Struct(
    _CALL_ID,
    _HANDLE,
    "shm_id" / Int32ul * "device-defined queue/region number",
    _WINDOW,
    "size_bytes" / Int32ul * "window size, 1..max_window_bytes",
    "device_offset" / Int32ul * "start of the range the device (board) writes",
    "device_length" / Int32ul * "length of that range; the host writes all other bytes",
    "flags" / Int32ul * "ShmFlags: bit 0 SIGNAL; other bits must be 0",
    Check((this.flags & SHM_FLAGS_RESERVED) == 0),
)
SHM_ATTACH_REPLY = Struct(
    _CALL_ID,
    _STATUS,
    "signal" / Int32ul * "signal handle when SIGNAL was asked for and status >= 0, else 0",
)
SHM_DETACH = Struct(
    _CALL_ID,
    _HANDLE,
    _WINDOW,
)
SHM_DETACH_REPLY = Struct(
    _CALL_ID,
    _STATUS,
)
SPAN = Struct(
    "offset" / Int32ul * "byte offset in the window",
    "length" / Rebuild(Int16ul, len_(this.data)) * "span length, 1..MAX_SPAN_BYTES",
    Check(this.length >= 1),
    Check(this.length <= MAX_SPAN_BYTES),
    "data" / Bytes(this.length) * "the bytes now at [offset, offset+length)",
    Check(len_(this.data) == this.length),
)
WINDOW = Struct(
    _WINDOW,
    "head"
    / Rebuild(Int8ul, len_(this.spans) | (this.more << 7))
    * "bits 0-4: number of spans, 1..MAX_SPANS; bit 7: MORE, more WINDOW messages of this "
    "flush follow (bus v2 only; 0 in v1); bits 5-6 must be 0",
    Check((this.head & WINDOW_COUNT_MASK) >= 1),
    Check((this.head & WINDOW_COUNT_MASK) <= MAX_SPANS),
    Check((this.head & WINDOW_HEAD_RESERVED) == 0),
    "spans"
    / Array(this.head & WINDOW_COUNT_MASK, SPAN)
    * "absolute contents, applied in order, see SPAN",
)
WINDOWS = Struct(
    "count"
    / Rebuild(Int8ul, len_(this.updates))
    * "number of window updates, 2..MAX_BATCH_UPDATES",
    Check(this.count >= 2),
    Check(this.count <= MAX_BATCH_UPDATES),
    "updates"
    / Array(this.count, WINDOW)
    * "each a WINDOW message's body (window, head, spans), applied in order",
)
SIGNAL = Struct(
    _SIGNAL,
)
SIGNAL_STATE = Struct(
    _SIGNAL,
    "enabled" / Int8ul * "1 if the receiver has notifications enabled, else 0",
    Check(this.enabled <= 1),
    "signals_seen" / Int32ul * "SIGNALs received on this signal so far (mod 2**32)",
)
