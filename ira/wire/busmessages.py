"""Bus messages: the table of them, one entry each.

Each message is defined once, by its entry in ``MESSAGES``: tag, dataclass, body schema,
direction, channel, meaning, golden example, and the fast codecs where there are some.
``ira.wire.bus`` derives the switch of ``MESSAGE``, the class lookups, the fast-codec
dispatch and docs/PROTOCOL.md from it.
"""

from __future__ import annotations

from ira.wire import MessageDef
from ira.wire.buscall import (
    decode_devcall,
    decode_devcall_reply,
    encode_devcall_msg,
    encode_devcall_reply_msg,
)
from ira.wire.busdefs import (
    Attribute,
    BusHello,
    BusLimits,
    BusSynced,
    BusWelcome,
    DevAdd,
    DevCall,
    DevCallReply,
    DevClose,
    DevDrop,
    DevOpen,
    DevOpenReply,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    ShmFlags,
    SignalNotify,
    SignalState,
    Span,
    Tag,
    WindowBatch,
    WindowUpdate,
)
from ira.wire.busschema import (
    BUS_HELLO,
    BUS_LIMITS,
    BUS_SYNCED,
    BUS_WELCOME,
    DEVADD,
    DEVCALL,
    DEVCALL_REPLY,
    DEVCLOSE,
    DEVDROP,
    DEVOPEN,
    DEVOPEN_REPLY,
    SHM_ATTACH,
    SHM_ATTACH_REPLY,
    SHM_DETACH,
    SHM_DETACH_REPLY,
    SIGNAL,
    SIGNAL_STATE,
    WINDOW,
    WINDOWS,
)
from ira.wire.buswindow import (
    decode_signal,
    decode_signal_state,
    decode_window,
    decode_windows,
    encode_signal,
    encode_signal_state,
    encode_window,
    encode_windows,
)

_HOST = "host → board"
_BOARD = "board → host"
_BOTH = "both"
_SIGNAL_EXAMPLE = 0x3C6EF372
_HANDLE_EXAMPLE = 0x9E3779B1

MESSAGES: tuple[MessageDef, ...] = (
    MessageDef(
        Tag.BUS_HELLO,
        BusHello,
        BUS_HELLO,
        _HOST,
        "CONTROL",
        "Registration. The host sends it once per link session, after the session "
        "started, with the range of bus versions it speaks. Nothing but BUS_HELLO is "
        "accepted by the board before it.",
        BusHello(version_min=1, version_max=1),
    ),
    MessageDef(
        Tag.BUS_WELCOME,
        BusWelcome,
        BUS_WELCOME,
        _BOARD,
        "CONTROL",
        "The answer to BUS_HELLO: the chosen version (the highest both sides speak) and the "
        "container's limits. With a negative status (EPROTONOSUPPORT) nothing follows and "
        "the host stays unregistered; otherwise the DEVADD replay and BUS_SYNCED follow.",
        BusWelcome(
            status=0,
            version=1,
            max_call_payload_bytes=65536,
            max_handles=64,
            max_windows=64,
            max_window_bytes=1 << 20,
            max_total_window_bytes=4 << 20,
        ),
    ),
    MessageDef(
        Tag.BUS_SYNCED,
        BusSynced,
        BUS_SYNCED,
        _BOARD,
        "CONTROL",
        "End of the DEVADD replay that follows BUS_WELCOME: the host now knows every device "
        "that exists. Later DEVADD/DEVDROP messages are live hotswap events.",
        BusSynced(device_count=2),
    ),
    MessageDef(
        Tag.BUS_LIMITS,
        BusLimits,
        BUS_LIMITS,
        _HOST,
        "CONTROL",
        "Bus v3: the host's limits, sent once right after a BUS_WELCOME that chose version 3 "
        "or later and before any other message. The board sends the DEVADD replay only after "
        "it, and never has more of its devices announced than `max_devices`: the others are "
        "withheld (counted) until an announced one is dropped. A host refuses and counts a "
        "DEVADD past its `max_devices` whatever the version.",
        BusLimits(max_devices=256),
    ),
    MessageDef(
        Tag.DEVADD,
        DevAdd,
        DEVADD,
        _BOARD,
        "CONTROL",
        "A device exists in the board's container: its id (from a counter, never reused), "
        "ABI version, type string and attributes. Replayed for every existing device on "
        "registration, and sent live when a device is added at runtime.",
        DevAdd(device_id=1, version=1, type="echo", attrs=(Attribute("board", "bb-1"),)),
    ),
    MessageDef(
        Tag.DEVDROP,
        DevDrop,
        DEVDROP,
        _BOARD,
        "CONTROL",
        "A device is gone (hot-unplug). Its handles, windows and signals are gone with it.",
        DevDrop(device_id=1),
    ),
    MessageDef(
        Tag.DEVOPEN,
        DevOpen,
        DEVOPEN,
        _HOST,
        "CONTROL",
        "Open a device at an ABI version. The device id is looked up only in the container of "
        "this link. Answered by DEVOPEN_REPLY.",
        DevOpen(call_id=7, device_id=1, version=1),
    ),
    MessageDef(
        Tag.DEVOPEN_REPLY,
        DevOpenReply,
        DEVOPEN_REPLY,
        _BOARD,
        "CONTROL",
        "The opaque handle for the open device, or a negative status (ENODEV, EPROTONOSUPPORT, "
        "EBUSY, EMFILE).",
        DevOpenReply(call_id=7, status=0, handle=_HANDLE_EXAMPLE),
    ),
    MessageDef(
        Tag.DEVCLOSE,
        DevClose,
        DEVCLOSE,
        _HOST,
        "BULK",
        "Close a handle; its windows and signals are detached. No reply. Sent on BULK so that "
        "it follows the host's window traffic for that handle.",
        DevClose(handle=_HANDLE_EXAMPLE),
    ),
    MessageDef(
        Tag.DEVCALL,
        DevCall,
        DEVCALL,
        _HOST,
        "CONTROL (BULK when ordered after window updates)",
        "A synchronous call: the device runs function `func` with the payload and answers with "
        "a status and a payload. Carried out exactly once per message within a session. A call "
        "that must see window updates flushed before it is sent on BULK.",
        DevCall(call_id=8, handle=_HANDLE_EXAMPLE, func=0, flags=0, payload=b"ping"),
        fast_encode=encode_devcall_msg,
        fast_decode=decode_devcall,
    ),
    MessageDef(
        Tag.DEVCALL_REPLY,
        DevCallReply,
        DEVCALL_REPLY,
        _BOARD,
        "the channel of the call",
        "The result of a DEVCALL. Unknown handle: EBADF; unknown function: ENOSYS. A negative "
        "status is never a crash of either side.",
        DevCallReply(call_id=8, status=0, payload=b"ping"),
        fast_encode=encode_devcall_reply_msg,
        fast_decode=decode_devcall_reply,
    ),
    MessageDef(
        Tag.SHM_ATTACH,
        ShmAttach,
        SHM_ATTACH,
        _HOST,
        "BULK",
        "Attach a shared window of `size_bytes` (id chosen by the host) to a device queue or "
        "region `shm_id`, optionally with a signal. The board writes only "
        "[device_offset, device_offset+device_length); the host writes the rest.",
        ShmAttach(
            call_id=9,
            handle=_HANDLE_EXAMPLE,
            shm_id=0,
            window=1,
            size_bytes=4096,
            device_offset=2048,
            device_length=2048,
            flags=int(ShmFlags.SIGNAL),
        ),
    ),
    MessageDef(
        Tag.SHM_ATTACH_REPLY,
        ShmAttachReply,
        SHM_ATTACH_REPLY,
        _BOARD,
        "BULK",
        "The signal handle (when asked for), or a negative status (EBADF, EEXIST, EINVAL, "
        "ERANGE, ENOSPC, EOPNOTSUPP).",
        ShmAttachReply(call_id=9, status=0, signal=_SIGNAL_EXAMPLE),
    ),
    MessageDef(
        Tag.SHM_DETACH,
        ShmDetach,
        SHM_DETACH,
        _HOST,
        "BULK",
        "Detach a window (and its signal) from a device.",
        ShmDetach(call_id=10, handle=_HANDLE_EXAMPLE, window=1),
    ),
    MessageDef(
        Tag.SHM_DETACH_REPLY,
        ShmDetachReply,
        SHM_DETACH_REPLY,
        _BOARD,
        "BULK",
        "The window is detached, or EBADF for an unknown handle/window.",
        ShmDetachReply(call_id=10, status=0),
    ),
    MessageDef(
        Tag.WINDOW,
        WindowUpdate,
        WINDOW,
        _BOTH,
        "BULK",
        "Replicated writes: each span is the current content of a byte range of the window, "
        "written by the range's one writer. Applied in order; a message with any span out of "
        "bounds or in a range the sender does not write is refused whole and counted. MORE "
        "(bus v2) marks every message of a flush but its last.",
        WindowUpdate(window=1, spans=(Span(offset=0, data=b"\x01\x02\x03\x04"),)),
        fast_encode=encode_window,
        fast_decode=decode_window,
    ),
    MessageDef(
        Tag.WINDOWS,
        WindowBatch,
        WINDOWS,
        _BOTH,
        "BULK",
        "Bus v4: several WINDOW updates in one message, each exactly a WINDOW message's body "
        "(window, head with its MORE, spans), applied in order as if each had come alone "
        "(each refused or applied on its own). A sender puts consecutive WINDOW messages of "
        "the BULK channel in one WINDOWS (a frame's buffer and the ring update that exposes "
        "it); never sent to a peer of version 3 or older, refused and counted from one. From "
        "version 4 on a virtio driver sends no SIGNAL after publishing available buffers: the "
        "device runs the queue when the flush of the window with its available ring has "
        "ended (the last update without MORE), as a device does since version 2.",
        WindowBatch(
            updates=(
                WindowUpdate(window=2, spans=(Span(offset=0, data=b"\x45\x00"),)),
                WindowUpdate(window=1, spans=(Span(offset=4098, data=b"\x01"),)),
            )
        ),
        fast_encode=encode_windows,
        fast_decode=decode_windows,
    ),
    MessageDef(
        Tag.SIGNAL,
        SignalNotify,
        SIGNAL,
        _BOTH,
        "BULK",
        "A notification on a signal (shm-signal inject), sent only when the receiver has "
        "notifications enabled and none is pending. Travels behind the window updates flushed "
        "before it.",
        SignalNotify(signal=_SIGNAL_EXAMPLE),
        fast_encode=encode_signal,
        fast_decode=decode_signal,
    ),
    MessageDef(
        Tag.SIGNAL_STATE,
        SignalState,
        SIGNAL_STATE,
        _BOTH,
        "BULK",
        "The receiver's side of a signal: sent when it has drained a notification (pending "
        "cleared) or enables notifications again; carries whether notifications are enabled "
        "and how many SIGNALs it has seen, so the sender knows whether one is still pending.",
        SignalState(signal=_SIGNAL_EXAMPLE, enabled=True, signals_seen=1),
        fast_encode=encode_signal_state,
        fast_decode=decode_signal_state,
    ),
)
"""Every bus message, in tag order: the definition ``ira.wire.bus`` derives from."""
