"""The steps of a binding's DEVCALL sequences and how their replies are read.

A sequence (``ira.virtio.binding``) is a generator: it yields a ``Step`` (a
DEVCALL or a window to attach) and is resumed with its ``Outcome``
(``ira.virtio.runner`` runs it over the bus).  The readers below decode a
reply's payload or end the sequence with ``InitFailed`` (a negative status, a
malformed payload), which says why.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from ira.busmodel.window import Window
from ira.errors import RemoteProtocolError
from ira.virtio.calls import FeaturesReply, QueueMaxReply, Reply, Request, StatusReply, decode_reply


@dataclass(frozen=True, slots=True)
class Call:
    """A DEVCALL to make."""

    request: Request


@dataclass(frozen=True, slots=True)
class Attach:
    """A window to attach as ``shm_id`` (with a signal, or not)."""

    shm_id: int
    window: Window
    signal: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a step ended: a DEVCALL's status and payload (0 and nothing for an attach)."""

    status: int
    payload: bytes
    #: the function of the call answered (None: an attach)
    func: int | None = None


Step = Call | Attach
Steps = Generator[Step, Outcome, None]


class InitFailed(Exception):
    """Initialisation gave up; the message says why."""


class ResetNeeded(InitFailed):
    """The device set DEVICE_NEEDS_RESET during initialisation."""


def decoded(outcome: Outcome, what: str) -> Reply:
    """The decoded reply payload; gives up on a negative status or a malformed payload."""
    if outcome.status < 0:
        raise InitFailed(f"{what}: status {outcome.status}")
    assert outcome.func is not None
    try:
        return decode_reply(outcome.func, outcome.payload)
    except RemoteProtocolError as exc:
        raise InitFailed(f"{what}: {exc}") from None


def status_of(outcome: Outcome, what: str) -> int:
    """The device status in a SET_STATUS or GET_STATUS reply."""
    reply = decoded(outcome, what)
    assert isinstance(reply, StatusReply)
    return reply.status


def features_of(outcome: Outcome, what: str) -> int:
    """The 32 feature bits in a features reply."""
    reply = decoded(outcome, what)
    assert isinstance(reply, FeaturesReply)
    return reply.bits


def queue_max_of(outcome: Outcome, what: str) -> int:
    """The largest size of a queue, in a QUEUE_MAX reply."""
    reply = decoded(outcome, what)
    assert isinstance(reply, QueueMaxReply)
    return reply.size
