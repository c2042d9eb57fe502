"""Session state machines of the connector (board) and the bus (host).

Theory of operation
-------------------

Everything that decides *whether a bus message is acceptable now* lives here;
the cores look the answer up and never keep their own flags for it.

A bus session rides on one link session.  The link tells both cores when a
session starts (``SessionStarted``) and when it ends for good
(``PeerRestarted``, ``SessionLost``); ``LinkDown``/``LinkUp`` in between
change nothing here, because the link resends what was not acknowledged.

Board (connector)::

    NO_SESSION --SESSION_STARTED--> AWAITING_HELLO --RECV_HELLO_ACCEPTED--> REGISTERED
                                        |  ^    |                             ^
              RECV_HELLO_REFUSED        +--+    +--RECV_HELLO_ACCEPTED_V3--> AWAITING_LIMITS
              (no common version)                  (bus v3: limits follow)    |
                                                                RECV_LIMITS --+

Host (bus)::

    NO_SESSION --SESSION_STARTED--> REGISTERING --RECV_WELCOME_ACCEPTED--> SYNCING
                                        |                                     |
                                        +--RECV_WELCOME_REFUSED--> REFUSED    RECV_SYNCED
                                                                              v
                                                                            READY

``SESSION_STARTED`` and ``SESSION_ENDED`` are accepted in every state (a new
session resets whatever the old one held).  Any other input that is not in a
table is a peer's protocol violation: the core refuses the message, counts it,
and the state does not change (a hostile or confused peer must not be able to
reset a container).  Local misuse raises ``LocalProtocolError``.
"""

from __future__ import annotations

import enum
from typing import TypeVar


class ConnectorState(enum.Enum):
    NO_SESSION = "no session"
    AWAITING_HELLO = "awaiting hello"
    AWAITING_LIMITS = "awaiting limits"
    REGISTERED = "registered"


class ConnectorInput(enum.Enum):
    SESSION_STARTED = enum.auto()
    SESSION_ENDED = enum.auto()
    RECV_HELLO_ACCEPTED = enum.auto()
    RECV_HELLO_ACCEPTED_V3 = enum.auto()
    RECV_HELLO_REFUSED = enum.auto()
    RECV_LIMITS = enum.auto()


CONNECTOR_TRANSITIONS: dict[tuple[ConnectorState, ConnectorInput], ConnectorState] = {
    (ConnectorState.AWAITING_HELLO, ConnectorInput.RECV_HELLO_ACCEPTED): ConnectorState.REGISTERED,
    (ConnectorState.AWAITING_HELLO, ConnectorInput.RECV_HELLO_ACCEPTED_V3): (
        ConnectorState.AWAITING_LIMITS
    ),
    (ConnectorState.AWAITING_HELLO, ConnectorInput.RECV_HELLO_REFUSED): (
        ConnectorState.AWAITING_HELLO
    ),
    (ConnectorState.AWAITING_LIMITS, ConnectorInput.RECV_LIMITS): ConnectorState.REGISTERED,
}
for _state in ConnectorState:
    CONNECTOR_TRANSITIONS[_state, ConnectorInput.SESSION_STARTED] = ConnectorState.AWAITING_HELLO
    CONNECTOR_TRANSITIONS[_state, ConnectorInput.SESSION_ENDED] = ConnectorState.NO_SESSION


class BusState(enum.Enum):
    NO_SESSION = "no session"
    REGISTERING = "registering"
    REFUSED = "refused"
    SYNCING = "syncing"
    READY = "ready"


class BusInput(enum.Enum):
    SESSION_STARTED = enum.auto()
    SESSION_ENDED = enum.auto()
    RECV_WELCOME_ACCEPTED = enum.auto()
    RECV_WELCOME_REFUSED = enum.auto()
    RECV_SYNCED = enum.auto()


BUS_TRANSITIONS: dict[tuple[BusState, BusInput], BusState] = {
    (BusState.REGISTERING, BusInput.RECV_WELCOME_ACCEPTED): BusState.SYNCING,
    (BusState.REGISTERING, BusInput.RECV_WELCOME_REFUSED): BusState.REFUSED,
    (BusState.SYNCING, BusInput.RECV_SYNCED): BusState.READY,
}
for _bus_state in BusState:
    BUS_TRANSITIONS[_bus_state, BusInput.SESSION_STARTED] = BusState.REGISTERING
    BUS_TRANSITIONS[_bus_state, BusInput.SESSION_ENDED] = BusState.NO_SESSION

#: host states in which DEVADD/DEVDROP are accepted
BUS_DISCOVERING = frozenset({BusState.SYNCING, BusState.READY})

S = TypeVar("S", bound=enum.Enum)
I = TypeVar("I", bound=enum.Enum)  # noqa: E741


def next_state(table: dict[tuple[S, I], S], state: S, event: I) -> S | None:
    """The state after ``event``, or None when the table does not allow it."""
    return table.get((state, event))
