"""A session's frames in (sans-I/O): segments to the receiver, acks to the sender.

Once the core has found a frame to be of the current session (``ira.link.core``),
``Inbound`` takes it: a DATA or DATA2 frame's piggy-backed acknowledgement goes to
the sender and its segment to the receiver, whose complete messages go up as
``MessageReceived``; an ACK frame goes to the sender.  ``Inbound`` also keeps what
this end owes the peer in return: when an ACK is due, the ``held`` bitmap of the
last 64 transmissions, the echo of the latest one, the window last advertised and
the bytes delivered but not yet taken (charged to the receive window); the core
sends it (``ack_frame``, or riding in a DATA frame).

Sequence numbers come in as their low 32 bits (DATA, ACK) or fewer (DATA2) and are
widened against the sender's or receiver's position (``_unwrap``, ``expand``).
"""

from __future__ import annotations

from collections import deque

from ira.errors import RemoteProtocolError
from ira.link.config import LinkConfig
from ira.link.counters import Counters
from ira.link.events import Channel, LinkEvent, MessageReceived
from ira.link.header2 import Header2
from ira.link.receiver import Fate, Receiver
from ira.link.sender import Sender
from ira.wire.link import WINDOW_UNIT_BYTES, Ack, Data, encode_ack, full_numbers
from ira.wire.link2 import ACK_HOLD_S, Data2, decode_data2, expand

_MOD = 1 << 32
_HALF = 1 << 31
_MAX_CHANNEL = max(Channel)
#: channels by their number on the wire
_CHANNELS = tuple(sorted(Channel))
#: the ``held`` bitmap of an ACK covers this many transmissions
HELD_MASK = (1 << 64) - 1
#: SACK ranges this end puts in an ACK (at most MAX_SACK_BLOCKS)
ACK_SACK_BLOCKS = 2


def _stream_bytes(message: bytes) -> int:
    """What a message took of its channel's stream, length prefix included.

    Messages delivered but not yet taken are charged to the receive window at
    this size, so that empty messages too close the window of a stalled consumer.
    """
    n = len(message)
    return n + 1 if n < 0x80 else n + (n.bit_length() + 6) // 7


def _unwrap(wire: int, reference: int) -> int:
    """The absolute sequence number nearest ``reference`` whose low 32 bits are ``wire``."""
    return reference + ((wire - reference + _HALF) % _MOD) - _HALF


def data2_numbers(body: memoryview, sender: Sender | None, receiver: Receiver | None) -> bytes:
    """The whole seq and ack of a DATA2 body (MAC removed) as its MAC covers them;
    empty when there is no session or the header is broken (the MAC then fails)."""
    if sender is None or receiver is None:
        return b""
    try:
        d = decode_data2(body)
    except RemoteProtocolError:
        return b""
    return full_numbers(
        expand(d.seq, d.seq_bytes, receiver.rcv_nxt), expand(d.ack, d.ack_bytes, sender.snd_una)
    )


class Inbound:
    """The frames of a session in, and the acknowledgement this end owes for them."""

    def __init__(self, config: LinkConfig, events: deque[LinkEvent], counters: Counters) -> None:
        self._ack_delay_s = config.ack_delay_s
        self._events = events
        self._counters = counters
        #: bytes delivered up (``MessageReceived``) and not yet taken by ``next_event``
        self.backlog_bytes = 0
        #: when an ACK is due (None: none is)
        self.ack_due: float | None = None
        #: an ACK frame of its own is due at once (a probe, a window update)
        self.ack_now = False
        #: segments received since the last acknowledgement went
        self.unacked_segments = 0
        #: the latest transmission received (its number), and whether there was one
        self.last_rx_tx = 0
        self.rx_seen = False
        #: which of the last 64 transmissions arrived (bit 0: ``last_rx_tx``)
        self.held = 0
        #: a frame of ours already echoed ``last_rx_tx`` (version 2: a DATA2 frame
        #: echoes it once, an ACK that repeats it marks it stale)
        self.echo_sent = True
        #: the right edge of the receive window as last advertised
        self.advertised_edge = 0
        #: the window opening that is worth an ACK of its own
        self._window_update_bytes = config.window_bytes // 4

    def reset(self) -> None:
        """The session is gone: nothing is owed."""
        self.echo_sent = True
        self.last_rx_tx = 0
        self.rx_seen = False
        self.held = 0
        self.ack_due = None
        self.ack_now = False

    def taken(self, message: bytes, receiver: Receiver | None) -> None:
        """The layer above took a delivered message: its bytes leave the backlog."""
        self.backlog_bytes = backlog = self.backlog_bytes - _stream_bytes(message)
        if receiver is not None:
            receiver.backlog_bytes = backlog
            # the right edge (receiver.right_edge, spelled out on this hot path)
            available = receiver.window_bytes - receiver.ooo_bytes - backlog
            edge = receiver.rcv_nxt + (available if available > 0 else 0)
            if edge - self.advertised_edge >= self._window_update_bytes:
                self.ack_now = True  # a window update is worth a frame

    def window_field(self, receiver: Receiver) -> int:
        """The window field of a frame going now (in units), recorded as advertised."""
        units = receiver.available // WINDOW_UNIT_BYTES
        if units > 0xFFFF:
            units = 0xFFFF
        self.advertised_edge = receiver.rcv_nxt + units * WINDOW_UNIT_BYTES
        return units

    def ack_frame(
        self, receiver: Receiver, tag: int, *, sack: bool, version2: bool, probe: bool
    ) -> bytes:
        """An ACK frame saying what this end holds (``sack``: with SACK ranges)."""
        # the held bitmap already tells the sender what arrived; SACK ranges add what
        # it cannot (older than 64 transmissions): two are enough, and every byte of
        # an ACK is one more chance for a noisy line to spoil it
        blocks = receiver.sack_blocks(ACK_SACK_BLOCKS) if sack else []
        # version 2: an ACK that repeats an echo a frame of ours already carried (a
        # keepalive, an ACK resent) is no round-trip sample: its ACK went earlier
        stale = version2 and self.echo_sent
        self.echo_sent = True
        return encode_ack(
            Ack(
                probe,
                tag,
                receiver.rcv_nxt & 0xFFFFFFFF,
                self.window_field(receiver),
                self.last_rx_tx,
                self.held,
                tuple((s & 0xFFFFFFFF, e & 0xFFFFFFFF) for s, e in blocks),
                stale,
            )
        )

    def on_data(
        self, d: Data, sender: Sender, receiver: Receiver, header2: Header2 | None, now: float
    ) -> None:
        """A version-1 DATA frame of the session: its ack to the sender, its segment in."""
        # the piggy-backed ack (as on_ack, without SACK ranges or held bitmap)
        snd_una = sender.snd_una
        ack = snd_una + ((d.ack - snd_una + _HALF) % _MOD) - _HALF
        echo = d.echo
        sender.on_ack(
            ack,
            ack + d.window * WINDOW_UNIT_BYTES,
            [],
            sender.unwrap_tx(echo) if echo else None,  # 0: nothing received yet
            None,
            now,
        )
        rcv_nxt = receiver.rcv_nxt
        seq = rcv_nxt + ((d.seq - rcv_nxt + _HALF) % _MOD) - _HALF
        self._take_segment(seq, d.channel, d.tx, d.payload, sender, receiver, header2, now)

    def on_data2(
        self, d: Data2, sender: Sender, receiver: Receiver, header2: Header2 | None, now: float
    ) -> None:
        """A DATA2 frame of a version-2 session: its ack to the sender, its segment in."""
        ack = expand(d.ack, d.ack_bytes, sender.snd_una)
        window = d.window
        # no window: the edge did not move (the sender keeps the largest it heard)
        edge = ack if window is None else ack + window * WINDOW_UNIT_BYTES
        echo = d.echo
        tx = sender.unwrap_tx(echo) if echo else None  # 0: nothing received yet
        sender.on_ack(ack, edge, [], tx, None, now)
        if tx is not None and header2 is not None:
            header2.echoed(tx)
        seq = expand(d.seq, d.seq_bytes, receiver.rcv_nxt)
        self._take_segment(seq, d.channel, d.tx, d.payload, sender, receiver, header2, now)

    def _take_segment(
        self,
        seq: int,
        channel: int,
        tx: int,
        payload: bytes,
        sender: Sender,
        receiver: Receiver,
        header2: Header2 | None,
        now: float,
    ) -> None:
        """A DATA or DATA2 frame's segment, at its whole sequence number."""
        self.echo_sent = False
        if channel > _MAX_CHANNEL:
            # acknowledged and discarded, so that it cannot block the sequence space
            self._counters.unknown_channel += 1
            fate = receiver.on_segment(seq, None, payload)
        else:
            fate = receiver.on_segment(seq, _CHANNELS[channel], payload)
        # slide the ``held`` bitmap to this transmission (links never reorder)
        if self.rx_seen:
            step = (tx - self.last_rx_tx) & 0xFFFF
            if step < 0x8000:  # else older than the last one: a duplicate from the line
                self.held = (self.held << step) & HELD_MASK
                self.last_rx_tx = tx
                if fate is not Fate.REFUSED:
                    self.held |= 1
        else:
            self.rx_seen = True
            self.last_rx_tx = tx
            if fate is not Fate.REFUSED:
                self.held |= 1
        delivered = receiver.delivered
        if delivered:
            events = self._events
            backlog = self.backlog_bytes
            # not ``channel``: that name holds an int above, and compiled (mypyc) code
            # would keep the Channel in an int and hand on a plain int
            for ch, message in delivered:
                events.append(MessageReceived(ch, message))
                backlog += _stream_bytes(message)
            delivered.clear()
            self.backlog_bytes = receiver.backlog_bytes = backlog
        gaps = receiver.has_gaps
        if fate is Fate.DUPLICATE and not gaps:
            # the sender has not heard our ACK yet: it was lost, and the delayed ACK
            # repeats it, or it is still on its way behind our own frames, and one
            # more now would only queue behind it
            if self.ack_due is None:
                self.ack_due = now + self._ack_delay_s
            return
        self.unacked_segments += 1
        if fate is not Fate.NEW or gaps or self.unacked_segments >= 2:
            self.ack_due = now  # tell the sender at once what we hold
        elif self.ack_due is None:
            delay = self._ack_delay_s
            if header2 is not None and sender.has_outstanding():
                # version 2, a flow of our own: more of it is likely soon (a TCP ACK
                # from the stack above, room the peer's next ACK opens) and carries
                # this acknowledgement instead of an ACK frame on a busy line
                delay = ACK_HOLD_S if delay < ACK_HOLD_S else delay
            self.ack_due = now + delay

    def on_ack(self, a: Ack, sender: Sender, header2: Header2 | None, now: float) -> None:
        """An ACK frame of the session: to the sender; a probe is answered at once."""
        ack = _unwrap(a.ack, sender.snd_una)
        ref = sender.snd_una
        sacks = [(_unwrap(s, ref), _unwrap(e, ref)) for s, e in a.blocks]
        echo = a.echo
        tx = sender.unwrap_tx(echo) if echo else None  # 0: nothing received yet
        edge = ack + a.window * WINDOW_UNIT_BYTES
        sender.on_ack(ack, edge, sacks, tx, a.held, now, fresh=not a.stale_echo)
        if tx is not None and header2 is not None:
            header2.echoed(tx)
        if a.probe:
            self.ack_now = True
