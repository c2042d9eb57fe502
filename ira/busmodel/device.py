"""The device author's API (board side).

A device is a Python object in the board's container.  The host finds it by
its ``type`` string (drivers bind by exact match), opens it at an ABI
``version``, calls its functions and attaches shared windows with signals.
Subclass ``Device`` and override what the device supports::

    class Echo(Device):
        type = "echo"
        version = 1

        def call(self, handle, func, payload, *, now):
            if func == 0:
                return 0, payload
            return Status.ENOSYS, b""

Everything is optional.  The defaults accept an open at exactly
``version`` (else ``EPROTONOSUPPORT``), answer every function with
``ENOSYS`` and refuse windows with ``EOPNOTSUPP``.  Return a negative
status, or raise ``DevcallError(status, message)``, to refuse a request;
any other exception is a bug in the device and propagates to the runtime.

Hooks run inside the connector, on the thread that owns it: they must not
block.  A device may write and flush its windows and notify its signals
at any time on that thread (from a hook, a signal handler, or code the
runtime schedules); the messages go out with the connector's next
``messages_to_send()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ira.busmodel.signal import Signal
from ira.busmodel.window import Window
from ira.wire.bus import Status


@dataclass(slots=True, eq=False)
class Attachment:
    """A window attached to an open handle (SHM_ATTACH): a queue or region of the device."""

    #: the device-defined queue/region number the host asked for
    shm_id: int
    window: Window
    #: the window's signal, when the host asked for one
    signal: Signal | None
    handle: Handle


@dataclass(slots=True, eq=False)
class Handle:
    """One open of a device (DEVOPEN); what the device sees of its client."""

    #: opaque handle number, as the host sees it
    handle_id: int
    device_id: int
    #: the ABI version the host opened the device at
    version: int
    #: attached windows by window id
    attachments: dict[int, Attachment] = field(default_factory=dict)

    def attachment(self, shm_id: int) -> Attachment | None:
        """The window attached as ``shm_id``, if any."""
        for att in self.attachments.values():
            if att.shm_id == shm_id:
                return att
        return None


class Device:
    """Base class of a board-side device model (see the module docstring)."""

    #: the type string drivers bind to (exact match), at most MAX_TYPE_BYTES of UTF-8
    type: str = ""
    #: the device's ABI version, announced in DEVADD
    version: int = 1

    def attributes(self) -> Mapping[str, str]:
        """Key/value attributes announced in DEVADD (e.g. a serial number)."""
        return {}

    def open(self, handle: Handle, *, now: float) -> int:
        """A host opens the device at ``handle.version``; return 0 or a negative status."""
        return Status.OK if handle.version == self.version else Status.EPROTONOSUPPORT

    def call(self, handle: Handle, func: int, payload: bytes, *, now: float) -> tuple[int, bytes]:
        """Run function ``func``; return ``(status, payload)``."""
        return Status.ENOSYS, b""

    def attach(self, handle: Handle, attachment: Attachment, *, now: float) -> int:
        """A window (and maybe a signal) is being attached; return 0 or a negative status."""
        return Status.EOPNOTSUPP

    def detach(self, handle: Handle, attachment: Attachment, *, now: float) -> None:
        """A window is going away (SHM_DETACH, close, removal or session reset)."""

    def close(self, handle: Handle, *, now: float) -> None:
        """The handle is closed (DEVCLOSE, removal or session reset); windows detached first."""
