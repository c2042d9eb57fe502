"""The tail-loss probe of link protocol version 2 (sans-I/O; RFC 8985 §7 is the model).

Theory of operation
-------------------
Loss is found from later frames: the peer's ``held`` bitmap and SACK ranges show
a gap as soon as a frame sent after the lost one arrives.  The last frames of a
burst have no later frame — a lone DEVCALL, the reply to a ping — so before
this their loss was left to the retransmission timer, which waits at least
twice the smoothed RTT plus the line time of what is in flight, and doubles
with every further timeout.

A *probe timer* (PTO) covers that tail on a line that loses frames (the
``held`` bitmaps show ``NOISY_LOSS_SHARE`` of transmissions lost; on a clean
line a late ACK is far more likely queued behind a bulk flow the other way
than lost, and a probe would be a duplicate).  It is armed when nothing is queued
behind what is in flight and that is a few bytes (``TAIL_PROBE_MAX_BYTES`` in
``ira.link.sender``: a lone small segment; a bulk flow keeps finding its losses
from later frames, and its big frames take longer on the line than the round
trip of small ones), at

    PTO = max(1.5 * SRTT, SRTT + 4 * RTTVAR) + the peer's ack delay

(RFC 8985 §7.2: 2·SRTT — here 1.5, because such a tail goes twice on a noisy
line, see below, and a needless probe costs one small frame — plus the
delayed-ACK allowance when one segment is in flight; the allowance always, as a
tail is usually one segment; and the RTO's variance term, because an ACK that
queues behind a bulk flow the other way varies by the line time of that queue,
and a probe sent before it arrives is a duplicate).  No line-time allowance,
unlike the retransmission timer's: a tail is short, its round trip
is in SRTT, and the delivery rate a sparse flow measures is far below the line's.

Where a frame is lost about as often as not, a probe only shortens each round;
the rounds themselves get fewer when the tail goes twice: ``ira.link.sender``
writes a lone small tail (the same condition) as the same transmission twice,
back to back, so that it is lost only when both copies are (0.73² against 0.73
for a 120-byte frame at one byte in 90 spoiled).  The receiver takes the second
as a duplicate.

When it fires before any acknowledgement, the newest segment in flight
is sent again — the probe — without halving the segment size or backing the
timer off: one lost frame costs about a round trip, and the peer's answer to
the probe (its ``held`` bitmap) shows any other loss at once.  One probe per
round: then the retransmission timer, after which the probe is armed again.

On a noisy line the retransmission timer also backs off only when the peer
went silent: a frame of the session heard within ``alive_s`` (two of the
peer's keepalive intervals) while the ``held`` bitmaps show the line losing
frames (``NOISY_LOSS_SHARE``) means the losses are noise, which more waiting
does not cure.  On a clean line a timeout is more likely an ACK queued behind
bulk data, and the backoff stays.  (What a timeout resends is as
before: everything overdue the first time, the oldest segment alone after.)
"""

from __future__ import annotations

from dataclasses import dataclass

#: the probe timer never fires sooner than this after the last transmission
MIN_PTO_S = 0.01
#: the probe timer's floor in smoothed RTTs (RFC 8985 §7.2 has 2: here a lone tail on a
#: noisy line goes twice, ``ira.link.sender``, and a needless probe costs a small frame)
PTO_SRTT_FACTOR = 1.5
#: the share of transmissions lost (from the held bitmaps) above which a line is noisy
NOISY_LOSS_SHARE = 0.05


@dataclass(slots=True)
class TailProbe:
    """One session's probe timer (see the module docstring)."""

    #: the peer's largest ack delay: what a lone segment's ACK may wait at the peer
    peer_ack_delay_s: float
    #: the peer counts as alive this long after its last frame (no timer backoff)
    alive_s: float
    #: when the probe fires (None: not armed)
    deadline: float | None = None
    #: a probe went in this episode (cleared by progress)
    probed: bool = False
    #: when the last frame of the session arrived
    heard_at: float = 0.0
    #: probes sent
    probes: int = 0

    def arm(
        self, now: float, srtt: float | None, rttvar: float, rto_deadline: float | None
    ) -> None:
        """(Re)arm after a transmission or progress: the pipe holds a tail with
        nothing queued behind it."""
        if self.probed or srtt is None:
            self.deadline = None
            return
        spread = 4 * rttvar
        floor = PTO_SRTT_FACTOR * srtt
        pto = (srtt + spread if srtt + spread > floor else floor) + self.peer_ack_delay_s
        at = now + (pto if pto > MIN_PTO_S else MIN_PTO_S)
        # the retransmission timer firing first makes the probe needless
        self.deadline = at if rto_deadline is None or at < rto_deadline else None

    def heard(self, now: float) -> None:
        self.heard_at = now

    def noise(self, now: float, loss_share: float) -> bool:
        """The peer was heard recently on a line that loses frames: a timeout is
        noise, not silence or a queue (no backoff)."""
        return loss_share >= NOISY_LOSS_SHARE and now - self.heard_at <= self.alive_s

    def progressed(self) -> None:
        """An acknowledgement made progress, or the retransmission timer fired: a new
        round, which may have its probe."""
        self.probed = False

    def fired(self) -> None:
        self.deadline = None
        self.probed = True
        self.probes += 1
