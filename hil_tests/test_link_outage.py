"""A 2 s unplug in the middle of a transfer: the link goes down, comes back, loses nothing.

The cable is pulled (both directions silenced, what is on the wire lost)
while A is pushing messages to B; 2 s is longer than the dead interval, so
both ends report ``LinkDown`` and then ``LinkUp``, and the same session
resumes: every message arrives intact, in order, exactly once, with no
``PeerRestarted`` or ``SessionLost``.  Virtual null-modem only.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from rig import LINK_CONFIG, Rig

from ira.link.events import (
    Channel,
    LinkDown,
    LinkEvent,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.runtime.link import LinkRuntime
from ira.tools.linktest import MessageSource, Verdict, check
from ira.transports import open_transport

KIB = 1 << 10
MIB = 1 << 20
UNPLUG_S = 2.0
#: A keeps at most this many bytes queued beyond what B has received
AHEAD_BYTES = 1 * MIB


@dataclass
class Outcome:
    verdict: Verdict = field(default_factory=Verdict)
    finished: bool = False
    unplugs: int = 0
    events_a: list[LinkEvent] = field(default_factory=list)
    events_b: list[LinkEvent] = field(default_factory=list)


def _drain(runtime: LinkRuntime) -> list[LinkEvent]:
    """The events the runtime has queued for its caller."""
    out = []
    while (event := runtime.next_event(0)) is not None:
        out.append(event)
    return out


def push_with_unplugs(rig: Rig, total: int, unplug_at: list[int]) -> Outcome:
    """Push ``total`` bytes A -> B; pull the cable when B has received each of ``unplug_at``.

    The next unplug waits until B reported the link up again after the last.
    """
    source = MessageSource(rig.seed, (1, 64 * KIB))
    outcome = Outcome()
    verdict = outcome.verdict
    points = sorted(unplug_at)
    down = False  # an unplug is in progress or the link has not come back from it
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(LinkRuntime(open_transport(rig.link_a), LINK_CONFIG))
        b = stack.enter_context(LinkRuntime(open_transport(rig.link_b), LINK_CONFIG))
        outgoing = source.messages(total)
        queued = 0
        deadline = time.monotonic() + rig.transfer_timeout_s(total) + len(points) * 10.0
        while time.monotonic() < deadline:
            while not outcome.finished and queued - verdict.bytes_received < AHEAD_BYTES:
                msg = next(outgoing, None)
                if msg is None:
                    outcome.finished = True
                    break
                verdict.messages_expected += 1
                queued += len(msg)
                a.send(msg, Channel.BULK)
            if outcome.finished and verdict.messages_received >= verdict.messages_expected:
                break
            if points and not down and verdict.bytes_received >= points[0]:
                points.pop(0)
                rig.unplug(UNPLUG_S)
                outcome.unplugs += 1
                down = True
            event = b.next_event(0.1)
            if isinstance(event, MessageReceived):
                check(event.payload, source, verdict)
            elif event is not None:
                outcome.events_b.append(event)
                if isinstance(event, LinkUp):
                    down = False
            a.raise_if_failed()
        outcome.events_a = _drain(a)
    return outcome


def _names(events: list[LinkEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_unplug_mid_transfer_resumes_with_nothing_lost_or_doubled(rig: Rig) -> None:
    modem = rig.require_virtual("pulling the cable on cue")
    if rig.variant.long:
        total, unplugs = rig.bytes_for(300.0, 16 * MIB), 5
    elif rig.variant.noisy:
        total, unplugs = 128 * KIB, 1
    else:
        total, unplugs = rig.bytes_for(10.0, 4 * MIB), 1
    points = [total * (k + 1) // (unplugs + 1) for k in range(unplugs)]

    outcome = push_with_unplugs(rig, total, points)

    v = outcome.verdict
    where = f"seed {rig.seed}, B saw {_names(outcome.events_b)}, A saw {_names(outcome.events_a)}"
    assert outcome.unplugs == unplugs, f"the transfer ended before every unplug; {where}"
    assert modem.statistics().unplugs == unplugs
    assert v.corrupt == 0 and v.out_of_order == 0 and v.duplicates == 0, f"{v}; {where}"
    assert outcome.finished and v.messages_received == v.messages_expected, f"{v}; {where}"
    for events in (outcome.events_a, outcome.events_b):
        assert not [e for e in events if isinstance(e, PeerRestarted | SessionLost)], where
        assert sum(isinstance(e, SessionStarted) for e in events) == 1, where
        downs = [e for e in events if isinstance(e, LinkDown)]
        ups = [e for e in events if isinstance(e, LinkUp)]
        assert len(downs) >= unplugs and len(ups) == len(downs), where
