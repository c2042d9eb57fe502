"""A link's port as it comes and goes: how to (re)open it, its state, its events.

A link runtime given a ``TransportOpener`` owns a way to open its transport,
not an open transport.  When the transport raises ``PortGone`` (hang-up, EIO,
ENODEV, the path vanished) the runtime closes it, tells the link core
(``Link.transport_lost``: the link is down at once, the session is kept) and
calls the opener again after ``REOPEN_FIRST_S``, doubling to ``REOPEN_MAX_S``
-- or at once when the opener's ``PortWatch`` says the port is there again (a
hotplug event, a path made, a USB gadget configured) -- until it succeeds, an
error a reopen cannot cure comes up (permission denied, not a tty: the runtime
stops with it), or ``give_up_after_s`` passed.  A port
that is not there when the runtime starts is waited for the same way.  The
state (``PortState``) can be read from any thread; the transitions
(``PortEvent``) are reported on the thread that runs the cores, before the
link events they cause.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ira.transports import open_transport, scheme_of
from ira.transports.base import PortWatch, Transport

#: first wait before reopening a port that went away; doubles up to ``REOPEN_MAX_S``
REOPEN_FIRST_S = 0.1
REOPEN_MAX_S = 2.0
#: after a watch's event, how long and how often the runtime asks it whether the
#: port is there (udev makes names and grants access shortly after the kernel's event)
HINT_WINDOW_S = 2.0
HINT_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class TransportOpener:
    """A way to open a link's transport, again after it went away.

    ``open`` is called at each (re)open: a spec that is a symlink
    (``/dev/serial/by-id/...``) is resolved again each time.
    """

    #: the link spec, for logs and error messages
    name: str
    open: Callable[[], Transport]
    #: a hint that the port is back, made when it went away (``PortWatch``); None:
    #: the backoff alone
    watch: Callable[[], PortWatch | None] | None = None
    #: releases what the opener keeps across reopens (a USB gadget); called once,
    #: when the runtime stops
    release: Callable[[], None] | None = None

    @classmethod
    def for_spec(cls, spec: str) -> TransportOpener:
        if scheme_of(spec) == "ffs":
            # the gadget is made once and kept while the host comes and goes
            from ira.transports.ffs import FfsPort

            port = FfsPort(spec)
            return cls(spec, port.open, port.watch, port.close)
        from ira.transports.hotplug import watch_for

        return cls(spec, lambda: open_transport(spec), lambda: watch_for(spec))


class PortStatus(enum.Enum):
    #: the transport is open
    UP = "up"
    #: it went away (hang-up, EIO, ENODEV, the path vanished); being reopened
    DOWN = "down"
    #: it was not there when the runtime started; waiting for it to appear
    WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class PortState:
    """Whether a runtime's transport is open, since when (monotonic seconds), and why not."""

    status: PortStatus
    since: float
    #: why it is down or waited for (the transport's error), else None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PortLost:
    """The transport went away; the link is down and the port is being reopened."""

    reason: str


@dataclass(frozen=True, slots=True)
class PortWaiting:
    """The port was not there when the runtime started; it is opened when it appears."""

    reason: str


@dataclass(frozen=True, slots=True)
class PortBack:
    """The port was opened again after ``down_s`` seconds gone (or waited for)."""

    down_s: float


PortEvent = PortLost | PortWaiting | PortBack
