"""A link end's counters and the statistics it hands out (``Link.statistics()``).

The core counts into ``Counters`` (an attribute increment per frame); ``collect``
puts them together with the halves' counters and the sender's estimates into one
frozen ``LinkStatistics``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ira.link.framing import StreamDeframer
from ira.link.receiver import ReceiverStatistics
from ira.link.sender import Sender, SenderStatistics


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """Counters of one link end since it was created (all sessions)."""

    state: str
    local_epoch: int
    peer_epoch: int | None
    sessions: int
    peer_restarts: int
    sessions_lost: int
    link_downs: int
    frames_sent: int
    frames_received: int
    wire_bytes_sent: int
    wire_bytes_received: int
    messages_queued: int
    messages_acked: int
    messages_delivered: int
    payload_bytes_sent: int
    payload_bytes_received: int
    segments_sent: int
    segments_retransmitted: int
    bytes_retransmitted: int
    retransmission_timeouts: int
    messages_discarded: int
    #: frames and bytes dropped, by reason
    drop_bad_crc: int
    drop_malformed: int
    drop_duplicate: int
    drop_out_of_window: int
    drop_oversize: int
    drop_stale: int
    drop_oversize_messages: int
    #: frames whose MAC did not verify, or from a peer without the key (Feature.AUTH)
    drop_unauthenticated: int
    #: DATA on a channel this end does not know: acknowledged, bytes discarded
    drop_unknown_channel: int
    #: HELLOs this end refused (answered with HELLO_REFUSED)
    hellos_refused: int
    #: HELLO_REFUSED answers to our HELLOs
    refused_by_peer: int
    #: sessions this end reset because the peer broke the protocol within them
    session_resets: int
    srtt_s: float | None
    rto_s: float | None
    bandwidth_bytes_per_s: float | None
    segment_bytes: int | None
    cwnd_bytes: int | None
    #: tail-loss probes sent (version 2)
    tail_probes: int = 0
    #: stand-alone ACK frames sent (keepalives and probes included)
    ack_frames_sent: int = 0
    #: retransmission timeouts found spurious (the first transmission was acknowledged)
    spurious_timeouts: int = 0
    #: lone small tails sent twice on a noisy line (version 2)
    tail_copies: int = 0

    @property
    def drops(self) -> dict[str, int]:
        return {
            "bad_crc": self.drop_bad_crc,
            "malformed": self.drop_malformed,
            "duplicate": self.drop_duplicate,
            "out_of_window": self.drop_out_of_window,
            "oversize": self.drop_oversize,
            "stale": self.drop_stale,
            "oversize_message": self.drop_oversize_messages,
            "unauthenticated": self.drop_unauthenticated,
            "unknown_channel": self.drop_unknown_channel,
            "refused_hello": self.hellos_refused,
        }


@dataclass(slots=True)
class Counters:
    """The core's own counters (the halves keep theirs: ``SenderStatistics``,
    ``ReceiverStatistics``)."""

    sessions: int = 0
    peer_restarts: int = 0
    sessions_lost: int = 0
    link_downs: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    wire_bytes_sent: int = 0
    wire_bytes_received: int = 0
    messages_discarded: int = 0
    bad_crc: int = 0
    oversize_packets: int = 0
    malformed: int = 0
    stale: int = 0
    unknown_channel: int = 0
    hellos_refused: int = 0
    refused_by_peer: int = 0
    session_resets: int = 0
    ack_frames_sent: int = 0


def collect(
    state: str,
    epoch: int,
    peer_epoch: int | None,
    c: Counters,
    s: SenderStatistics,
    r: ReceiverStatistics,
    sender: Sender | None,
    deframer: StreamDeframer | None,
    unauthenticated: int,
) -> LinkStatistics:
    """One link end's statistics from its counters."""
    return LinkStatistics(
        state=state,
        local_epoch=epoch,
        peer_epoch=peer_epoch,
        sessions=c.sessions,
        peer_restarts=c.peer_restarts,
        sessions_lost=c.sessions_lost,
        link_downs=c.link_downs,
        frames_sent=c.frames_sent,
        frames_received=c.frames_received,
        wire_bytes_sent=c.wire_bytes_sent,
        wire_bytes_received=c.wire_bytes_received,
        messages_queued=s.messages_queued,
        messages_acked=s.messages_acked,
        messages_delivered=r.messages_delivered,
        payload_bytes_sent=s.payload_bytes_sent,
        payload_bytes_received=r.payload_bytes_received,
        segments_sent=s.segments_sent,
        segments_retransmitted=s.segments_retransmitted,
        bytes_retransmitted=s.bytes_retransmitted,
        retransmission_timeouts=s.timeouts,
        messages_discarded=c.messages_discarded,
        drop_bad_crc=c.bad_crc,
        drop_malformed=c.malformed + (deframer.stats.malformed if deframer else 0),
        drop_duplicate=r.duplicate,
        drop_out_of_window=r.out_of_window,
        drop_oversize=c.oversize_packets + (deframer.stats.oversize if deframer else 0),
        drop_stale=c.stale,
        drop_oversize_messages=r.oversize_messages,
        drop_unauthenticated=unauthenticated,
        drop_unknown_channel=c.unknown_channel,
        hellos_refused=c.hellos_refused,
        refused_by_peer=c.refused_by_peer,
        session_resets=c.session_resets,
        srtt_s=sender.srtt if sender else None,
        rto_s=sender.rto if sender else None,
        bandwidth_bytes_per_s=sender.bandwidth if sender else None,
        segment_bytes=sender.segment_bytes if sender else None,
        cwnd_bytes=sender.cwnd if sender else None,
        tail_probes=s.tail_probes,
        ack_frames_sent=c.ack_frames_sent,
        spurious_timeouts=s.spurious_timeouts,
        tail_copies=s.tail_copies,
    )
