"""The sending half of a link session: segments, acks, loss recovery, pacing (sans-I/O).

Theory of operation
-------------------
Each channel (CONTROL, BULK) is a byte stream of length-prefixed messages.
Segments are cut from those streams *when they are first sent*, control first,
and numbered in one link-wide byte sequence space (like TCP, so a lost segment
can be cut again into smaller pieces when the line turns noisy: a big frame on
a line that drops one byte in a hundred would otherwise never get through).
In a session of version 2 a tail-loss probe (``ira.link.tailprobe``) resends the
last segment of a burst about a round trip after it went unacknowledged.

Acknowledgement is cumulative plus selective (SACK ranges).  Serial and USB
links never reorder, so loss detection is RACK with a zero reordering window:
a segment still unacknowledged when one sent after it is acknowledged is lost
and queued for retransmission at once.  A retransmission timer (RFC 6298
estimator, Karn's rule, exponential backoff) covers a lost tail.  A timeout is
found spurious when the ACK of the resent segment echoes its *first*
transmission (RFC 4015's detection, exact here because every transmission has
its own number): the round trip it measured becomes the estimate's floor at
once, so that a queue the other way (ACKs behind a peer's bulk frames) that grew
faster than the estimate followed costs one needless resend, not one per frame.

How much is in flight is bounded by the peer's window and by a congestion
window of twice the measured bandwidth-delay product (a per-segment delivery
rate, as in BBR, and the minimum RTT), so that no standing queue builds up in
the transport, the kernel or a slow line.  Segment size follows the line: it
halves when segments are lost, doubles after clean deliveries, and is capped
to ``frame_latency_s`` worth of the measured rate.  A segment runs past that
cap, by at most half of it (``FINISH_SHARE``), to end where a message ends: a
message that arrives on its own — a 1,514-byte Ethernet frame when the cap is
1,152 bytes at 115200 baud — would otherwise leave its tail, and the small
messages queued behind it, to a frame and a frame header of their own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ira.link.config import LinkConfig
from ira.link.events import Channel
from ira.link.framing import encode_varint
from ira.link.tailprobe import NOISY_LOSS_SHARE, TailProbe

#: a segment cut to the latency cap may run this share of it longer to end where a
#: message ends (never past the loss-driven size or the peer's largest payload)
FINISH_SHARE = 0.5
#: the first segments, before the line rate is known
INITIAL_SEGMENT_BYTES = 256
INITIAL_CWND_SEGMENTS = 4
#: the retransmission timer backs off at most this many times over: a serial line has
#: no competing flows to make room for, and losses there are noise, not congestion
MAX_BACKOFF = 4
CWND_FLOOR_S = 0.05
#: line rate assumed for timer allowances before one is measured, and the slowest one
#: they ever assume (9600 baud)
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
#: the probe timer covers a tail of at most this many bytes in flight (a lone DEVCALL,
#: a reply): a bulk flow's big frames finish their line time after 2 SRTT of small
#: ones, and a probe that resends one of those spuriously costs more than it saves
TAIL_PROBE_MAX_BYTES = 256
#: the one-byte length prefixes of messages shorter than 128 bytes
_SMALL_PREFIX = [bytes((n,)) for n in range(0x80)]


class Segment:
    """A piece of one channel's stream at a place in the link's sequence space."""

    __slots__ = (
        "ahead_bytes",
        "chan_start",
        "channel",
        "delivered_at_send",
        "delivered_time_at_send",
        "end",
        "first_sent_at",
        "first_tx",
        "lost",
        "payload",
        "retransmitted",
        "sacked",
        "sent_at",
        "seq",
        "tx_order",
    )

    def __init__(self, seq: int, channel: Channel, chan_start: int, payload: bytes) -> None:
        self.seq = seq
        #: sequence number after the last byte
        self.end = seq + len(payload)
        self.channel = channel
        #: offset of the first payload byte in its channel's stream
        self.chan_start = chan_start
        self.payload = payload
        self.sent_at = 0.0
        #: the first transmission's order and time (0: this piece was cut from a lost
        #: segment, its first transmission is not its own)
        self.first_tx = 0
        self.first_sent_at = 0.0
        #: order of the last transmission among all transmissions (frames sent
        #: together share a time)
        self.tx_order = 0
        #: bytes in flight ahead of this segment when it was sent (it waits behind them)
        self.ahead_bytes = 0
        #: bytes that had passed the line (delivered or lost), and when, as this
        #: segment was sent
        self.delivered_at_send = 0
        self.delivered_time_at_send = 0.0
        self.retransmitted = False
        self.sacked = False
        self.lost = False

    def __repr__(self) -> str:
        return f"<Segment {self.channel.name} {self.seq}..{self.end}>"


@dataclass(slots=True)
class _WindowedExtreme:
    """Max (or min) over roughly the last ``window_s`` seconds, in two buckets."""

    window_s: float
    want_max: bool
    current: float | None = None
    previous: float | None = None
    bucket_start: float = 0.0

    def update(self, value: float, now: float) -> bool:
        """Take a sample; True when ``value()`` may have changed."""
        if now - self.bucket_start >= self.window_s:
            self.previous, self.current, self.bucket_start = self.current, value, now
            return True
        current = self.current
        if current is None or (value > current if self.want_max else value < current):
            self.current = value
            return True
        return False

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
    #: messages given to the link (counted by the session core: also those that
    #: waited for a session)
    messages_queued: int = 0
    messages_acked: int = 0
    segments_sent: int = 0
    segments_retransmitted: int = 0
    bytes_retransmitted: int = 0
    payload_bytes_sent: int = 0
    timeouts: int = 0
    #: tail-loss probes sent (version 2)
    tail_probes: int = 0
    #: lone small tails sent twice on a noisy line (version 2)
    tail_copies: int = 0
    #: retransmission timeouts found spurious: the peer acknowledged the first
    #: transmission of a segment the timer resent (RFC 4015's detection, by echo)
    spurious_timeouts: int = 0


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
        tail_probe: TailProbe | None = None,
        peer_ack_hold_s: float | None = None,
    ) -> None:
        self._config = config
        #: the longest the peer may hold an acknowledgement (the timer allows it)
        #: (version 2: its ack hold; on a noisy line the timer allows the ack delay
        #: alone, as the probe does: a late ACK there is more likely lost than held)
        self._peer_ack_hold_s = config.ack_delay_s if peer_ack_hold_s is None else peer_ack_hold_s
        #: the tail-loss probe (version 2), None: the retransmission timer alone
        self._probe = tail_probe
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
        #: retransmission timeouts since the last progress
        self._timeouts_in_a_row = 0
        self.rto_deadline: float | None = None
        self._tx_counter = 0
        #: moving share of transmissions the line spoiled (from the held bitmaps)
        self._loss_share = 0.0
        self._latest_rtt = 0.0
        #: round-trip samples taken (on_ack keeps a backed-off timer until one comes)
        self._samples = 0
        self._delivered = 0
        self._delivered_time = 0.0
        self._bw = _WindowedExtreme(BW_WINDOW_S, want_max=True)
        self._min_rtt = _WindowedExtreme(MIN_RTT_WINDOW_S, want_max=False)
        self._loss_segment = min(INITIAL_SEGMENT_BYTES, self._max_payload)
        self._clean_bytes = 0
        self._last_loss_time = -1e9
        self.stats = stats if stats is not None else SenderStatistics()
        #: segment size and congestion window, recomputed when their inputs change
        self._segment_bytes = 0
        #: how long a segment may run to finish the message it cuts
        self._finish_bytes = 0
        self._cwnd = 0
        self._pace()

    # --- queueing -------------------------------------------------------------

    def enqueue(self, channel: Channel, payload: bytes) -> None:
        q = self._queues[channel]
        n = len(payload)
        chunk = (_SMALL_PREFIX[n] if n < 0x80 else encode_varint(n)) + payload
        q.chunks.append(chunk)
        q.queued_bytes += len(chunk)
        q.total_offset += len(chunk)
        q.message_ends.append(q.total_offset)

    def inherit_rtt(self, previous: Sender) -> None:
        """Start from the round-trip estimate of an earlier session on the same line
        (a restarted peer), so the first losses are not left to the initial timer."""
        if previous.srtt is not None:
            self.srtt, self.rttvar = previous.srtt, previous.rttvar
            self._min_rtt = previous._min_rtt
            self.rto = self._rto_value()
            self._pace()

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

    @property
    def deadline(self) -> float | None:
        """When ``on_timeout`` is due: the retransmission timer or the probe timer."""
        rto = self.rto_deadline
        probe = self._probe
        at = None if probe is None else probe.deadline
        if at is None or (rto is not None and rto <= at):
            return rto
        return at

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
        """Largest segment to cut now."""
        return self._segment_bytes

    @property
    def cwnd(self) -> int:
        """Most bytes in flight."""
        return self._cwnd

    def _pace(self) -> None:
        """Recompute segment size and congestion window (their inputs changed)."""
        size = finish = self._loss_segment
        bw = self._bw.value()
        if bw is not None:
            cap = max(256, int(bw * self._config.frame_latency_s))
            if cap < size:
                size = cap
                finish = min(finish, cap + int(cap * FINISH_SHARE))
        seg = max(min(self._config.min_segment_bytes, self._max_payload), size)
        self._segment_bytes = seg
        self._finish_bytes = max(seg, finish)
        rtt = self._min_rtt.value()
        if bw is None or rtt is None:
            self._cwnd = INITIAL_CWND_SEGMENTS * seg
            return
        # on a noisy line small frames and lost acks need more in flight than the
        # bandwidth-delay product of the fastest round trip: keep a floor of
        # CWND_FLOOR_S of the line rate
        floor = max(INITIAL_CWND_SEGMENTS * seg, int(bw * CWND_FLOOR_S), CWND_FLOOR_BYTES)
        self._cwnd = max(floor, int(2 * bw * rtt) + seg)

    # --- producing segments -----------------------------------------------------

    def segments_to_send(self, now: float, *, carry_ack: bool = False) -> list[Segment]:
        """Segments to put on the wire now: lost ones first, then new data, control first.

        With ``carry_ack`` (a frame must go anyway: an ACK or a keepalive is due) and
        nothing else to send, one segment of queued data goes past the congestion
        window (never the peer's window) and carries the ACK: the line then takes
        the DATA frame it would take anyway a little earlier, instead of an ACK
        frame more.
        """
        control, bulk = self._control, self._bulk
        if not self._lost and not control.queued_bytes and not bulk.queued_bytes:
            return []
        out: list[Segment] = []
        seg_size = self._segment_bytes
        finish = self._finish_bytes
        cwnd = self._cwnd
        if carry_ack and self.pipe_bytes >= cwnd + seg_size:
            # a whole segment past the window already (one carried an ACK before): one
            # more would only stand in the queue the window keeps short, and every
            # due ACK would add one
            carry_ack = False
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
            room = cwnd - self.pipe_bytes
            window = self.peer_right_edge - self.snd_nxt
            if window < room:
                room = window
            if room <= 0 and not carry_ack:
                break
            if control.queued_bytes:
                q, channel = control, Channel.CONTROL
            elif bulk.queued_bytes:
                q, channel = bulk, Channel.BULK
            else:
                break
            if room <= 0 or (room < seg_size and self.pipe_bytes and q.queued_bytes > room):
                # silly-window avoidance: a runt frame costs its whole header; wait for
                # the ACK that opens room for a full one (something is in flight)
                full = seg_size if seg_size < q.queued_bytes else q.queued_bytes
                if not carry_ack or out or window < full:
                    break
                room = full  # one frame past the congestion window, for the ACK
            carry_ack = False
            # ending on a message may overrun the congestion window (by less than a
            # segment), never the peer's window
            seg = self._cut(
                q,
                channel,
                seg_size if seg_size < room else room,
                finish if finish < window else window,
            )
            self.snd_nxt = seg.end
            self._inflight.append(seg)
            self._transmit(seg, now, retransmission=False)
            out.append(seg)
        if out:
            if self.rto_deadline is None:
                self.rto_deadline = now + self.rto
            if self._probe is not None:
                self._arm_probe(now)
                if len(out) == 1 and self._noisy_tail():
                    # a lone small tail on a noisy line: the same transmission twice
                    # (a frame there is lost more often than not: two copies halve
                    # the rounds a request or reply takes to get through)
                    out.append(out[0])
                    self.stats.tail_copies += 1
        return out

    def _noisy_tail(self) -> bool:
        """A tail on a noisy line: a few bytes in the pipe, nothing queued."""
        pipe = self.pipe_bytes
        return not (
            not pipe
            or pipe > TAIL_PROBE_MAX_BYTES
            or self._loss_share < NOISY_LOSS_SHARE
            or self._control.queued_bytes
            or self._bulk.queued_bytes
        )

    def _arm_probe(self, now: float) -> None:
        """Arm the probe timer for a tail on a noisy line."""
        probe = self._probe
        assert probe is not None
        if not self._noisy_tail():
            probe.deadline = None
            return
        probe.arm(now, self.srtt, self.rttvar, self.rto_deadline)

    def _cut(self, q: _ChannelQueue, channel: Channel, size: int, finish: int) -> Segment:
        """Cut the next segment: it ends at the last message end within ``finish``
        bytes if that is at least ``size`` bytes in, otherwise after ``size`` bytes
        (or sooner, at the end of the queue)."""
        chunks = q.chunks
        start = q.next_offset
        offset = q.head_offset
        parts: list[bytes] = []
        total = 0
        while chunks:
            head = chunks[0]
            rest = len(head) - offset
            if total + rest <= finish:
                # the message (or what is left of it) ends within reach: whole
                parts.append(head if offset == 0 else head[offset:])
                chunks.popleft()
                offset = 0
                total += rest
            else:
                if total < size:
                    n = size - total
                    parts.append(head[offset : offset + n])
                    offset += n
                    total = size
                break
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        q.head_offset = offset
        q.next_offset = start + total
        q.queued_bytes -= total
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
        n = len(seg.payload)
        seg.sent_at = now
        seg.ahead_bytes = self.pipe_bytes
        tx = self._tx_counter + 1
        if not tx & 0xFFFF:
            tx += 1  # on the wire tx is 16 bits, and 0 means "none yet": never send it
        self._tx_counter = seg.tx_order = tx
        delivered = self._delivered
        if not self.pipe_bytes:
            # nothing in flight: the line was idle, and the time it stood idle is not
            # time it took to deliver (the rate sample starts now, as in BBR)
            self._delivered_time = now
        seg.delivered_at_send = delivered
        seg.delivered_time_at_send = self._delivered_time if delivered else now
        seg.lost = False
        self.pipe_bytes += n
        stats = self.stats
        stats.segments_sent += 1
        stats.payload_bytes_sent += n
        if not seg.first_tx and not retransmission:
            seg.first_tx, seg.first_sent_at = tx, now
        if retransmission:
            seg.retransmitted = True
            stats.segments_retransmitted += 1
            stats.bytes_retransmitted += n

    # --- acknowledgements ---------------------------------------------------------

    def on_ack(
        self,
        ack: int,
        right_edge: int,
        sacks: list[tuple[int, int]],
        echo: int | None,
        held: int | None,
        now: float,
        *,
        fresh: bool = True,
    ) -> None:
        """Apply an acknowledgement (absolute sequence numbers).

        ``right_edge`` is the peer's window edge, ``sacks`` its SACK ranges,
        ``echo`` the last transmission it received and ``held`` (ACK frames only)
        the bitmap of the transmissions before it that it holds; ``fresh`` False:
        the echo is stale (version 2's STALE_ECHO), no round-trip sample.
        """
        sample = echo if fresh else None
        probe = self._probe
        if probe is not None:
            probe.heard(now)  # the peer is alive (retransmission timer: no backoff)
        snd_una = self.snd_una
        if ack > self.snd_nxt or ack < snd_una:
            ack = snd_una if ack < snd_una else self.snd_nxt
        if right_edge > self.peer_right_edge:
            self.peer_right_edge = right_edge
        progressed = ack > snd_una
        samples = self._samples
        inflight = self._inflight
        while inflight and inflight[0].end <= ack:
            seg = inflight.popleft()
            if not seg.sacked:
                self._delivered_seg(seg, now, sample)
            self._advance_channel(seg)
        if progressed:
            self.snd_una = ack
        if sacks:
            for seg in inflight:
                if seg.sacked:
                    continue
                for start, end in sacks:
                    if start <= seg.seq and seg.end <= end:
                        seg.sacked = True
                        progressed = True
                        self._delivered_seg(seg, now, sample)
                        break
        if echo is not None and held is not None:
            progressed = self._apply_held(echo, held, now, sample) or progressed
        if progressed:
            # Karn (RFC 6298 §5.7): a backed-off timer stays backed off until a round
            # trip is measured; progress alone may be the late ACK of a first
            # transmission that the timer resent spuriously
            if self._samples != samples:
                self._backoff = 1
            self._timeouts_in_a_row = 0
            self.rto = self._rto_value()
            self.rto_deadline = now + self.rto if self._inflight else None
            if probe is not None:
                probe.progressed()
                self._arm_probe(now)

    def _delivered_seg(self, seg: Segment, now: float, echo: int | None) -> None:
        size = len(seg.payload)
        self._loss_share -= LOSS_SHARE_GAIN * self._loss_share
        if seg.lost:
            seg.lost = False
        else:
            self.pipe_bytes -= size
        self._delivered = delivered = self._delivered + size
        self._delivered_time = now
        interval = now - seg.delivered_time_at_send
        if interval > 0 and self._bw.update((delivered - seg.delivered_at_send) / interval, now):
            self._pace()
        self._clean_bytes += size
        if self._clean_bytes >= 4 * self._loss_segment:
            self._clean_bytes = 0
            self._loss_segment = min(self._max_payload, self._loss_segment * 2)
            self._pace()
        if seg.tx_order == echo:
            # the peer acknowledged on receiving exactly this transmission: a clean
            # sample (no retransmission ambiguity, no lost-ACK delay in it)
            self._update_rtt(now - seg.sent_at)
        elif seg.retransmitted and seg.first_tx == echo and echo is not None:
            # the first transmission arrived and this ACK answers it: an exact sample
            sample = now - seg.first_sent_at
            self._update_rtt(sample)
            if self._loss_share >= NOISY_LOSS_SHARE:
                return  # a noisy line: a lost ACK, not a queue, made it look late
            # a clean line: the timer that resent it fired too soon (a queue the other
            # way grew faster than the estimate); the Eifel response (RFC 4015 §4.2)
            # takes the round trip it measured as the estimate's floor at once
            self.stats.spurious_timeouts += 1
            srtt = self.srtt
            if srtt is not None and srtt < sample:
                self.srtt = sample
            if self.rttvar < sample / 2:
                self.rttvar = sample / 2

    def _advance_channel(self, seg: Segment) -> None:
        q = self._control if seg.channel is Channel.CONTROL else self._bulk
        acked = seg.chan_start + len(seg.payload)
        if acked > q.acked_offset:
            q.acked_offset = acked
        ends = q.message_ends
        while ends and ends[0] <= acked:
            ends.popleft()
            self.stats.messages_acked += 1

    def _apply_held(self, echo: int, held: int, now: float, sample: int | None) -> bool:
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
                self._delivered_seg(seg, now, sample)
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
            self._pace()

    def _update_rtt(self, sample: float) -> None:
        self._samples += 1
        self._latest_rtt = sample
        # RFC 6298 §2
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        if self._min_rtt.update(sample, self._delivered_time):
            self._pace()

    def _rto_value(self) -> float:
        cfg = self._config
        srtt = self.srtt
        if srtt is None:
            base = cfg.rto_initial_s
        else:
            # RTT samples are exact (echoed transmissions), so the variance is real;
            # the floor of twice the smoothed RTT keeps a growing queue from firing it
            spread = 4 * self.rttvar
            held = self._peer_ack_hold_s
            if self._loss_share >= NOISY_LOSS_SHARE:
                held = cfg.ack_delay_s
            base = (srtt + spread if spread > srtt else 2 * srtt) + held
        if base < cfg.rto_min_s:
            base = cfg.rto_min_s
        rto = base * self._backoff
        return rto if rto < cfg.rto_max_s else cfg.rto_max_s

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
        probe = self._probe
        if (
            probe is not None
            and probe.deadline is not None
            and now >= probe.deadline
            and (self.rto_deadline is None or now < self.rto_deadline)
        ):
            self._send_probe(probe)
            return
        if self.rto_deadline is None or now < self.rto_deadline:
            return
        # a segment's timer runs from when the line could have carried it: behind
        # the bytes in flight ahead of it (a 1,500-byte frame takes 130 ms at 115200
        # baud, far longer than a round trip measured with small frames)
        # (the delivery rate undercounts a noisy line by the frames it spoils, and a
        # sparse flow's by far more: one lone reply acknowledged after a loss measured
        # a few bytes a second, and made a 100-byte request wait seconds; never
        # assume a line slower than 9600 baud)
        bw = self._bw.value() or UNKNOWN_RATE_BYTES_PER_S
        if bw < UNKNOWN_RATE_BYTES_PER_S:
            bw = UNKNOWN_RATE_BYTES_PER_S
        rate = bw / (1 - min(self._loss_share, 0.75))
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
        first = self._timeouts_in_a_row == 0
        self._timeouts_in_a_row += 1
        for seg in expired if first else expired[:1]:
            self._mark_lost(seg)
        if first:
            self._on_loss(now)
        if probe is None or not probe.noise(now, self._loss_share):
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        self.rto = self._rto_value()
        self.rto_deadline = now + self.rto if self._inflight else None
        if probe is not None:
            probe.progressed()  # a new round: its retransmissions may have their probe

    def _send_probe(self, probe: TailProbe) -> None:
        """The probe timer fired: the newest segment in flight goes again (RFC 8985 §7.3),
        without halving the segment size or backing the timer off."""
        probe.fired()
        for seg in reversed(self._inflight):
            if not seg.sacked and not seg.lost:
                self._mark_lost(seg)
                self.stats.tail_probes += 1
                return

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
        if self._probe is not None:
            self._probe.deadline = None
