"""The link core: one end of a reliable session over a lossy transport (sans-I/O).

Theory of operation
-------------------
Everything that affects the session state machine lives here; the parts it owns
only keep their own books: the sending and receiving halves (``sender.py``,
``receiver.py``), the HELLO exchange (``handshake.py``), a session's frames in
and the acknowledgement owed for them (``inbound.py``), DATA and DATA2 frames out
(``outbound.py``) and the counters (``counters.py``).

Each end picks a random 64-bit *epoch* when it starts.  In ``HANDSHAKE`` it
sends HELLO with backoff until the peer answers.  A HELLO or HELLO_ACK from

* the epoch we already know: the same peer (a retransmitted handshake); the
  session simply goes on, nothing is lost;
* an unknown epoch while we had a session: the peer restarted.  Everything not
  yet acknowledged is discarded, ``PeerRestarted`` is reported and a new
  session starts (``SessionStarted``);
* any epoch while we had none: ``SessionStarted``.

In ``UP`` the halves exchange DATA and ACK frames tagged with both epochs; a
frame with another tag is stale (left from an earlier session) and dropped.
Silence for the dead interval (``dead_interval_s``, or four of the peer's
keepalive intervals if that is longer) moves to ``DOWN`` (``LinkDown``): nothing new
is sent, keepalive probes go on.  Any valid frame of the session moves back to
``UP`` (``LinkUp``) and everything unacknowledged is resent, so an outage loses
nothing.  ``DOWN`` for ``session_timeout_s`` tears the session down
(``SessionLost``): this end takes a new epoch, so the peer will see a restart.
``transport_lost`` (the runtime lost its port and reopens it) moves ``UP`` to
``DOWN`` at once, without waiting for the dead interval.

With a pre-shared key (``LinkConfig.psk``) every frame in and out also passes
``ira.link.auth``: frames whose MAC does not verify are dropped and counted
(``drop_unauthenticated``), and a HELLO alone no longer starts or resets a
session; only a HELLO_ACK that echoes this end's current nonce does (that
module's docstring has the handshake).

The core never reads a clock: time comes in as ``now``.  Whatever bytes arrive,
only events and counters come out, never an exception:

* noise (bad CRC, undecodable frames) and stale frames are counted and dropped;
* a HELLO this end cannot accept (no common version, a field out of range) is
  answered with HELLO_REFUSED and reported (``HandshakeRefused``); a
  HELLO_REFUSED answering ours is reported too, and the handshake goes on with
  its backoff;
* DATA on a channel this end does not know is acknowledged and its bytes
  discarded (counted), so it cannot block the sequence space;
* a CRC-valid frame of the session that breaks the protocol (a message length
  prefix past MAX_VARINT_BYTES) resets the session, as TCP answers such a
  segment with RST: ``SessionLost`` with the reason, a new epoch, a new HELLO.

The state table is data (``ira.link.states.LINK_TRANSITIONS``): every change
of ``state`` goes through ``states.step``, and docs/PROTOCOL.md prints the table.
"""

from __future__ import annotations

import random
from collections import deque

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.link.auth import PEER_WANTS_KEY, LinkAuth, Refusals
from ira.link.config import LinkConfig
from ira.link.counters import Counters, collect
from ira.link.counters import LinkStatistics as LinkStatistics  # re-exported: its old home
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
from ira.link.framing import StreamDeframer, encode_frames
from ira.link.handshake import (
    Handshake,
    dead_interval,
    refusal,
    refused_by_peer,
    refused_hello,
    session_sender,
)
from ira.link.header2 import Header2
from ira.link.inbound import Inbound, data2_numbers
from ira.link.outbound import data2_frames, data_frames
from ira.link.receiver import Receiver, ReceiverStatistics
from ira.link.sender import Sender, SenderStatistics
from ira.link.states import LinkInput, LinkState, step
from ira.wire.link import (
    MAC_BYTES,
    BadCrc,
    Data,
    Hello,
    HelloRefused,
    check_crc,
    decode_body,
    is_authenticated_hello,
)
from ira.wire.link2 import (
    DATA2_TYPE,
    Data2,
)


class Link:
    """One end of a link session.  See the module docstring."""

    def __init__(self, config: LinkConfig | None = None, *, rng: random.Random, now: float) -> None:
        self.config = cfg = config or LinkConfig()
        self._rng = rng
        self.state = LinkState.HANDSHAKE
        self.epoch = self._new_epoch()
        self.peer_epoch: int | None = None
        self._tag = 0
        self.version = 0
        #: version 2's books for lean DATA2 headers (None in a version-1 session)
        self._header2: Header2 | None = None
        self.features = 0
        self._deframer = None if cfg.packet else StreamDeframer(cfg.max_frame_bytes)
        self._counters = Counters()
        self._sender_stats = SenderStatistics()
        self._receiver_stats = ReceiverStatistics()
        self._sender: Sender | None = None
        #: the sender of the last session, whose RTT estimate the next one starts from
        self._previous_sender: Sender | None = None
        self._receiver: Receiver | None = None
        #: messages given to send_message while no session is up
        self._pending: deque[tuple[Channel, bytes]] = deque()
        self._events: deque[LinkEvent] = deque()
        self._refusals = Refusals(self._events)
        self._inbound = Inbound(cfg, self._events, self._counters)
        self._auth = None if cfg.psk is None else LinkAuth(cfg.psk, rng, self._refusals)
        self._handshake = Handshake(cfg, self._auth, now=now)
        self._dead_interval_s = cfg.dead_interval_s
        self._last_rx = now
        self._last_tx = now
        self._down_since = now

    def _new_epoch(self) -> int:
        return self._rng.getrandbits(64) | 1

    # --- the layer above ----------------------------------------------------------

    def send_message(self, payload: bytes, channel: Channel = Channel.CONTROL) -> None:
        """Queue one message; it is delivered exactly once, in order within its channel."""
        if self.state is LinkState.CLOSED:
            raise LocalProtocolError("send_message on a closed link")
        self._sender_stats.messages_queued += 1
        if self._sender is None:
            self._pending.append((channel, payload))
        else:
            self._sender.enqueue(channel, payload)

    def next_event(self) -> LinkEvent | None:
        if not self._events:
            return None
        event = self._events.popleft()
        if type(event) is MessageReceived:
            self._inbound.taken(event.payload, self._receiver)
        return event

    def close(self) -> None:
        self.state = step(self.state, LinkInput.CLOSE)

    def transport_lost(self, *, now: float) -> None:
        """The transport went away (the runtime reopens it): the link is down now.

        The session is kept: ``UP`` moves to ``DOWN`` at once (``LinkDown``)
        instead of after the dead interval, so the layers above learn of it now;
        the session timeout still counts from the last frame heard.  The frame
        being cut from the old stream is dropped (it cannot continue on the new one).
        """
        if self._deframer is not None:
            self._deframer.reset()
        if self.state is LinkState.UP:
            self._go_down(now)

    def reset_session(self, reason: str, *, now: float) -> None:
        """Reset the session because the layer above found the peer breaking its
        protocol (``RemoteProtocolError``): as a broken frame does, ``SessionLost``
        with ``reason``, a new epoch, a new HELLO.  Nothing happens without a session."""
        if self.peer_epoch is not None and self.state is not LinkState.CLOSED:
            self._reset_session(reason, now)

    @property
    def busy(self) -> bool:
        """True while messages are queued or not yet acknowledged."""
        if self._pending:
            return True
        s = self._sender
        return s is not None and (s.has_outstanding() or s.queued_bytes() > 0)

    # --- bytes in ---------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float) -> None:
        """Bytes from a stream transport, or one frame from a packet transport."""
        if self.state is LinkState.CLOSED:
            return
        c = self._counters
        c.wire_bytes_received += len(data)
        if self._deframer is not None:
            frames = self._deframer.feed(data)
        elif len(data) > self.config.max_frame_bytes:
            c.oversize_packets += 1
            return
        else:
            frames = [data]
        auth = self._auth
        for raw in frames:
            try:
                body = check_crc(raw)
            except BadCrc:
                c.bad_crc += 1
                continue
            if auth is not None:
                numbers = b""
                if len(body) > MAC_BYTES and body[0] == DATA2_TYPE:
                    numbers = data2_numbers(body[:-MAC_BYTES], self._sender, self._receiver)
                opened = auth.open(body, self.epoch, self.peer_epoch, now, numbers)
                if opened is None:
                    continue
                body = opened
            elif is_authenticated_hello(body):
                self._refusals.refuse(PEER_WANTS_KEY, now)
                continue
            try:
                frame = decode_body(body)
            except RemoteProtocolError:
                c.malformed += 1
                continue
            c.frames_received += 1
            if isinstance(frame, Hello):
                self._on_hello(frame, now)
                continue
            if isinstance(frame, HelloRefused):
                self._on_refused(frame)
                continue
            sender, receiver = self._sender, self._receiver
            if (
                frame.tag != self._tag
                or sender is None
                or receiver is None
                or (type(frame) is Data2 and self._header2 is None)  # not of this session
            ):
                c.stale += 1
                continue
            self._heard(now)
            if self._handshake.confirming:
                self._handshake.confirmed()
            if isinstance(frame, (Data, Data2)):
                try:
                    if isinstance(frame, Data2):
                        self._inbound.on_data2(frame, sender, receiver, self._header2, now)
                    else:
                        self._inbound.on_data(frame, sender, receiver, self._header2, now)
                except RemoteProtocolError as exc:
                    # a CRC-valid frame of this session that breaks the protocol: not
                    # noise, so the session cannot be trusted any more; reset it
                    self._reset_session(str(exc), now)
            else:
                self._inbound.on_ack(frame, sender, self._header2, now)

    def _heard(self, now: float) -> None:
        self._last_rx = now
        if self.state is LinkState.DOWN:
            self.state = step(self.state, LinkInput.FRAME_OF_SESSION)
            self._events.append(LinkUp(down_s=now - self._down_since))
            if self._sender is not None:
                self._sender.resend_all(now)

    def _on_hello(self, h: Hello, now: float) -> None:
        hs = self._handshake
        common = min(h.version_max, self.config.version_max)
        refused = refusal(h, common)
        if refused is not None:
            self._counters.hellos_refused += 1
            hs.refusal_due = (h.epoch, refused)
            self._events.append(refused_hello(h, refused, self.config.version_max))
            return
        if self._auth is not None and not self._auth.on_hello(h, self.epoch):
            # a HELLO with a MAC proves who made it, not when: answered, nothing else
            if h.ack:
                self._counters.stale += 1
            else:
                hs.ack_due = True
            return
        if h.ack and h.peer_epoch != self.epoch:
            self._counters.stale += 1  # answers a HELLO of an earlier incarnation of ours
            return
        if not h.ack:
            hs.ack_due = True
        if h.epoch == self.peer_epoch:
            self._heard(now)
            if hs.confirming:
                hs.confirmed()
            return
        if self.peer_epoch is not None:
            discarded = self._drop_session()
            self._counters.peer_restarts += 1
            self._events.append(PeerRestarted(self.peer_epoch, h.epoch, discarded))
        self._start_session(h, common, now)
        if self._auth is not None:
            self._auth.renew()  # whatever answered the old nonce is stale now
            hs.confirm(now)
        if h.ack and hs.sent_at is not None and self._sender is not None:
            # the handshake's round trip (to the latest HELLO: if an earlier one was
            # answered this underestimates, which costs at most a needless resend)
            self._sender.seed_rtt(now - hs.sent_at)

    def _on_refused(self, r: HelloRefused) -> None:
        if r.peer_epoch != self.epoch:
            self._counters.stale += 1  # answers a HELLO of an earlier incarnation of ours
            return
        self._counters.refused_by_peer += 1
        self._events.append(refused_by_peer(r, self.config.version_max))

    def _reset_session(self, reason: str, now: float) -> None:
        """Tear the session down at once (the peer broke the protocol within it), as the
        session timeout does: a new epoch, so the peer sees this end restart."""
        self._counters.session_resets += 1
        self._tear_down(reason, now, LinkInput.PROTOCOL_VIOLATED)

    def _tear_down(self, reason: str, now: float, cause: LinkInput) -> None:
        old = self.peer_epoch
        discarded = self._drop_session()
        self._events.append(SessionLost(old or 0, discarded, reason))
        self.state = step(self.state, cause)
        self.peer_epoch = None
        self.epoch = self._new_epoch()  # the peer must see that this session is gone
        self._handshake.restart(now)

    def _drop_session(self) -> int:
        discarded = len(self._pending)
        self._pending.clear()
        if self._sender is not None:
            discarded += self._sender.unacked_messages()
        self._counters.messages_discarded += discarded
        self._previous_sender = self._sender or self._previous_sender
        self._sender = self._receiver = None
        self._header2 = None
        self._inbound.reset()
        self._handshake.confirming = False
        return discarded

    def _start_session(self, h: Hello, version: int, now: float) -> None:
        cfg = self.config
        self.peer_epoch = h.epoch
        self._tag = (self.epoch ^ h.epoch) & 0xFFFF
        self.version = version
        self.features = self._handshake.offered & h.features
        peer_frame = min(h.max_frame_bytes, 1 << 24)
        self._sender = session_sender(
            cfg, h, version, peer_frame, keyed=self._auth is not None, stats=self._sender_stats
        )
        if self._previous_sender is not None:
            self._sender.inherit_rtt(self._previous_sender)  # same line, new peer session
        self._receiver = Receiver(cfg.window_bytes, cfg.max_message_bytes, self._receiver_stats)
        # the peer starts from the window of our HELLO
        self._header2 = None
        if version >= 2:
            self._header2 = Header2(cfg.window_bytes, cfg.window_bytes)
            self._inbound.advertised_edge = cfg.window_bytes
        self._receiver.backlog_bytes = self._inbound.backlog_bytes
        while self._pending:
            channel, payload = self._pending.popleft()
            self._sender.enqueue(channel, payload)
        self._dead_interval_s = dead_interval(cfg, h)
        self.state = step(self.state, LinkInput.SESSION_STARTED)
        self._handshake.due = None
        self._last_rx = now
        self._counters.sessions += 1
        self._events.append(SessionStarted(self.epoch, h.epoch, self.features, peer_frame, version))

    # --- bytes out ----------------------------------------------------------------

    def data_to_send(self, *, now: float) -> list[bytes]:
        """What to write now: one chunk of stream bytes, or one item per packet."""
        if self.state is LinkState.CLOSED:
            return []
        frames: list[bytes] = []
        self._handshake.frames(now, self.epoch, self.peer_epoch, frames)
        handshake_frames = len(frames)
        #: DATA2 frames' whole seq and ack, for their MACs (by index in ``frames``)
        numbers: dict[int, bytes] = {}
        sender, receiver = self._sender, self._receiver
        if sender is not None and receiver is not None:
            inbound = self._inbound
            idle = now >= self._last_tx + self.config.keepalive_interval_s
            if self.state is LinkState.UP:
                # an ACK or a keepalive that is due rides in a DATA frame if there is
                # data for one (DATA frames carry no SACK ranges or held bitmap: not
                # past a gap, and not for a window update, which goes at once)
                due = inbound.ack_due
                carry = (idle or (due is not None and now >= due)) and not inbound.ack_now
                segments = sender.segments_to_send(now, carry_ack=carry and not receiver.has_gaps)
                if segments and self._header2 is not None:
                    keyed = self._auth is not None
                    data2_frames(
                        segments,
                        sender,
                        receiver,
                        self._header2,
                        inbound,
                        self._tag,
                        keyed,
                        frames,
                        numbers,
                    )
                    if not receiver.has_gaps and not inbound.ack_now:
                        inbound.ack_due = None
                        inbound.unacked_segments = 0
                elif segments:
                    data_frames(segments, self._tag, receiver, inbound, frames)
                    if not receiver.has_gaps and not inbound.ack_now:
                        inbound.ack_due = None
                        inbound.unacked_segments = 0
            due = inbound.ack_due
            ack_now = inbound.ack_now or (due is not None and now >= due)
            if ack_now or (idle and not frames):
                frames.append(
                    inbound.ack_frame(
                        receiver,
                        self._tag,
                        sack=bool(self.features & 1),
                        version2=self._header2 is not None,
                        probe=self.state is LinkState.DOWN,
                    )
                )
                self._counters.ack_frames_sent += 1
                inbound.ack_due = None
                inbound.ack_now = False
                inbound.unacked_segments = 0
        if not frames:
            return []
        auth = self._auth
        if auth is not None and len(frames) > handshake_frames and self.peer_epoch is not None:
            epoch, peer = self.epoch, self.peer_epoch
            frames[handshake_frames:] = [
                auth.seal(f, epoch, peer, numbers.get(i, b""))
                for i, f in enumerate(frames[handshake_frames:], handshake_frames)
            ]
        self._last_tx = now
        c = self._counters
        c.frames_sent += len(frames)
        if self._deframer is None:
            c.wire_bytes_sent += sum(len(f) for f in frames)
            return frames
        chunk = encode_frames(frames)
        c.wire_bytes_sent += len(chunk)
        return [chunk]

    # --- time -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` (then ``data_to_send``) must be called next."""
        state = self.state
        if state is LinkState.UP:
            # the common case, spelled out: it is asked after every turn of the loop
            due = self._last_rx + self._dead_interval_s
            keepalive = self._last_tx + self.config.keepalive_interval_s
            if keepalive < due:
                due = keepalive
            sender = self._sender
            if sender is not None:
                timer = sender.deadline
                if timer is not None and timer < due:
                    due = timer
            ack = self._inbound.ack_due
            if ack is not None and ack < due:
                due = ack
            hello = self._handshake.due
            if hello is not None and hello < due:
                due = hello
            return due
        if state is LinkState.CLOSED:
            return None
        cfg = self.config
        candidates: list[float] = []
        hello = self._handshake.due
        if hello is not None:
            candidates.append(hello)
        if state is LinkState.DOWN:
            candidates.append(self._last_rx + cfg.session_timeout_s)
            candidates.append(self._last_tx + cfg.keepalive_interval_s)
            ack = self._inbound.ack_due
            if ack is not None:
                candidates.append(ack)
        return min(candidates) if candidates else None

    def handle_timeout(self, *, now: float) -> None:
        cfg = self.config
        if self.state is LinkState.UP:
            # (now >= last_rx + dead) does not imply (now - last_rx >= dead) in floats
            silent = max(now - self._last_rx, self._dead_interval_s)
            if now >= self._last_rx + self._dead_interval_s:
                self._go_down(now, silent)
            elif self._sender is not None:
                self._sender.on_timeout(now)
        if self.state is LinkState.DOWN and now >= self._last_rx + cfg.session_timeout_s:
            self._counters.sessions_lost += 1
            self._tear_down(
                f"silent for {now - self._last_rx:.1f} s", now, LinkInput.SESSION_TIMED_OUT
            )

    def _go_down(self, now: float, silent_s: float | None = None) -> None:
        """UP -> DOWN: after the dead interval's silence, or at once when the transport is
        lost (``silent_s`` None: silent since the last frame)."""
        cause = LinkInput.TRANSPORT_LOST if silent_s is None else LinkInput.DEAD_INTERVAL_SILENT
        self.state = step(self.state, cause)
        self._down_since = self._last_rx
        self._counters.link_downs += 1
        silent = now - self._last_rx if silent_s is None else silent_s
        self._events.append(LinkDown(silent_s=silent))
        if self._sender is not None:
            self._sender.pause()

    # --- counters -------------------------------------------------------------------

    def messages_outstanding(self) -> int:
        """Messages handed to ``send_message`` and neither acknowledged nor discarded
        (what ``statistics()`` gives as queued - acked - discarded, without building it:
        a paced device asks once a turn)."""
        s = self._sender_stats
        return s.messages_queued - s.messages_acked - self._counters.messages_discarded

    def statistics(self) -> LinkStatistics:
        return collect(
            self.state.value,
            self.epoch,
            self.peer_epoch,
            self._counters,
            self._sender_stats,
            self._receiver_stats,
            self._sender,
            self._deframer,
            self._refusals.total,
        )
