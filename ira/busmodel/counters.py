"""The bus model's counters: typed, one field per counter, enum keys per reason.

Each core keeps plain integers while it runs (``ConnectorCounts``,
``BusCounts``: an attribute increment is all a message costs) and hands out
a frozen snapshot from ``statistics()`` (``ConnectorStatistics``,
``BusStatistics``).  Refused messages and requests are counted by
``Refusal``, messages sent by their wire class (``sent[SignalNotify]``).
``as_dict()`` gives a snapshot the flat names of docs/PROTOCOL.md ("Errors and
refusals") and the conformance vectors: ``refused_<reason>``, ``refused`` (all
reasons), ``sent_<MessageClass>``, ``messages_sent`` and one per field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields


class Refusal(enum.Enum):
    """Why a core refused a peer's message or request; the value is its counter's name."""

    #: the message did not decode
    MALFORMED = "malformed"
    #: a message the state machine does not expect in the current state
    UNEXPECTED = "unexpected"
    #: board: a request before the host registered
    NOT_REGISTERED = "not_registered"
    #: board: BUS_HELLO while already registered or registering
    UNEXPECTED_HELLO = "unexpected_hello"
    #: board: no bus version in common
    BAD_VERSION = "bad_version"
    #: a device id the container does not hold
    UNKNOWN_DEVICE = "unknown_device"
    #: host: DEVADD for a device id already known
    DUPLICATE_DEVICE = "duplicate_device"
    #: a limit of ``ContainerLimits`` / ``BusConfig`` was reached
    LIMIT = "limit"
    #: board: a handle the container never issued (or already closed)
    UNKNOWN_HANDLE = "unknown_handle"
    #: host: a handle in a reply that does not match the request
    BAD_HANDLE = "bad_handle"
    #: host: a reply to no pending request
    UNKNOWN_CALL = "unknown_call"
    #: a window update or attach beyond the window
    OUT_OF_BOUNDS = "out_of_bounds"
    #: board: SHM_ATTACH of a window id already attached
    WINDOW_EXISTS = "window_exists"
    #: a window id not attached
    UNKNOWN_WINDOW = "unknown_window"
    #: a window update from the side that may not write that window
    WRONG_WRITER = "wrong_writer"
    #: a signal id not attached
    UNKNOWN_SIGNAL = "unknown_signal"


class Stale(enum.Enum):
    """Host: traffic for a window or signal of this session already detached (not refused)."""

    UPDATE = "stale_updates"
    SIGNAL = "stale_signals"


def _flat(stats: ConnectorStatistics | BusStatistics) -> dict[str, int]:
    """The integer fields by name, then refusals, stale traffic and messages sent."""
    flat: dict[str, int] = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, int):
            flat[f.name] = value
    flat["refused"] = stats.refused_total
    flat.update({f"refused_{r.value}": n for r, n in stats.refused.items()})
    if isinstance(stats, BusStatistics):
        flat.update({s.value: n for s, n in stats.stale.items()})
    flat["messages_sent"] = sum(stats.sent.values())
    flat.update({f"sent_{t.__name__}": n for t, n in stats.sent.items()})
    return flat


@dataclass(slots=True)
class ConnectorCounts:
    """The connector's running counters (the core's own; never handed out)."""

    messages_received: int = 0
    opens: int = 0
    opens_refused: int = 0
    calls: int = 0
    calls_failed: int = 0
    replies_too_large: int = 0
    attaches: int = 0
    attaches_refused: int = 0
    window_updates_applied: int = 0


@dataclass(frozen=True, slots=True)
class ConnectorStatistics:
    """A board's bus model since it was created (all sessions), and what it holds now."""

    #: what the container holds now
    devices: int
    handles: int
    windows: int
    window_bytes: int
    signals: int
    #: counters
    messages_received: int
    opens: int
    opens_refused: int
    calls: int
    calls_failed: int
    replies_too_large: int
    #: devices not announced because the host's BUS_LIMITS max_devices was reached
    devices_withheld: int
    attaches: int
    attaches_refused: int
    window_updates_applied: int
    #: refused messages and requests, by reason (reasons never seen are absent)
    refused: Mapping[Refusal, int] = field(default_factory=dict)
    #: messages sent, by wire message class
    sent: Mapping[type, int] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def as_dict(self) -> dict[str, int]:
        """The flat names (see the module docstring)."""
        return _flat(self)


@dataclass(slots=True)
class BusCounts:
    """The host bus's running counters (the core's own; never handed out)."""

    messages_received: int = 0
    calls: int = 0
    calls_completed: int = 0
    late_replies: int = 0
    requests_failed: int = 0
    reset_requests: int = 0
    timeouts: int = 0


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A host's bus model of one link since it was created, and what it holds now."""

    #: what the bus holds now
    devices: int
    handles: int
    windows: int
    pending_requests: int
    #: counters
    messages_received: int
    calls: int
    calls_completed: int
    late_replies: int
    requests_failed: int
    reset_requests: int
    timeouts: int
    #: refused messages, by reason (reasons never seen are absent)
    refused: Mapping[Refusal, int] = field(default_factory=dict)
    #: window updates and signals for windows already detached (dropped, not refused)
    stale: Mapping[Stale, int] = field(default_factory=dict)
    #: messages sent, by wire message class
    sent: Mapping[type, int] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def as_dict(self) -> dict[str, int]:
        """The flat names (see the module docstring)."""
        return _flat(self)
