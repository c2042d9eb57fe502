"""The pre-shared key's part of a link end: MACs in and out, handshake nonces (sans-I/O).

Theory of operation
-------------------
With a pre-shared key (``LinkConfig.psk``) every frame carries a MAC
(``ira.wire.link.authenticate``): DATA and ACK frames are keyed with both
epochs of the session, so a frame of another session, of another key or
forged does not verify and is dropped (counted as ``drop_unauthenticated``).

A HELLO carries the sender's epoch and a random *nonce*; the MAC shows it was
made with the key, not when.  A recorded HELLO replayed later verifies, so a
HELLO alone never starts or resets a session: it is answered with a HELLO_ACK
that echoes its nonce (``peer_nonce``) and changes nothing else.  Only a
HELLO_ACK that echoes this end's *current* nonce and epoch is fresh: it can
start a session, or (from a new epoch) replace the session of a peer that
restarted.  An end that starts a session takes a new nonce, so whatever was
recorded before is stale, and answers with a HELLO_ACK of its own: the
peer's proof in turn.  A handshake from scratch::

    A: HELLO     epoch a, nonce nA
    B: HELLO_ACK epoch b, peer a, nonce nB, peer_nonce nA   (B: nothing changes)
    A: HELLO_ACK epoch a, peer b, nonce nA', peer_nonce nB  (A: session a-b, nonce nA')
    B: HELLO_ACK epoch b, peer a, nonce nB', peer_nonce nA' (B: session a-b, nonce nB')

A HELLO_REFUSED from an end with a key carries a MAC keyed with its own
epoch and the refused HELLO's (``seal_refusal``); one that verifies is acted on
as without a key (counted ``refused_by_peer``, reported).  One without a MAC
could come from anyone on the line: it is refused (``drop_unauthenticated``)
and its reason reported as the peer's unverified word, never acted on.

Refusals are reported as ``AuthRefused``: the first at once, then at most one
every ``REPORT_INTERVAL_S`` with the number refused since the last.
"""

from __future__ import annotations

import random
import struct
from collections import deque

from ira.errors import RemoteProtocolError
from ira.link.events import AuthRefused, LinkEvent
from ira.wire.link import (
    CRC_BYTES,
    MAC_BYTES,
    REFUSAL_MEANINGS,
    FrameType,
    Hello,
    HelloRefused,
    Refusal,
    authenticate,
    decode_body,
    encode_hello_refused,
    is_authenticated_hello,
    is_hello,
    mac_key,
    verify,
    verify_hello,
)

#: frame types that exist only within a session (tagged and MAC'd with its epochs)
_SESSION_FRAMES = (FrameType.DATA, FrameType.ACK, FrameType.DATA2)
#: a HELLO_REFUSED body without its CRC and MAC, and where its epoch and peer_epoch lie
_REFUSED_BYTES = len(encode_hello_refused(HelloRefused(1, 1, 1, 1, Refusal.VERSION))) - CRC_BYTES
_REFUSED_EPOCHS = struct.Struct("<QQ")
_REFUSED_EPOCHS_AT = 7
#: at most one ``AuthRefused`` this often (seconds)
REPORT_INTERVAL_S = 10.0

NO_KEY = "the peer offers no pre-shared key: give both ends the same --psk-file"
BAD_HELLO = "HELLO with a wrong MAC: the peer has another key, or it is forged"
BAD_FRAME = "frame with a wrong MAC: forged, from another session, or another key"
PEER_WANTS_KEY = "the peer requires a pre-shared key: give this end its --psk-file"
BAD_REFUSAL = "HELLO_REFUSED with a wrong MAC: the peer has another key, or it is forged"
UNVERIFIED_REFUSAL = "refused by peer, unauthenticated (not acted on; anyone can send it)"


class Refusals:
    """Counts refused frames and reports them, rate-limited, as ``AuthRefused``."""

    def __init__(self, events: deque[LinkEvent]) -> None:
        self._events = events
        #: every frame refused so far
        self.total = 0
        self._unreported = 0
        self._reported_at: float | None = None

    def refuse(self, reason: str, now: float) -> None:
        self.total += 1
        self._unreported += 1
        last = self._reported_at
        if last is None or now - last >= REPORT_INTERVAL_S:
            self._events.append(AuthRefused(reason, self._unreported))
            self._unreported = 0
            self._reported_at = now


class LinkAuth:
    """MACs and handshake nonces of one link end that holds a pre-shared key."""

    def __init__(self, psk: bytes, rng: random.Random, refusals: Refusals) -> None:
        self._key = mac_key(psk)
        self._rng = rng
        self.refusals = refusals
        #: this end's handshake nonce; a fresh HELLO_ACK echoes it
        self.nonce = self._new_nonce()
        #: the epoch and nonce of the HELLO this end answers next
        self.answer_epoch = 0
        self.answer_nonce = 0
        #: nonces of the last HELLO that verified
        self._heard_nonce = 0
        self._heard_peer_nonce = 0

    def _new_nonce(self) -> int:
        return self._rng.getrandbits(64) | 1

    def renew(self) -> None:
        """Take a new nonce (a session started): what answered the old one is stale."""
        self.nonce = self._new_nonce()

    # --- frames out ---------------------------------------------------------------

    def seal(self, frame: bytes, local_epoch: int, peer_epoch: int, numbers: bytes = b"") -> bytes:
        """A DATA, DATA2 or ACK frame with its MAC (a DATA2 frame's ``numbers``: its
        whole seq and ack, ``ira.wire.link.full_numbers``)."""
        return authenticate(frame, self._key, local_epoch, peer_epoch, numbers=numbers)

    def seal_refusal(self, frame: bytes, epoch: int, refused_epoch: int) -> bytes:
        """A HELLO_REFUSED frame with its MAC, keyed with this end's epoch and the
        epoch of the HELLO it refuses."""
        return authenticate(frame, self._key, epoch, refused_epoch)

    def seal_hello(self, frame: bytes, epoch: int, peer_epoch: int, *, ack: bool) -> bytes:
        nonces = (self.nonce, self.answer_nonce if ack else 0)
        return authenticate(frame, self._key, epoch, peer_epoch, nonces)

    # --- frames in ----------------------------------------------------------------

    def open(
        self,
        body: memoryview,
        local_epoch: int,
        peer_epoch: int | None,
        now: float,
        numbers: bytes = b"",
    ) -> memoryview | None:
        """A verified frame body without its MAC (and nonces), or None: refused.

        Without a session (``peer_epoch`` None) a DATA or ACK frame cannot be
        verified: it comes back as it is, and the core drops it as stale; any other
        frame but a HELLO is refused.
        """
        if body and body[0] == FrameType.HELLO_REFUSED:
            return self._open_refusal(body, local_epoch, now)
        if is_hello(body):
            opened = verify_hello(body, self._key)
            if opened is None:
                self.refusals.refuse(BAD_HELLO if is_authenticated_hello(body) else NO_KEY, now)
                return None
            plain, self._heard_nonce, self._heard_peer_nonce = opened
            return plain
        if peer_epoch is None:
            if body[0] in _SESSION_FRAMES:
                return body  # the core drops it as stale
            self.refusals.refuse(BAD_FRAME, now)  # nothing else is trusted without a session
            return None
        plain_frame = verify(body, self._key, peer_epoch, local_epoch, numbers)
        if plain_frame is None:
            self.refusals.refuse(BAD_FRAME, now)
        return plain_frame

    def _open_refusal(self, body: memoryview, local_epoch: int, now: float) -> memoryview | None:
        """A HELLO_REFUSED whose MAC verifies, without it; else None (refused).  One
        without a MAC that answers this end is reported with the reason it gives."""
        if len(body) == _REFUSED_BYTES + MAC_BYTES:
            epoch, refused_epoch = _REFUSED_EPOCHS.unpack_from(body, _REFUSED_EPOCHS_AT)
            plain = verify(body, self._key, epoch, refused_epoch)
            if plain is None:
                self.refusals.refuse(BAD_REFUSAL, now)
            return plain
        try:
            frame = decode_body(body)
        except RemoteProtocolError:
            frame = None
        if isinstance(frame, HelloRefused) and frame.peer_epoch == local_epoch:
            meaning = REFUSAL_MEANINGS[Refusal(frame.reason)]
            self.refusals.refuse(f"{UNVERIFIED_REFUSAL}: {meaning}", now)
        else:
            self.refusals.refuse(BAD_FRAME, now)
        return None

    def on_hello(self, h: Hello, local_epoch: int) -> bool:
        """True when ``h`` (just opened) is fresh: a HELLO_ACK answering this end's
        current epoch and nonce.  A HELLO is never fresh; it is to be answered."""
        if not h.ack:
            self.answer_epoch, self.answer_nonce = h.epoch, self._heard_nonce
            return False
        if h.peer_epoch != local_epoch or self._heard_peer_nonce != self.nonce:
            return False
        self.answer_epoch, self.answer_nonce = h.epoch, self._heard_nonce
        return True
