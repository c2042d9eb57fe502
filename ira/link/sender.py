"""The sending half of a link session: segments, acks, loss recovery, pacing (sans-I/O).

Theory of operation
-------------------
Each channel (CONTROL, BULK) is a byte stream of length-prefixed messages.
Segments are cut from those streams *when they are first sent*, control first,
and numbered in one link-wide byte sequence space (like TCP, so a lost segment
can be cut again into smaller pieces when the line turns noisy: a big frame on
a line that drops one byte in a hundred would otherwise never get through).

Acknowledgement is cumulative plus selective (SACK ranges).  Serial and USB
links never reorder, so loss detection is RACK with a zero reordering window:
a segment still unacknowledged when one sent after it is acknowledged is lost
and queued for retransmission at once.  A retransmission timer (RFC 6298
estimator, Karn's rule, exponential backoff) covers a lost tail.

How much is in flight is bounded by the peer's window and by a congestion
window of twice the measured bandwidth-delay product (a per-segment delivery
rate, as in BBR, and the minimum RTT), so that no standing queue builds up in
the transport, the kernel or a slow line.  Segment size follows the line: it
halves when segments are lost, doubles after clean deliveries, and is capped
to ``frame_latency_s`` worth of the measured rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ira.link.config import LinkConfig
from ira.link.events import Channel
from ira.link.framing import encode_varint

#: the first segments, before the line rate is known
INITIAL_SEGMENT_BYTES = 256
INITIAL_CWND_SEGMENTS = 4
#: the retransmission timer backs off at most this many times over: a serial line has
#: no competing flows to make room for, and losses there are noise, not congestion
MAX_BACKOFF = 4
CWND_FLOOR_S = 0.05
#: line rate assumed for timer allowances before one is measured (9600 baud)
UNKNOWN_RATE_BYTES_PER_S = 960.0
LOSS_SHARE_GAIN = 1 / 16
#: transmissions covered by the ``held`` bitmap of an ACK
HELD_BITS = 64
#: noise costs goodput, not line rate: keep enough in flight that a burst of losses
#: is found from the ACKs of later frames rather than by the timer
CWND_FLOOR_BYTES = 2048
#: the bandwidth and minimum-RTT filters forget samples older than about this
BW_WINDOW_S = 1.0
MIN_RTT_WINDOW_S = 10.0


@dataclass(slots=True, eq=False)
class Segment:
    seq: int
    channel: Channel
    #: offset of the first payload byte in its channel's stream
    chan_start: int
    payload: bytes
    sent_at: float = 0.0
    #: order of the last transmission among all transmissions (frames sent together share a time)
    tx_order: int = 0
    #: bytes in flight ahead of this segment when it was sent (it waits behind them)
    ahead_bytes: int = 0
    #: bytes that had passed the line (delivered or lost), and when, as this segment was sent
    delivered_at_send: int = 0
    delivered_time_at_send: float = 0.0
    retransmitted: bool = False
    sacked: bool = False
    lost: bool = False

    @property
    def end(self) -> int:
        return self.seq + len(self.payload)


@dataclass(slots=True)
class _WindowedExtreme:
    """Max (or min) over roughly the last ``window_s`` seconds, in two buckets."""

    window_s: float
    want_max: bool
    current: float | None = None
    previous: float | None = None
    bucket_start: float = 0.0

    def update(self, value: float, now: float) -> None:
        if now - self.bucket_start >= self.window_s:
            self.previous, self.current, self.bucket_start = self.current, None, now
        if self.current is None or (value > self.current) == self.want_max:
            self.current = value

    def value(self) -> float | None:
        current, previous = self.current, self.previous
        if current is None:
            return previous
        if previous is None:
            return current
        if self.want_max:
            return current if current > previous else previous
        return current if current < previous else previous


@dataclass(slots=True)
class SenderStatistics:
    messages_queued: int = 0
    messages_acked: int = 0
    segments_sent: int = 0
    segments_retransmitted: int = 0
    bytes_retransmitted: int = 0
    payload_bytes_sent: int = 0
    timeouts: int = 0


@dataclass(slots=True)
class _ChannelQueue:
    chunks: deque[bytes] = field(default_factory=deque)
    #: offset into chunks[0] of the next unsent byte
    head_offset: int = 0
    queued_bytes: int = 0
    #: channel-stream offset of the next byte to segment
    next_offset: int = 0
    #: channel-stream offset up to which the peer acknowledged everything
    acked_offset: int = 0
    #: channel-stream end offsets of messages not yet fully acknowledged
    message_ends: deque[int] = field(default_factory=deque)
    total_offset: int = 0


class Sender:
    def __init__(
        self,
        config: LinkConfig,
        peer_max_payload: int,
        peer_window_bytes: int,
        stats: SenderStatistics | None = None,
    ) -> None:
        self._config = config
        self._max_payload = max(1, peer_max_payload)
        self._queues = {ch: _ChannelQueue() for ch in Channel}
        self._control = self._queues[Channel.CONTROL]
        self._bulk = self._queues[Channel.BULK]
        self._inflight: deque[Segment] = deque()
        self._lost: deque[Segment] = deque()
        self.snd_una = 0
        self.snd_nxt = 0
        #: the peer accepts sequence numbers below this
        self.peer_right_edge = peer_window_bytes
        #: bytes of unacked, un-SACKed, not-lost segments: what is in the pipe
        self.pipe_bytes = 0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = config.rto_initial_s
        self._backoff = 1
        self.rto_deadline: float | None = None
        self._tx_counter = 0
        #: moving share of transmissions the line spoiled (from the held bitmaps)
        self._loss_share = 0.0
        self._latest_rtt = 0.0
        self._delivered = 0
        self._delivered_time = 0.0
        self._bw = _WindowedExtreme(BW_WINDOW_S, want_max=True)
        self._min_rtt = _WindowedExtreme(MIN_RTT_WINDOW_S, want_max=False)
        self._loss_segment = min(INITIAL_SEGMENT_BYTES, self._max_payload)
        self._clean_bytes = 0
        self._last_loss_time = -1e9
        self.stats = stats if stats is not None else SenderStatistics()

    # --- queueing -------------------------------------------------------------

    def enqueue(self, channel: Channel, payload: bytes) -> None:
        q = self._queues[channel]
        chunk = encode_varint(len(payload)) + payload
        q.chunks.append(chunk)
        q.queued_bytes += len(chunk)
        q.total_offset += len(chunk)
        q.message_ends.append(q.total_offset)
        self.stats.messages_queued += 1

    def inherit_rtt(self, previous: Sender) -> None:
        """Start from the round-trip estimate of an earlier session on the same line
        (a restarted peer), so the first losses are not left to the initial timer."""
        if previous.srtt is not None:
            self.srtt, self.rttvar = previous.srtt, previous.rttvar
            self._min_rtt = previous._min_rtt
            self.rto = self._rto_value()

    def seed_rtt(self, sample: float) -> None:
        """A round trip measured before the session had data (the handshake)."""
        if self.srtt is None:
            self._update_rtt(sample)
            self.rto = self._rto_value()

    def unwrap_tx(self, wire: int) -> int:
        """The transmission number whose low 16 bits are ``wire``, at most the latest."""
        return self._tx_counter - ((self._tx_counter - wire) & 0xFFFF)

    def unacked_messages(self) -> int:
        return sum(len(q.message_ends) for q in self._queues.values())

    def queued_bytes(self) -> int:
        return sum(q.queued_bytes for q in self._queues.values())

    def has_outstanding(self) -> bool:
        return bool(self._inflight)

    # --- pacing ---------------------------------------------------------------

    @property
    def bandwidth(self) -> float | None:
        """Measured delivery rate, bytes per second."""
        return self._bw.value()

    @property
    def min_rtt(self) -> float | None:
        return self._min_rtt.value()

    @property
    def segment_bytes(self) -> int:
        size = self._loss_segment
        bw = self._bw.value()
        if bw is not None:
            size = min(size, max(256, int(bw * self._config.frame_latency_s)))
        return max(min(self._config.min_segment_bytes, self._max_payload), size)

    @property
    def cwnd(self) -> int:
        seg = self.segment_bytes
        bw, rtt = self._bw.value(), self._min_rtt.value()
        if bw is None or rtt is None:
            return INITIAL_CWND_SEGMENTS * seg
        # on a noisy line small frames and lost acks need more in flight than the
        # bandwidth-delay product of the fastest round trip: keep a floor of
        # CWND_FLOOR_S of the line rate
        floor = max(INITIAL_CWND_SEGMENTS * seg, int(bw * CWND_FLOOR_S), CWND_FLOOR_BYTES)
        return max(floor, int(2 * bw * rtt) + seg)

    # --- producing segments -----------------------------------------------------

    def segments_to_send(self, now: float) -> list[Segment]:
        """Segments to put on the wire now: lost ones first, then new data, control first."""
        if not self._lost and not self._control.queued_bytes and not self._bulk.queued_bytes:
            return []
        out: list[Segment] = []
        seg_size = self.segment_bytes
        cwnd = self.cwnd
        # lost segments go out at once, whatever the window: losses are found exactly
        # (by echo), a serial link has no competing flows to protect, and segments
        # the peer holds above a truncated SACK list would otherwise fill the pipe
        while self._lost:
            seg = self._lost.popleft()
            if seg.sacked or seg.end <= self.snd_una:
                continue
            pieces = self._split(seg, seg_size)
            for piece in pieces:
                self._transmit(piece, now, retransmission=True)
                out.append(piece)
        while True:
            room = min(cwnd - self.pipe_bytes, self.peer_right_edge - self.snd_nxt)
            if room <= 0:
                break
            channel = self._next_channel()
            if channel is None:
                break
            if room < seg_size and self.pipe_bytes and self._queues[channel].queued_bytes > room:
                # silly-window avoidance: a runt frame costs its whole header; wait for
                # the ACK that opens room for a full one (something is in flight)
                break
            seg = self._cut(channel, min(seg_size, room))
            self.snd_nxt = seg.end
            self._inflight.append(seg)
            self._transmit(seg, now, retransmission=False)
            out.append(seg)
        if out and self.rto_deadline is None:
            self.rto_deadline = now + self.rto
        return out

    def _next_channel(self) -> Channel | None:
        if self._control.queued_bytes:
            return Channel.CONTROL
        if self._bulk.queued_bytes:
            return Channel.BULK
        return None

    def _cut(self, channel: Channel, size: int) -> Segment:
        q = self._queues[channel]
        parts: list[bytes] = []
        start = q.next_offset
        while size > 0 and q.chunks:
            head = q.chunks[0]
            take = min(size, len(head) - q.head_offset)
            parts.append(head[q.head_offset : q.head_offset + take])
            q.head_offset += take
            size -= take
            if q.head_offset == len(head):
                q.chunks.popleft()
                q.head_offset = 0
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        q.next_offset += len(payload)
        q.queued_bytes -= len(payload)
        return Segment(self.snd_nxt, channel, start, payload)

    def _split(self, seg: Segment, size: int) -> list[Segment]:
        """Cut a lost segment into pieces of at most ``size`` bytes, in place in _inflight."""
        if len(seg.payload) <= size:
            return [seg]
        pieces = [
            Segment(seg.seq + i, seg.channel, seg.chan_start + i, seg.payload[i : i + size])
            for i in range(0, len(seg.payload), size)
        ]
        idx = self._inflight.index(seg)
        del self._inflight[idx]
        for j, piece in enumerate(pieces):
            self._inflight.insert(idx + j, piece)
        return pieces

    def _transmit(self, seg: Segment, now: float, *, retransmission: bool) -> None:
        seg.sent_at = now
        seg.ahead_bytes = self.pipe_bytes
        self._tx_counter += 1
        seg.tx_order = self._tx_counter
        seg.delivered_at_send = self._delivered
        seg.delivered_time_at_send = self._delivered_time if self._delivered else now
        seg.lost = False
        self.pipe_bytes += len(seg.payload)
        self.stats.segments_sent += 1
        self.stats.payload_bytes_sent += len(seg.payload)
        if retransmission:
            seg.retransmitted = True
            self.stats.segments_retransmitted += 1
            self.stats.bytes_retransmitted += len(seg.payload)

    # --- acknowledgements ---------------------------------------------------------

    def on_ack(
        self,
        ack: int,
        right_edge: int,
        sacks: list[tuple[int, int]],
        echo: int | None,
        held: int | None,
        now: float,
    ) -> None:
        """Apply an acknowledgement (absolute sequence numbers).

        ``right_edge`` is the peer's window edge, ``sacks`` its SACK ranges,
        ``echo`` the last transmission it received and ``held`` (ACK frames only)
        the bitmap of the transmissions before it that it holds.
        """
        if ack > self.snd_nxt or ack < self.snd_una:
            ack = self.snd_una if ack < self.snd_una else self.snd_nxt
        self.peer_right_edge = max(self.peer_right_edge, right_edge)
        progressed = ack > self.snd_una
        inflight = self._inflight
        while inflight and inflight[0].end <= ack:
            seg = inflight.popleft()
            if not seg.sacked:
                self._delivered_seg(seg, now, echo)
            self._advance_channel(seg)
        self.snd_una = max(self.snd_una, ack)
        if sacks:
            for seg in inflight:
                if seg.sacked:
                    continue
                for start, end in sacks:
                    if start <= seg.seq and seg.end <= end:
                        seg.sacked = True
                        progressed = True
                        self._delivered_seg(seg, now, echo)
                        break
        if echo is not None and held is not None:
            progressed = self._apply_held(echo, held, now) or progressed
        if progressed:
            self._backoff = 1
            self.rto = self._rto_value()
            self.rto_deadline = now + self.rto if self._inflight else None

    def _delivered_seg(self, seg: Segment, now: float, echo: int | None) -> None:
        size = len(seg.payload)
        self._loss_share -= LOSS_SHARE_GAIN * self._loss_share
        if not seg.lost:
            self.pipe_bytes -= size
        seg.lost = False
        self._delivered += size
        self._delivered_time = now
        interval = now - seg.delivered_time_at_send
        if interval > 0:
            self._bw.update((self._delivered - seg.delivered_at_send) / interval, now)
        self._clean_bytes += size
        if self._clean_bytes >= 4 * self._loss_segment:
            self._clean_bytes = 0
            self._loss_segment = min(self._max_payload, self._loss_segment * 2)
        if seg.tx_order == echo:
            # the peer acknowledged on receiving exactly this transmission: a clean
            # sample (no retransmission ambiguity, no lost-ACK delay in it)
            self._update_rtt(now - seg.sent_at)

    def _advance_channel(self, seg: Segment) -> None:
        q = self._queues[seg.channel]
        q.acked_offset = max(q.acked_offset, seg.chan_start + len(seg.payload))
        while q.message_ends and q.message_ends[0] <= q.acked_offset:
            q.message_ends.popleft()
            self.stats.messages_acked += 1

    def _apply_held(self, echo: int, held: int, now: float) -> bool:
        """Links never reorder: the peer's ``held`` bitmap says, for each of the 64
        transmissions up to ``echo``, whether it arrived; an older one still not
        acknowledged did not.  Returns True when it showed new deliveries."""
        any_lost = progressed = False
        for seg in self._inflight:
            if seg.sacked:
                continue
            back = echo - seg.tx_order
            if back < 0:
                continue  # sent after the peer's last reception
            if back < HELD_BITS and (held >> back) & 1:
                seg.sacked = True  # held above a gap (beyond the SACK ranges it had room for)
                self._delivered_seg(seg, now, echo)
                progressed = True
            elif not seg.lost:
                self._mark_lost(seg)
                self._loss_share += LOSS_SHARE_GAIN * (1 - self._loss_share)
                any_lost = True
        if any_lost:
            self._on_loss(now)
        return progressed

    def _mark_lost(self, seg: Segment) -> None:
        seg.lost = True
        self.pipe_bytes -= len(seg.payload)
        self._lost.append(seg)

    def _on_loss(self, now: float) -> None:
        self._clean_bytes = 0
        rtt = self.srtt or self.rto
        if now - self._last_loss_time > rtt:
            self._last_loss_time = now
            self._loss_segment = max(self._config.min_segment_bytes, self._loss_segment // 2)

    def _update_rtt(self, sample: float) -> None:
        self._latest_rtt = sample
        # RFC 6298 §2
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self._min_rtt.update(sample, self._delivered_time)

    def _rto_value(self) -> float:
        cfg = self._config
        # RTT samples are exact (echoed transmissions), so the variance is real; the
        # floor of twice the smoothed RTT keeps a growing queue from firing it
        base = (
            cfg.rto_initial_s
            if self.srtt is None
            else max(2 * self.srtt, self.srtt + 4 * self.rttvar) + cfg.ack_delay_s
        )
        return min(cfg.rto_max_s, max(cfg.rto_min_s, base) * self._backoff)

    # --- timers -----------------------------------------------------------------

    def on_timeout(self, now: float) -> None:
        """The retransmission timer fired.

        The first timeout since the last progress takes what was sent a whole
        timeout ago and is still unaccounted for as lost (its ACKs, if any, were
        lost too; the held bitmap of the next ACK tells if a resend was needless).
        Further timeouts without progress mean silence, not noise — a pulled cable
        or a peer that is gone: they resend the oldest segment alone, as a probe,
        with the timer backing off, and leave the segment size alone.
        """
        if self.rto_deadline is None or now < self.rto_deadline:
            return
        # a segment's timer runs from when the line could have carried it: behind
        # the bytes in flight ahead of it (a 1,500-byte frame takes 130 ms at 115200
        # baud, far longer than a round trip measured with small frames)
        # (the delivery rate undercounts a noisy line by the frames it spoils)
        rate = (self._bw.value() or UNKNOWN_RATE_BYTES_PER_S) / (1 - min(self._loss_share, 0.75))
        due = [
            (seg.sent_at + self.rto + (seg.ahead_bytes + len(seg.payload)) / rate, seg)
            for seg in self._inflight
            if not seg.sacked and not seg.lost
        ]
        expired = [seg for at, seg in due if at <= now + 1e-9]
        if not expired:
            self.rto_deadline = min((at for at, _ in due), default=None)
            return
        self.stats.timeouts += 1
        first = self._backoff == 1
        for seg in expired if first else expired[:1]:
            self._mark_lost(seg)
        if first:
            self._on_loss(now)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        self.rto = self._rto_value()
        self.rto_deadline = now + self.rto if self._inflight else None

    def resend_all(self, now: float) -> None:
        """After a link outage: everything unacknowledged is resent."""
        for seg in self._inflight:
            if not seg.sacked and not seg.lost:
                self._mark_lost(seg)
        self._backoff = 1
        self.rto = self._rto_value()
        self.rto_deadline = now + self.rto if self._inflight else None

    def pause(self) -> None:
        """Link down: stop the retransmission timer (resend_all restarts it)."""
        self.rto_deadline = None
