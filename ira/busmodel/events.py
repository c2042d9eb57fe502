"""Events the bus-model cores report (read them with ``next_event()``).

Past-tense names, frozen slotted dataclasses.  The link's own ``LinkDown``,
``LinkUp``, ``PeerRestarted`` and ``SessionLost`` are passed through unchanged
(they are the same classes as in ``ira.link.events``), each *before* the
device removals and call failures it causes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ira.errors import DevcallError, DevcallTimeout, SessionReset
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What DEVADD told the host about a device."""

    device_id: int
    type: str
    version: int
    attrs: tuple[tuple[str, str], ...] = ()

    @property
    def attributes(self) -> Mapping[str, str]:
        return dict(self.attrs)


# -- host side (Bus) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusReady:
    """Registration finished and the DEVADD replay is complete (BUS_SYNCED)."""

    version: int
    device_count: int


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """The board refused BUS_HELLO (no common version); the bus stays unregistered."""

    status: int


@dataclass(frozen=True, slots=True)
class DeviceAdded:
    """A proxy device exists; ``replayed`` is True for the registration replay."""

    device: DeviceInfo
    replayed: bool


@dataclass(frozen=True, slots=True)
class DeviceRemoved:
    """A proxy device is gone: DEVDROP (``reason="dropped"``) or a session reset."""

    device: DeviceInfo
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceOpened:
    """DEVOPEN succeeded; ``handle`` addresses the device in DEVCALL/SHM/DEVCLOSE."""

    call_id: int
    device_id: int
    handle: int


@dataclass(frozen=True, slots=True)
class CallCompleted:
    """A DEVCALL completed with a status >= 0."""

    call_id: int
    device_id: int
    func: int
    status: int
    payload: bytes
    round_trip_s: float


CallError = DevcallError | DevcallTimeout | SessionReset
"""Why a request failed: negative status, timeout, or the session reset."""


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A request (DEVOPEN, DEVCALL, SHM attach/detach) did not succeed.

    ``error`` is a ``DevcallError`` (negative status, ``.status``), a
    ``DevcallTimeout``, or ``SessionReset`` ("the session reset; the call may or
    may not have run").
    """

    call_id: int
    device_id: int
    error: CallError


@dataclass(frozen=True, slots=True)
class WindowAttached:
    """SHM_ATTACH succeeded; the window now flushes, ``signal_id`` is set if asked for."""

    call_id: int
    device_id: int
    window_id: int
    signal_id: int | None


@dataclass(frozen=True, slots=True)
class WindowDetached:
    """SHM_DETACH completed; the window no longer replicates."""

    call_id: int
    device_id: int
    window_id: int


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A signal's notifier ran on the host (shm-signal wakeup)."""

    device_id: int
    window_id: int
    signal_id: int


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    """The board's flush of a window with a signal is all in the host's replica (bus v2).

    Reported after the last WINDOW message of each flush, so a driver may look
    at what the board wrote (a used ring) before, or without, its SIGNAL.
    """

    device_id: int
    window_id: int


BusEvent = (
    BusReady
    | RegistrationRefused
    | DeviceAdded
    | DeviceRemoved
    | DeviceOpened
    | CallCompleted
    | CallFailed
    | WindowAttached
    | WindowDetached
    | SignalReceived
    | WindowUpdated
    | LinkDown
    | LinkUp
    | PeerRestarted
    | SessionLost
)
"""Every event ``Bus.next_event()`` returns."""

DeviceEvent = (
    DeviceOpened
    | CallCompleted
    | CallFailed
    | WindowAttached
    | WindowDetached
    | SignalReceived
    | WindowUpdated
)
"""Events about one device; also handed to the device's bound driver."""


# -- board side (Connector) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostRegistered:
    """The host sent BUS_HELLO and got the DEVADD replay."""

    version: int
    device_count: int


ConnectorEvent = HostRegistered | LinkDown | LinkUp | PeerRestarted | SessionLost
"""Every event ``Connector.next_event()`` returns."""
