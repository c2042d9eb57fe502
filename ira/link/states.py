"""The link session's state machine, as data the link core runs from.

Theory of operation
-------------------
A link end is in ``HANDSHAKE`` until a HELLO or HELLO_ACK starts a session
(``SESSION_STARTED``: from a new epoch, or the first one), then ``UP``.
Silence for the dead interval moves it to ``DOWN``; any valid frame of the
session (``FRAME_OF_SESSION``) brings it back to ``UP``.  ``DOWN`` for the
session timeout ends the session (``SESSION_TIMED_OUT``): the end takes a new
epoch and shakes hands again.  A HELLO from a new epoch in ``UP`` or ``DOWN``
means the peer restarted: the old session is dropped and a new one starts at
once (``SESSION_STARTED`` again).  A CRC-valid frame of the session that
breaks the protocol (``PROTOCOL_VIOLATED``: a message length prefix past five
bytes, or the layer above finding the peer's messages broken) resets the
session as a timeout does: a new epoch, a new handshake.  ``CLOSED`` is final:
the layer above closed the link.

The table is complete: a pair that is not in it is a bug of the core, which
``step`` reports by raising ``LocalProtocolError``.  docs/PROTOCOL.md prints
this table as it is.
"""

from __future__ import annotations

import enum

from ira.errors import LocalProtocolError


class LinkState(enum.Enum):
    """The state of one link end."""

    HANDSHAKE = "handshake"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


class LinkInput(enum.Enum):
    """What moves a link end from one state to another."""

    #: a valid HELLO or HELLO_ACK from an epoch other than the session's (or the first)
    SESSION_STARTED = enum.auto()
    #: a valid frame of the current session (right tag, or a HELLO of the known epoch)
    FRAME_OF_SESSION = enum.auto()
    #: no valid frame of the session for the dead interval
    DEAD_INTERVAL_SILENT = enum.auto()
    #: the transport went away (the runtime reopens it; the session is kept)
    TRANSPORT_LOST = enum.auto()
    #: down for the session timeout
    SESSION_TIMED_OUT = enum.auto()
    #: a CRC-valid frame of the session that breaks the protocol (the session cannot be
    #: trusted: it is reset)
    PROTOCOL_VIOLATED = enum.auto()
    #: the layer above closed the link
    CLOSE = enum.auto()


_S, _I = LinkState, LinkInput

LINK_TRANSITIONS: dict[tuple[LinkState, LinkInput], LinkState] = {
    (_S.HANDSHAKE, _I.SESSION_STARTED): _S.UP,
    (_S.UP, _I.SESSION_STARTED): _S.UP,
    (_S.UP, _I.FRAME_OF_SESSION): _S.UP,
    (_S.UP, _I.DEAD_INTERVAL_SILENT): _S.DOWN,
    (_S.UP, _I.TRANSPORT_LOST): _S.DOWN,
    (_S.DOWN, _I.SESSION_STARTED): _S.UP,
    (_S.DOWN, _I.FRAME_OF_SESSION): _S.UP,
    (_S.DOWN, _I.SESSION_TIMED_OUT): _S.HANDSHAKE,
    (_S.UP, _I.PROTOCOL_VIOLATED): _S.HANDSHAKE,
    (_S.DOWN, _I.PROTOCOL_VIOLATED): _S.HANDSHAKE,
}
for _state in (_S.HANDSHAKE, _S.UP, _S.DOWN, _S.CLOSED):
    LINK_TRANSITIONS[_state, _I.CLOSE] = _S.CLOSED


def step(state: LinkState, event: LinkInput) -> LinkState:
    """The state after ``event``; ``LocalProtocolError`` if the table does not allow it."""
    after = LINK_TRANSITIONS.get((state, event))
    if after is None:
        raise LocalProtocolError(f"link: {event.name} in state {state.name}")
    return after
