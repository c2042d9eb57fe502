"""Link-layer frames: the construct definitions are the specification.

A *frame* is what one COBS chunk (stream transports) or one transfer (packet
transports) carries once decoded: ``body || crc32(body)`` with the CRC-32
(IEEE 802.3, as ``zlib.crc32``/``crcmod`` "crc-32") little-endian at the end.
The first byte of the body is the frame type.

Six frame types:

``HELLO`` / ``HELLO_ACK``
    session handshake: magic, supported version range, the sender's 64-bit
    epoch, the epoch it believes the receiver has (0 when unknown), feature
    bits, the largest frame it can receive, its receive window and keepalive
    interval.
``DATA``
    a segment of one channel's byte stream at a 32-bit position of the
    link-wide sequence space, with a piggy-backed cumulative ack and window.
``DATA2``
    version 2's DATA: the same fields in fewer bytes (``ira.wire.link2``); a
    session of version 2 sends DATA2, never DATA.
``ACK``
    cumulative ack, window, up to ``MAX_SACK_BLOCKS`` selective-ack ranges;
    also the keepalive.
``HELLO_REFUSED``
    answers a HELLO this end cannot accept (no common version, a field out of
    range): this end's version range, the refused HELLO's epoch and a reason
    (``Refusal``), so the peer can log what to fix; it keeps offering HELLOs
    with backoff.

``tx`` numbers every DATA transmission (retransmissions too) modulo 2**16;
``echo`` returns the ``tx`` of the last DATA frame received, and ACK frames add
``held``, a bitmap of the 64 transmissions up to the echoed one (bit i: ``echo -
i`` arrived and is held).  Links never reorder, so the sender knows exactly which
of its transmissions were lost, however many gaps there are, with no timers and
no RTT ambiguity.

``tag`` in DATA and ACK frames is ``(local_epoch ^ peer_epoch) & 0xFFFF``: a
frame left over from an earlier session (a peer that restarted) does not carry
the current tag and is dropped as stale.

The per-frame hot path uses the ``struct`` codecs below; they are tested
byte-for-byte against the construct schemas (tests/wire/test_link_frames.py),
which stay the reference.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import construct as cs
import crcmod.predefined

from ira.errors import RemoteProtocolError
from ira.wire import Limit, MessageSpec, WireSpec
from ira.wire.link2 import DATA2_TYPE, Data2, Data2Body, decode_data2, encode_data2

#: the magic that opens every HELLO; a frame with another magic is not ira's
MAGIC = b"IRAL"
#: link protocol versions this implementation speaks
VERSION_MIN = 1
VERSION_MAX = 2
#: at most this many selective-ack ranges in one ACK
MAX_SACK_BLOCKS = 4
#: the advertised window is counted in units of this many bytes
WINDOW_UNIT_BYTES = 256
#: the smallest frame every implementation must accept (bytes, CRC included)
MIN_FRAME_BYTES = 64
#: bytes of CRC at the end of every frame
CRC_BYTES = 4
#: bytes of the MAC of an authenticated frame (HMAC-SHA-256, truncated)
MAC_BYTES = 16
#: a pre-shared key has at least this many bytes
PSK_MIN_BYTES = 16
#: the smallest window_bytes a peer may offer
MIN_WINDOW_BYTES = 4 * WINDOW_UNIT_BYTES


class FrameType(enum.IntEnum):
    HELLO = 1
    HELLO_ACK = 2
    DATA = 3
    ACK = 4
    HELLO_REFUSED = 5
    DATA2 = DATA2_TYPE


class Refusal(enum.IntEnum):
    """Why a HELLO was refused (``HELLO_REFUSED.reason``)."""

    #: the version ranges do not overlap
    VERSION = 1
    #: ``max_frame_bytes`` below MIN_FRAME_BYTES
    MAX_FRAME_BYTES = 2
    #: ``window_bytes`` below MIN_WINDOW_BYTES
    WINDOW_BYTES = 3
    #: ``keepalive_ms`` is 0
    KEEPALIVE_MS = 4
    #: ``epoch`` is 0
    EPOCH = 5


REFUSAL_MEANINGS = {
    Refusal.VERSION: "no link protocol version both ends speak",
    Refusal.MAX_FRAME_BYTES: "max_frame_bytes below MIN_FRAME_BYTES",
    Refusal.WINDOW_BYTES: "window_bytes below MIN_WINDOW_BYTES",
    Refusal.KEEPALIVE_MS: "keepalive_ms is 0",
    Refusal.EPOCH: "epoch is 0",
}


class Feature(enum.IntFlag):
    """Link feature bits; the session uses the AND of both sides' sets."""

    SACK = 1 << 0  # selective acknowledgements in ACK frames
    AUTH = 1 << 1  # every frame carries a MAC under a pre-shared key (see "Authentication")


#: ACK flag: the sender asks for an immediate ACK (keepalive probe)
ACK_FLAG_PROBE = 0x01
#: ACK flag (version 2): ``echo`` is stale (an earlier frame of the sender already
#: carried it: a keepalive, a repeated ACK): no round-trip sample may be taken from it
ACK_FLAG_STALE_ECHO = 0x02
#: every ACK flag
ACK_FLAGS = ACK_FLAG_PROBE | ACK_FLAG_STALE_ECHO
#: DATA flags: the low two bits carry the channel
DATA_CHANNEL_MASK = 0x03

# --- construct definitions (the specification) ---------------------------------

HelloBody = cs.Struct(
    "magic" / cs.Const(MAGIC) * "always `IRAL`: not an ira link otherwise",
    "version_min" / cs.Int8ul * "lowest link protocol version the sender speaks",
    "version_max" / cs.Int8ul * "highest link protocol version the sender speaks",
    "epoch" / cs.Int64ul * "the sender's random epoch, new at every start (never 0)",
    "peer_epoch" / cs.Int64ul * "the epoch the sender believes the receiver has; 0 if unknown",
    "features" / cs.Int32ul * "feature bits offered (Feature); the session uses the AND",
    "max_frame_bytes" / cs.Int32ul * "largest frame the sender accepts (CRC included, before COBS)",
    "window_bytes" / cs.Int32ul * "receive window: bytes the sender accepts beyond its ack",
    "keepalive_ms" / cs.Int16ul * "the sender sends something at least this often (ms)",
    cs.Terminated,
)

DataBody = cs.Struct(
    "flags" / cs.Int8ul * "bits 0-1: channel (0 CONTROL, 1 BULK); other bits 0",
    cs.Check(cs.this.flags <= DATA_CHANNEL_MASK),
    "tag" / cs.Int16ul * "(local_epoch ^ peer_epoch) & 0xFFFF: frames of other sessions are stale",
    "seq"
    / cs.Int32ul
    * "position of the first payload byte in the link-wide byte sequence (mod 2**32)",
    "ack" / cs.Int32ul * "cumulative ack: every byte below this was received",
    "window" / cs.Int16ul * "receive window above `ack`, in units of WINDOW_UNIT_BYTES",
    "tx"
    / cs.Int16ul
    * "transmission number of this frame (mod 2**16), new for every retransmission",
    "echo" / cs.Int16ul * "`tx` of the last DATA frame the sender received (0: none yet)",
    "payload" / cs.GreedyBytes * "bytes of the channel's stream (LEB128-length-prefixed messages)",
)

RefusedBody = cs.Struct(
    "magic" / cs.Const(MAGIC) * "always `IRAL`",
    "version_min" / cs.Int8ul * "lowest link protocol version the sender speaks",
    "version_max" / cs.Int8ul * "highest link protocol version the sender speaks",
    "epoch" / cs.Int64ul * "the sender's epoch",
    "peer_epoch" / cs.Int64ul * "the epoch of the HELLO refused",
    "reason" / cs.Int8ul * "why (Refusal): 1 version, 2 max_frame_bytes, 3 window_bytes, "
    "4 keepalive_ms, 5 epoch",
    cs.Check(cs.this.reason >= int(min(Refusal))),
    cs.Check(cs.this.reason <= int(max(Refusal))),
    cs.Terminated,
)

SackBlock = cs.Struct(
    "start" / cs.Int32ul * "first byte of a received range",
    "end" / cs.Int32ul * "byte after the range",
)

AckBody = cs.Struct(
    "flags"
    / cs.Int8ul
    * "bit 0: PROBE (answer with an ACK at once); bit 1: STALE_ECHO (version 2: take no "
    "round-trip sample from `echo`); other bits 0",
    cs.Check(cs.this.flags <= ACK_FLAGS),
    "tag" / cs.Int16ul * "as in DATA",
    "ack" / cs.Int32ul * "cumulative ack",
    "window" / cs.Int16ul * "receive window above `ack`, in units of WINDOW_UNIT_BYTES",
    "echo" / cs.Int16ul * "`tx` of the last DATA frame received (0: none yet)",
    "held" / cs.Int64ul * "bit i set: transmission `echo - i` arrived and is held; clear: lost",
    "count" / cs.Rebuild(cs.Int8ul, cs.len_(cs.this.blocks)) * "number of SACK blocks",
    cs.Check(cs.this.count <= MAX_SACK_BLOCKS),
    "blocks" / cs.Array(cs.this.count, SackBlock) * "received ranges above `ack`, lowest first",
    cs.Terminated,
)

#: a frame body: the type, then that type's fields; the cases are keyed by the
#: integer, so the compiled schema builds like the interpreted one (an Enum field
#: would hand the Switch a name in one and an integer in the other)
FrameBody = cs.Struct(
    "type" / cs.Int8ul * "frame type (FrameType); any other value is refused",
    "body"
    / cs.Switch(
        cs.this.type,
        {
            int(FrameType.HELLO): HelloBody,
            int(FrameType.HELLO_ACK): HelloBody,
            int(FrameType.DATA): DataBody,
            int(FrameType.ACK): AckBody,
            int(FrameType.HELLO_REFUSED): RefusedBody,
            int(FrameType.DATA2): Data2Body,
        },
        default=cs.Error,
    ),
)

#: a whole frame as it is carried: the body followed by its CRC-32; the body is
#: parsed from every byte but the last CRC_BYTES, so DATA's greedy payload and the
#: Terminated of HELLO and ACK end where the CRC begins
Frame = cs.Struct(
    "fields" / cs.RawCopy(cs.OffsettedEnd(-CRC_BYTES, FrameBody)),
    "crc" / cs.Checksum(cs.Int32ul, lambda data: crc32(data), cs.this.fields.data),
    cs.Terminated,
)

#: what an authenticated HELLO or HELLO_ACK carries between its body and its CRC
HelloAuth = cs.Struct(
    "nonce" / cs.Int64ul * "the sender's handshake nonce: random, new after every session start",
    "peer_nonce" / cs.Int64ul * "the nonce of the HELLO this answers (0 in a HELLO: none yet)",
    "mac"
    / cs.Bytes(MAC_BYTES)
    * "HMAC-SHA-256/128 of the epochs and every byte before it (see Authentication)",
)

#: what an authenticated DATA or ACK frame carries between its body and its CRC
FrameAuth = cs.Struct(
    "mac"
    / cs.Bytes(MAC_BYTES)
    * "HMAC-SHA-256/128 of the epochs and every byte before it (see Authentication)",
)

# --- decoded frames -----------------------------------------------------------
# Named tuples rather than frozen dataclasses: as immutable, and three times
# cheaper to build, which counts twice per frame on the hot path.


class Hello(NamedTuple):
    """HELLO (``ack=False``) or HELLO_ACK (``ack=True``)."""

    ack: bool
    version_min: int
    version_max: int
    epoch: int
    peer_epoch: int
    features: int
    max_frame_bytes: int
    window_bytes: int
    keepalive_ms: int


class HelloRefused(NamedTuple):
    """HELLO_REFUSED: the sender could not accept the HELLO of ``peer_epoch``."""

    version_min: int
    version_max: int
    epoch: int
    peer_epoch: int
    reason: int


class Data(NamedTuple):
    channel: int
    tag: int
    seq: int
    ack: int
    window: int
    tx: int
    echo: int
    payload: bytes


class Ack(NamedTuple):
    probe: bool
    tag: int
    ack: int
    window: int
    echo: int
    held: int
    blocks: tuple[tuple[int, int], ...]
    #: version 2: the echo is no round-trip sample (ACK_FLAG_STALE_ECHO)
    stale_echo: bool = False


LinkFrame = Hello | Data | Ack | HelloRefused | Data2

# --- fast codecs (hot path) -------------------------------------------------------

_HELLO = struct.Struct("<B4sBBQQIIIH")
_DATA = struct.Struct("<BBHIIHHH")
_ACK = struct.Struct("<BBHIHHQB")
_REFUSED = struct.Struct("<B4sBBQQB")
_SACK = struct.Struct("<II")
_CRC = struct.Struct("<I")

_REFUSALS = frozenset(int(r) for r in Refusal)

DATA_HEADER_BYTES = _DATA.size
ACK_MIN_BYTES = _ACK.size


#: crcmod's CRC-32, the reference the fast one is tested against
reference_crc32: Callable[[bytes | bytearray | memoryview], int] = crcmod.predefined.mkCrcFun(
    "crc-32"
)
#: CRC-32 (IEEE 802.3) of some bytes, as every frame carries it: the standard
#: library's, ~10x faster than crcmod's on 64 KiB and it releases the interpreter
#: lock, so the link thread does not stall the others while it runs
crc32: Callable[[bytes | bytearray | memoryview], int] = zlib.crc32
#: the CRC-32 of any frame whose CRC is right (body and CRC together): the CRC's
#: residue, so checking a frame needs neither a slice nor an unpack
CRC_RESIDUE = 0x2144DF1C


def seal(body: bytes) -> bytes:
    """Append the CRC to a frame body."""
    return body + _CRC.pack(zlib.crc32(body))


def encode_hello(h: Hello) -> bytes:
    kind = FrameType.HELLO_ACK if h.ack else FrameType.HELLO
    return seal(
        _HELLO.pack(
            kind,
            MAGIC,
            h.version_min,
            h.version_max,
            h.epoch,
            h.peer_epoch,
            h.features,
            h.max_frame_bytes,
            h.window_bytes,
            h.keepalive_ms,
        )
    )


def encode_hello_refused(r: HelloRefused) -> bytes:
    return seal(
        _REFUSED.pack(
            FrameType.HELLO_REFUSED,
            MAGIC,
            r.version_min,
            r.version_max,
            r.epoch,
            r.peer_epoch,
            r.reason,
        )
    )


def encode_data_frame(
    channel: int, tag: int, seq: int, ack: int, window: int, tx: int, echo: int, payload: bytes
) -> bytes:
    """A whole DATA frame, CRC included (the link core's hot path)."""
    head = _DATA.pack(FrameType.DATA, channel & DATA_CHANNEL_MASK, tag, seq, ack, window, tx, echo)
    # the CRC runs on over the payload where it lies: the payload is copied once
    return b"".join((head, payload, _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))))


def encode_data(d: Data) -> bytes:
    return encode_data_frame(d.channel, d.tag, d.seq, d.ack, d.window, d.tx, d.echo, d.payload)


def encode_ack(a: Ack) -> bytes:
    if len(a.blocks) > MAX_SACK_BLOCKS:
        raise ValueError(f"at most {MAX_SACK_BLOCKS} SACK blocks")
    flags = (ACK_FLAG_PROBE if a.probe else 0) | (ACK_FLAG_STALE_ECHO if a.stale_echo else 0)
    parts = [_ACK.pack(FrameType.ACK, flags, a.tag, a.ack, a.window, a.echo, a.held, len(a.blocks))]
    parts.extend(_SACK.pack(s, e) for s, e in a.blocks)
    return seal(b"".join(parts))


def encode(frame: LinkFrame | Authenticated) -> bytes:
    """Encode any frame, CRC included (and its MAC, when it is ``Authenticated``)."""
    match frame:
        case Hello():
            return encode_hello(frame)
        case Data():
            return encode_data(frame)
        case Ack():
            return encode_ack(frame)
        case Authenticated():
            return encode_authenticated(frame)
        case HelloRefused():
            return encode_hello_refused(frame)
        case Data2():
            return encode_data2(frame)


class BadCrc(RemoteProtocolError):
    """The frame's CRC does not match: line noise.  Counted, never surfaced."""


def check_crc(frame: bytes | bytearray) -> memoryview:
    """Return the frame body when its CRC is right; raise ``BadCrc`` otherwise."""
    if len(frame) < 1 + CRC_BYTES:
        raise BadCrc(f"frame of {len(frame)} bytes is too short")
    if zlib.crc32(frame) != CRC_RESIDUE:
        raise BadCrc("CRC mismatch")
    return memoryview(frame)[:-CRC_BYTES]


def decode_body(body: memoryview | bytes) -> LinkFrame:
    """Decode a frame body (CRC already checked and removed).

    Whatever the bytes, the result is a frame or ``RemoteProtocolError``.
    """
    n = len(body)
    if n == 0:
        raise RemoteProtocolError("empty frame")
    kind = body[0]
    try:
        if kind == FrameType.DATA:
            _, flags, tag, seq, ack, window, tx, echo = _DATA.unpack_from(body)
            if flags & ~DATA_CHANNEL_MASK:
                raise RemoteProtocolError(f"DATA frame with unknown flags {flags:#x}")
            return Data(flags, tag, seq, ack, window, tx, echo, bytes(body[_DATA.size :]))
        if kind == FrameType.DATA2:
            return decode_data2(body)
        if kind == FrameType.ACK:
            _, flags, tag, ack, window, echo, held, count = _ACK.unpack_from(body)
            if flags & ~ACK_FLAGS:
                raise RemoteProtocolError(f"ACK frame with unknown flags {flags:#x}")
            if count > MAX_SACK_BLOCKS or n != _ACK.size + count * _SACK.size:
                raise RemoteProtocolError(f"ACK frame of {n} bytes with {count} SACK blocks")
            blocks = tuple(
                _SACK.unpack_from(body, _ACK.size + i * _SACK.size) for i in range(count)
            )
            return Ack(
                bool(flags & ACK_FLAG_PROBE),
                tag,
                ack,
                window,
                echo,
                held,
                blocks,
                bool(flags & ACK_FLAG_STALE_ECHO),
            )
        if kind in (FrameType.HELLO, FrameType.HELLO_ACK):
            if n != _HELLO.size:
                raise RemoteProtocolError(f"HELLO frame of {n} bytes, expected {_HELLO.size}")
            fields = _HELLO.unpack_from(body)
            if fields[1] != MAGIC:
                raise RemoteProtocolError(f"HELLO with magic {fields[1]!r}, not an ira link")
            return Hello(kind == FrameType.HELLO_ACK, *fields[2:])
        if kind == FrameType.HELLO_REFUSED:
            if n != _REFUSED.size:
                raise RemoteProtocolError(f"HELLO_REFUSED of {n} bytes, expected {_REFUSED.size}")
            fields = _REFUSED.unpack_from(body)
            if fields[1] != MAGIC:
                raise RemoteProtocolError(f"HELLO_REFUSED with magic {fields[1]!r}")
            if fields[6] not in _REFUSALS:
                raise RemoteProtocolError(f"HELLO_REFUSED with unknown reason {fields[6]}")
            return HelloRefused(*fields[2:])
    except struct.error as exc:
        raise RemoteProtocolError(f"truncated frame of type {kind}: {exc}") from exc
    raise RemoteProtocolError(f"unknown frame type {kind}")


def decode(frame: bytes | bytearray) -> LinkFrame:
    """Check the CRC and decode a whole frame."""
    return decode_body(check_crc(frame))


# --- authentication (Feature.AUTH) ------------------------------------------------
# HMAC-SHA-256 (RFC 2104) from the standard library, truncated to 128 bits (RFC 2104
# §5).  Measured against keyed BLAKE2s, the other MAC the standard library has
# (docs/PERFORMANCE.md): as fast on a 64-byte frame and 3.5x faster on 4 KiB,
# because hashlib's SHA-256 is OpenSSL's, with the CPU's SHA instructions, and its
# BLAKE2 is portable C.  The key's inner and outer pads are hashed once per key
# (``mac_key``) and copied per frame.

_EPOCHS = struct.Struct("<QQ")
_NONCES = struct.Struct("<QQ")
#: offset of ``epoch`` and ``peer_epoch`` in a HELLO body
_HELLO_EPOCHS_AT = 7
#: the body of a plain HELLO, type byte included
HELLO_BYTES = _HELLO.size
#: what authentication adds to a HELLO body (nonces and MAC)
HELLO_AUTH_BYTES = _NONCES.size + MAC_BYTES
#: the message of the key derivation
_KDF_LABEL = b"ira link psk 1"


class Authenticated(NamedTuple):
    """A frame as an end with the pre-shared key ``psk`` sends it (documentation examples).

    ``sender_epoch`` and ``receiver_epoch`` key the MAC of DATA and ACK frames; a
    HELLO's MAC takes them from its own ``epoch`` and ``peer_epoch``.
    """

    frame: LinkFrame
    psk: bytes
    sender_epoch: int = 0
    receiver_epoch: int = 0
    nonce: int = 0
    peer_nonce: int = 0


def derive_key(psk: bytes) -> bytes:
    """The 32-byte MAC key of a pre-shared key (at least PSK_MIN_BYTES long):
    HMAC-SHA-256 keyed with the pre-shared key over a fixed label."""
    if len(psk) < PSK_MIN_BYTES:
        raise ValueError(f"a pre-shared key needs at least {PSK_MIN_BYTES} bytes, not {len(psk)}")
    return hmac.digest(psk, _KDF_LABEL, "sha256")


class MacKey(NamedTuple):
    """HMAC-SHA-256 of one key with its inner and outer pads hashed (RFC 2104 §4)."""

    inner: Any
    outer: Any


def mac_key(psk: bytes) -> MacKey:
    """The MAC key of a pre-shared key, its pads hashed once, to be copied per frame."""
    key = derive_key(psk)
    return MacKey(
        hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0"))),
        hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0"))),
    )


def frame_mac(
    key: MacKey,
    sender_epoch: int,
    receiver_epoch: int,
    data: bytes | memoryview,
    numbers: bytes = b"",
) -> bytes:
    """The first MAC_BYTES of HMAC-SHA-256 over the sender's and the receiver's epochs
    (little-endian 64-bit), ``numbers`` and ``data``.

    ``numbers`` is empty but for a DATA2 frame, whose ``seq`` and ``ack`` travel
    truncated: there it is ``full_numbers(seq, ack)``, so the MAC covers the whole
    32-bit sequence and ack numbers and a frame replayed at another place of the
    sequence space does not verify."""
    inner = key.inner.copy()
    inner.update(_EPOCHS.pack(sender_epoch, receiver_epoch) + numbers)
    inner.update(data)
    outer = key.outer.copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest[:MAC_BYTES]


def authenticate(
    frame: bytes,
    key: MacKey,
    sender_epoch: int,
    receiver_epoch: int,
    nonces: tuple[int, int] | None = None,
    numbers: bytes = b"",
) -> bytes:
    """A frame as the encoders make it (CRC included) with its MAC added: for a HELLO,
    ``nonces`` (its nonce and peer_nonce) go before the MAC; for a DATA2 frame
    ``numbers`` are its full seq and ack (``full_numbers``)."""
    body = frame[:-CRC_BYTES]
    if nonces is not None:
        body += _NONCES.pack(*nonces)
    return seal(body + frame_mac(key, sender_epoch, receiver_epoch, body, numbers))


def verify(
    body: memoryview,
    key: MacKey,
    sender_epoch: int,
    receiver_epoch: int,
    numbers: bytes = b"",
) -> memoryview | None:
    """An authenticated frame's body (CRC removed) without its MAC, or None when the
    MAC is not right for this key, these epochs (and, for DATA2, these numbers)."""
    n = len(body) - MAC_BYTES
    if n < 1 or not hmac.compare_digest(
        frame_mac(key, sender_epoch, receiver_epoch, body[:n], numbers), body[n:]
    ):
        return None
    return body[:n]


_NUMBERS = struct.Struct("<II")


def full_numbers(seq: int, ack: int) -> bytes:
    """What a DATA2 frame's MAC covers besides the epochs: its whole seq and ack
    (mod 2**32, little-endian 32-bit each, seq first)."""
    return _NUMBERS.pack(seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)


def is_hello(body: memoryview | bytes) -> bool:
    return len(body) > 0 and body[0] in (FrameType.HELLO, FrameType.HELLO_ACK)


def is_authenticated_hello(body: memoryview | bytes) -> bool:
    """True for a HELLO body (CRC removed) with nonces and a MAC (``Feature.AUTH``)."""
    return is_hello(body) and len(body) == HELLO_BYTES + HELLO_AUTH_BYTES


def verify_hello(body: memoryview, key: MacKey) -> tuple[memoryview, int, int] | None:
    """The plain body, nonce and peer_nonce of an authenticated HELLO (CRC removed),
    or None when it is not one or its MAC is wrong."""
    if not is_authenticated_hello(body):
        return None
    epoch, peer_epoch = _EPOCHS.unpack_from(body, _HELLO_EPOCHS_AT)
    signed = verify(body, key, epoch, peer_epoch)
    if signed is None:
        return None
    nonce, peer_nonce = _NONCES.unpack_from(signed, HELLO_BYTES)
    return signed[:HELLO_BYTES], nonce, peer_nonce


def encode_authenticated(a: Authenticated) -> bytes:
    key = mac_key(a.psk)
    frame = a.frame
    if isinstance(frame, Hello):
        return authenticate(
            encode_hello(frame), key, frame.epoch, frame.peer_epoch, (a.nonce, a.peer_nonce)
        )
    # (a DATA2 example's seq and ack are small enough to be their own full values)
    numbers = full_numbers(frame.seq, frame.ack) if isinstance(frame, Data2) else b""
    return authenticate(encode(frame), key, a.sender_epoch, a.receiver_epoch, numbers=numbers)


# --- the generated documentation (docs/PROTOCOL.md) ---------------------------------


def _whole(kind: FrameType, body: cs.Struct, auth: cs.Struct | None = None) -> cs.Struct:
    return cs.Struct(
        "type" / cs.Const(int(kind), cs.Int8ul) * f"{int(kind)} ({kind.name})",
        # an authenticated body ends where its trailer begins, not at Terminated
        *(sc for sc in body.subcons if auth is None or sc is not cs.Terminated),
        *(auth.subcons if auth is not None else ()),
        "crc" / cs.Int32ul * "CRC-32 (IEEE 802.3) of every byte before it",
    )


#: the pre-shared key of the documentation's examples (the Authentication test vectors)
EXAMPLE_PSK = b"correct horse battery staple"
_EXAMPLE_HELLO = Hello(
    False, 1, 1, 0x1122334455667701, 0, int(Feature.SACK | Feature.AUTH), 65536, 1 << 20, 250
)


_SUMMARY = """\
The link layer carries frames over a byte stream (UART, pty, TCP) or a packet
transport (USB bulk, FunctionFS, in-process).  On a byte stream every frame is
COBS-encoded and followed by a 0x00 delimiter (a delimiter also opens every
burst of frames, so line noise before it cannot spoil the first frame); on a
packet transport one transfer is one frame.  Every frame ends with its CRC-32,
little-endian; a frame whose CRC fails is counted (`drop_bad_crc`) and dropped.
All integers are little-endian.

Two channels share one byte sequence space: CONTROL (bus messages, DEVCALLs,
signals) and BULK (window data).  Each channel is a stream of messages, each
prefixed by its length as an LEB128 varint; DATA frames carry slices of one
channel's stream, cut at any byte.  Among frames not yet sent CONTROL goes
first, and DATA frames are sized to take at most a fixed time on the line (ira:
0.1 s at the measured rate), so control traffic never waits long behind bulk data.
Within a session every message is delivered exactly once and in order per
channel.
"""


SPEC = WireSpec(
    title="Link frames",
    summary=_SUMMARY,
    encode=encode,
    messages=(
        MessageSpec(
            "HELLO",
            FrameType.HELLO,
            _whole(FrameType.HELLO, HelloBody),
            "Offers a session: sent at start and after a session is lost, with backoff, "
            "until the peer answers.",
            Hello(False, 1, 1, 0x1122334455667701, 0, int(Feature.SACK), 65536, 1 << 20, 250),
            direction="both",
        ),
        MessageSpec(
            "HELLO_ACK",
            FrameType.HELLO_ACK,
            _whole(FrameType.HELLO_ACK, HelloBody),
            "Answers a HELLO; same fields, `peer_epoch` is the HELLO's epoch.",
            Hello(
                True,
                1,
                1,
                0x0A0B0C0D0E0F1001,
                0x1122334455667701,
                int(Feature.SACK),
                65536,
                1 << 20,
                250,
            ),
            direction="both",
        ),
        MessageSpec(
            "DATA",
            FrameType.DATA,
            _whole(FrameType.DATA, DataBody),
            "A slice of one channel's byte stream, with a piggy-backed ack.",
            Data(0, 0x1B0A, 0, 0, 4096, 1, 0, b"\x03abc"),
            direction="both",
        ),
        MessageSpec(
            "ACK",
            FrameType.ACK,
            _whole(FrameType.ACK, AckBody),
            "Acknowledges (cumulative, selective, echo), advertises the window; also the "
            "keepalive.",
            Ack(False, 0x1B0A, 4, 4096, 3, 0b101, ((40, 64),)),
            direction="both",
        ),
        MessageSpec(
            "HELLO_REFUSED",
            FrameType.HELLO_REFUSED,
            _whole(FrameType.HELLO_REFUSED, RefusedBody),
            "Answers a HELLO or HELLO_ACK that cannot be accepted; no session starts.",
            HelloRefused(1, 1, 0x0A0B0C0D0E0F1001, 0x1122334455667701, int(Refusal.VERSION)),
            direction="both",
        ),
        MessageSpec(
            "DATA2",
            FrameType.DATA2,
            _whole(FrameType.DATA2, Data2Body),
            "Version 2's DATA frame (a session of version 2 sends DATA2, never DATA): "
            "the same fields, with `seq` and `ack` truncated, `window` and `echo` "
            "only when they tell the peer something (see Version 2).  The example: "
            "the frame of the DATA example above, the peer known to hold the window edge.",
            Data2(0, 0x1B0A, 0, 1, 0, 1, None, 1, None, b"\x03abc"),
            direction="both",
        ),
        MessageSpec(
            "HELLO, authenticated",
            FrameType.HELLO,
            _whole(FrameType.HELLO, HelloBody, HelloAuth),
            "A HELLO of an end with a pre-shared key (`features` has AUTH): the sender's "
            "nonce, the nonce it answers and a MAC between the body and the CRC.  The MAC "
            "covers the HELLO's own `epoch` and `peer_epoch` (as sender and receiver epoch). "
            f"The example is made with the key `{EXAMPLE_PSK.decode()}`.",
            Authenticated(_EXAMPLE_HELLO, EXAMPLE_PSK, nonce=0x0102030405060708),
            direction="both",
        ),
        MessageSpec(
            "HELLO_ACK, authenticated",
            FrameType.HELLO_ACK,
            _whole(FrameType.HELLO_ACK, HelloBody, HelloAuth),
            "Answers a HELLO (or HELLO_ACK, see Authentication): `peer_epoch` and "
            "`peer_nonce` are those of the frame answered.  Same key as above.",
            Authenticated(
                Hello(
                    True,
                    1,
                    1,
                    0x0A0B0C0D0E0F1001,
                    0x1122334455667701,
                    int(Feature.SACK | Feature.AUTH),
                    65536,
                    1 << 20,
                    250,
                ),
                EXAMPLE_PSK,
                nonce=0x1112131415161718,
                peer_nonce=0x0102030405060708,
            ),
            direction="both",
        ),
        MessageSpec(
            "DATA, authenticated",
            FrameType.DATA,
            _whole(FrameType.DATA, DataBody, FrameAuth),
            "A DATA frame of a session with AUTH: the MAC, over the sender's epoch, the "
            "receiver's and the frame, between the payload and the CRC "
            "(a receiver finds the payload's end 20 bytes before the frame's).  The example: "
            "sender epoch 0x0A0B0C0D0E0F1001, receiver 0x1122334455667701, same key; an ACK "
            "frame is authenticated in the same way.",
            Authenticated(
                Data(0, 0x6700, 0, 0, 4096, 1, 0, b"\x03abc"),
                EXAMPLE_PSK,
                sender_epoch=0x0A0B0C0D0E0F1001,
                receiver_epoch=0x1122334455667701,
            ),
            direction="both",
        ),
        MessageSpec(
            "DATA2, authenticated",
            FrameType.DATA2,
            _whole(FrameType.DATA2, Data2Body, FrameAuth),
            "A DATA2 frame of a session with AUTH: the MAC covers the epochs, then the "
            "frame's whole `seq` and `ack` (32-bit little-endian each, not their truncated "
            "bytes), then the frame.  The example: the DATA2 above with a window and an "
            "echo, seq 0 and ack 4 in full, epochs and key as for DATA.",
            Authenticated(
                Data2(0, 0x6700, 0, 1, 4, 1, 4096, 1, 3, b"\x03abc"),
                EXAMPLE_PSK,
                sender_epoch=0x0A0B0C0D0E0F1001,
                receiver_epoch=0x1122334455667701,
            ),
            direction="both",
        ),
    ),
    limits=(
        Limit("VERSION_MIN", VERSION_MIN, "lowest link protocol version spoken"),
        Limit("VERSION_MAX", VERSION_MAX, "highest link protocol version spoken"),
        Limit("MIN_FRAME_BYTES", MIN_FRAME_BYTES, "smallest max_frame_bytes a peer may offer"),
        Limit("MIN_WINDOW_BYTES", MIN_WINDOW_BYTES, "smallest window_bytes a peer may offer"),
        Limit("MAX_SACK_BLOCKS", MAX_SACK_BLOCKS, "most SACK ranges in one ACK"),
        Limit("WINDOW_UNIT_BYTES", WINDOW_UNIT_BYTES, "unit of the window fields"),
        Limit("CRC_BYTES", CRC_BYTES, "CRC-32 at the end of every frame"),
        Limit("MAC_BYTES", MAC_BYTES, "MAC of an authenticated frame (HMAC-SHA-256/128)"),
        Limit("PSK_MIN_BYTES", PSK_MIN_BYTES, "shortest pre-shared key"),
    ),
)
