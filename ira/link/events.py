"""Events the link core reports to the layer above (bus model, linktest).

Read them with ``Link.next_event()``.  Past-tense names; frozen dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Channel(enum.IntEnum):
    """Scheduling class of a message (DESIGN §3 *Scheduling*).

    Among frames not yet sent, CONTROL goes ahead of BULK; a BULK message is
    cut into frames so that CONTROL never waits behind more than one frame.
    Within one channel, messages are delivered exactly once and in order.
    """

    CONTROL = 0
    BULK = 1


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The handshake completed with a peer seen for the first time (or after a restart)."""

    local_epoch: int
    peer_epoch: int
    features: int
    max_frame_bytes: int
    version: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One whole message from the peer, delivered exactly once and in order per channel."""

    channel: Channel
    payload: bytes


@dataclass(frozen=True, slots=True)
class LinkDown:
    """No traffic from the peer for the dead interval; the session is kept for resumption."""

    silent_s: float


@dataclass(frozen=True, slots=True)
class LinkUp:
    """Traffic from the same peer epoch again after ``LinkDown``; unacked frames are resent."""

    down_s: float


@dataclass(frozen=True, slots=True)
class PeerRestarted:
    """The peer came back with a new epoch: the old session is gone.

    Every message not yet acknowledged by the old peer is discarded (it may or may
    not have been delivered); ``SessionStarted`` for the new session follows.
    """

    old_epoch: int
    new_epoch: int
    discarded_messages: int


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The session was torn down: the peer stayed silent past the session timeout, or
    broke the protocol within the session (``reason`` says which).

    This end takes a new epoch and keeps offering a new handshake; a peer that
    answers starts a new session.
    """

    peer_epoch: int
    discarded_messages: int
    reason: str = "silent past the session timeout"


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """Frames failed the pre-shared key's check (rate-limited: the first at once,
    then at most one report every ``ira.link.auth.REPORT_INTERVAL_S``)."""

    reason: str
    #: frames refused since the last report
    refused: int


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """A HELLO could not be accepted and no session started.

    ``by_peer`` False: the peer's HELLO broke a rule and this end answered it with
    HELLO_REFUSED; True: the peer refused ours.  ``reason`` is the ``Refusal``
    code, ``detail`` says what to fix; the handshake goes on with its backoff.
    """

    by_peer: bool
    reason: int
    detail: str
    peer_version_min: int
    peer_version_max: int


LinkEvent = (
    SessionStarted
    | MessageReceived
    | LinkDown
    | LinkUp
    | PeerRestarted
    | SessionLost
    | HandshakeRefused
    | AuthRefused
)
