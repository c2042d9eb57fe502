"""This end's side of the HELLO exchange (sans-I/O): what it sends, what it refuses.

In ``HANDSHAKE`` a link end sends HELLO (magic, version range, its epoch, features,
the largest frame and window it accepts, its keepalive interval) with backoff until
the peer answers; ``Handshake`` keeps that schedule, the HELLO_ACK and the
HELLO_REFUSED due, and encodes them.  What a HELLO does to the session (same epoch,
a restart, a first session) is the core's: ``ira.link.core`` has the rules.

A HELLO this end cannot accept (no common version, a field out of range) is answered
with HELLO_REFUSED: ``refusal`` says why, ``refused_hello`` reports it
(``HandshakeRefused``), as ``refused_by_peer`` reports a HELLO_REFUSED answering ours
(the handshake goes on with its backoff).
"""

from __future__ import annotations

from ira.link.auth import LinkAuth
from ira.link.config import LinkConfig
from ira.link.events import HandshakeRefused
from ira.link.sender import Sender, SenderStatistics
from ira.link.tailprobe import TailProbe
from ira.wire.link import (
    CRC_BYTES,
    DATA_HEADER_BYTES,
    MAC_BYTES,
    MIN_FRAME_BYTES,
    MIN_WINDOW_BYTES,
    REFUSAL_MEANINGS,
    VERSION_MIN,
    Feature,
    Hello,
    HelloRefused,
    Refusal,
    encode_hello,
    encode_hello_refused,
)
from ira.wire.link2 import ACK_HOLD_S, DATA2_MAX_HEADER_BYTES


def refusal(h: Hello, common_version: int) -> Refusal | None:
    """Why this end cannot accept a HELLO, or None (PROTOCOL.md, "Errors and refusals")."""
    if common_version < max(h.version_min, VERSION_MIN):
        return Refusal.VERSION
    if h.max_frame_bytes < MIN_FRAME_BYTES:
        return Refusal.MAX_FRAME_BYTES
    if h.window_bytes < MIN_WINDOW_BYTES:
        return Refusal.WINDOW_BYTES
    if h.keepalive_ms == 0:
        return Refusal.KEEPALIVE_MS
    if h.epoch == 0:
        return Refusal.EPOCH
    return None


def _offered(h: Hello, refusal: Refusal) -> str:
    """The refused field as the peer offered it."""
    match refusal:
        case Refusal.MAX_FRAME_BYTES:
            return f"max_frame_bytes {h.max_frame_bytes}, at least {MIN_FRAME_BYTES} required"
        case Refusal.WINDOW_BYTES:
            return f"window_bytes {h.window_bytes}, at least {MIN_WINDOW_BYTES} required"
        case Refusal.KEEPALIVE_MS:
            return "keepalive_ms 0"
        case _:
            return f"epoch {h.epoch}"


def refused_hello(h: Hello, refusal: Refusal, version_max: int) -> HandshakeRefused:
    """The event of this end refusing the peer's HELLO (``version_max``: ours)."""
    detail = f"refused the peer's HELLO ({_offered(h, refusal)}): {REFUSAL_MEANINGS[refusal]}"
    if refusal is Refusal.VERSION:
        detail = (
            f"the peer speaks link protocol versions {h.version_min}..{h.version_max} "
            f"and this end {VERSION_MIN}..{version_max}: install matching "
            "ira releases on both ends"
        )
    return HandshakeRefused(False, int(refusal), detail, h.version_min, h.version_max)


def refused_by_peer(r: HelloRefused, version_max: int) -> HandshakeRefused:
    """The event of the peer refusing our HELLO (``version_max``: ours)."""
    reason = Refusal(r.reason)
    detail = f"the peer refused our HELLO: {REFUSAL_MEANINGS[reason]}"
    if reason is Refusal.VERSION:
        detail += (
            f" (it speaks link protocol versions {r.version_min}..{r.version_max}, this end "
            f"{VERSION_MIN}..{version_max}: install matching ira releases on "
            "both ends)"
        )
    return HandshakeRefused(True, r.reason, detail, r.version_min, r.version_max)


def session_sender(
    cfg: LinkConfig,
    h: Hello,
    version: int,
    peer_frame: int,
    *,
    keyed: bool,
    stats: SenderStatistics,
) -> Sender:
    """The sender of a session the peer's HELLO started, fitted to what it accepts
    (``peer_frame``: its largest frame; ``keyed``: frames carry a MAC)."""
    header = max(DATA_HEADER_BYTES, DATA2_MAX_HEADER_BYTES if version >= 2 else 0)
    overhead = header + CRC_BYTES + (MAC_BYTES if keyed else 0)
    # version 2: the tail-loss probe, allowing the peer its ack delay (ours: the
    # same implementation); the peer is alive while its keepalives arrive
    peer_keepalive_s = h.keepalive_ms / 1000
    probe = TailProbe(cfg.ack_delay_s, 2 * peer_keepalive_s) if version >= 2 else None
    # the peer's timers allow for its ack hold (version 2) or ack delay
    held = max(cfg.ack_delay_s, ACK_HOLD_S) if version >= 2 else cfg.ack_delay_s
    return Sender(
        cfg,
        peer_frame - overhead,
        h.window_bytes,
        stats,
        tail_probe=probe,
        peer_ack_hold_s=held,
    )


def dead_interval(cfg: LinkConfig, h: Hello) -> float:
    """How long the peer of this HELLO may be silent before the link is down."""
    # the peer promised a frame at least every keepalive interval: never call it
    # dead before four of them went missing, whatever our own setting
    # (but not past half the session timeout: a peer cannot stretch that)
    peer_keepalive_s = h.keepalive_ms / 1000
    return max(cfg.dead_interval_s, min(4 * peer_keepalive_s, cfg.session_timeout_s / 2))


class Handshake:
    """When this end sends HELLO, HELLO_ACK and HELLO_REFUSED, and their bytes."""

    def __init__(self, config: LinkConfig, auth: LinkAuth | None, *, now: float) -> None:
        self.config = config
        self._auth = auth
        #: the features this end offers: AUTH exactly when it holds a key
        self.offered = config.features & ~Feature.AUTH | (Feature.AUTH if auth else 0)
        #: when the next HELLO is due (None: none is, a session is up and confirmed)
        self.due: float | None = now
        self._interval = config.hello_interval_s
        #: a HELLO_ACK is due
        self.ack_due = False
        #: a HELLO_REFUSED to send: (the refused epoch, the reason)
        self.refusal_due: tuple[int, Refusal] | None = None
        #: when the latest HELLO went (the handshake's round trip starts there)
        self.sent_at: float | None = None
        #: with a key: a session started here that the peer has not yet shown it has
        #: (its HELLO_ACK is resent, as a HELLO is, until a frame of the session arrives)
        self.confirming = False

    def restart(self, now: float) -> None:
        """Send HELLO from now on, with the backoff from its start (no session)."""
        self.due = now
        self._interval = self.config.hello_interval_s

    def confirm(self, now: float) -> None:
        """With a key: a session started here; resend HELLO_ACK until the peer shows it."""
        self.ack_due = True  # the peer's proof that this end is live
        self.confirming = True
        self._interval = self.config.hello_interval_s
        self.due = now + self._interval

    def confirmed(self) -> None:
        """A frame of the session arrived: the handshake is done."""
        self.confirming = False
        self.due = None

    def frames(self, now: float, epoch: int, peer_epoch: int | None, frames: list[bytes]) -> None:
        """Append the handshake frames due now to ``frames``."""
        if self.due is not None and now >= self.due:
            frames.append(self._hello(epoch, peer_epoch, ack=self.confirming))
            self.due = now + self._interval
            self.sent_at = now
            self._interval = min(self._interval * 2, 4 * self.config.keepalive_interval_s)
        if self.ack_due:
            self.ack_due = False
            if peer_epoch is not None or self._auth is not None:
                frames.append(self._hello(epoch, peer_epoch, ack=True))
        if self.refusal_due is not None:
            refused_epoch, reason = self.refusal_due
            self.refusal_due = None
            version_max = self.config.version_max
            frame = encode_hello_refused(
                HelloRefused(VERSION_MIN, version_max, epoch, refused_epoch, reason)
            )
            if self._auth is not None:
                frame = self._auth.seal_refusal(frame, epoch, refused_epoch)
            frames.append(frame)

    def _hello(self, epoch: int, peer_epoch: int | None, *, ack: bool) -> bytes:
        cfg, auth = self.config, self._auth
        echoed = auth.answer_epoch if auth is not None and ack else peer_epoch or 0
        frame = encode_hello(
            Hello(
                ack,
                VERSION_MIN,
                cfg.version_max,
                epoch,
                echoed,
                self.offered,
                cfg.max_frame_bytes,
                cfg.window_bytes,
                round(cfg.keepalive_interval_s * 1000),
            )
        )
        return frame if auth is None else auth.seal_hello(frame, epoch, echoed, ack=ack)
