"""Flash frames: what ``ira flash`` and the receiver stub on a board say on its console.

Once the stub typed into the board's shell has put the console in raw mode,
both directions carry frames: ``body || crc32(body)`` (CRC-32 IEEE 802.3,
little-endian), COBS-encoded and followed by a 0x00 delimiter, as on the link
layer.  The first byte of a body is its type.  The board's side of these frames
is written with ``struct`` in ``ira.flash.receiver`` (the stub may use nothing
but the board's standard library); the tests check both codecs byte for byte.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

import construct as cs

from ira.errors import RemoteProtocolError
from ira.wire import Limit, MessageSpec, StatusCode, WireSpec

#: flash protocol version the stub announces in HELLO
VERSION = 1
#: most payload bytes in one DATA frame
MAX_BLOCK_BYTES = 4096
#: most bytes of an INSTALL plan or a RESULT message
MAX_TEXT_BYTES = 65535
#: bytes of CRC at the end of every frame
CRC_BYTES = 4
#: ACK flag: a DATA frame arrived beyond ``have`` (one before it was lost)
ACK_FLAG_GAP = 0x01


class FrameType(enum.IntEnum):
    OPEN = 0x01
    DATA = 0x02
    INSTALL = 0x03
    QUIT = 0x04
    HELLO = 0x80
    STATE = 0x81
    ACK = 0x82
    RESULT = 0x83


class Codec(enum.IntEnum):
    """How the payload stream is compressed."""

    ZLIB = 1
    LZMA = 2


class Status(enum.IntEnum):
    """RESULT statuses."""

    OK = 0
    BAD_SHA = 1
    NO_SPACE = 2
    INSTALL_FAILED = 3
    BAD_REQUEST = 4


def _whole(kind: FrameType, *fields: cs.Subconstruct) -> cs.Struct:
    return cs.Struct(
        "type" / cs.Const(int(kind), cs.Int8ul) * f"{int(kind):#04x} ({kind.name})",
        *fields,
        "crc" / cs.Int32ul * "CRC-32 (IEEE 802.3) of every byte before it",
    )


_OPEN = (
    "sha256" / cs.Bytes(32) * "SHA-256 of the whole payload once decompressed",
    "size" / cs.Int32ul * "bytes of the compressed stream that DATA frames carry",
    "payload_size" / cs.Int32ul * "bytes of the payload once decompressed",
    "codec" / cs.Int8ul * "compression of the stream (Codec: 1 zlib, 2 lzma)",
    cs.Check((cs.this.codec >= 1) & (cs.this.codec <= 2)),
)
_DATA = (
    "offset" / cs.Int32ul * "position of the first byte in the compressed stream",
    "length" / cs.Int16ul * "bytes that follow",
    cs.Check(cs.this.length <= MAX_BLOCK_BYTES),
    "data" / cs.Bytes(cs.this.length) * "the stream's bytes at `offset`",
)
_TEXT = (
    "length" / cs.Int16ul * "bytes that follow",
    "text" / cs.Bytes(cs.this.length) * "UTF-8 text",
)
_HELLO = (
    "version" / cs.Int8ul * "flash protocol version (1)",
    "window" / cs.Int32ul * "bytes beyond `have` the stub keeps when a block before them is lost",
)
_STATE = (
    "have" / cs.Int32ul * "bytes of the stream the board already holds (a resumed transfer)",
    "size" / cs.Int32ul * "the stream's size, as OPEN said",
)
_ACK = (
    "have" / cs.Int32ul * "every byte of the stream below this is stored on the board",
    "flags" / cs.Int8ul * "bit 0 GAP: a DATA frame arrived beyond `have`; other bits 0",
    cs.Check(cs.this.flags <= ACK_FLAG_GAP),
)
_RESULT = (
    "status" / cs.Int8ul * "Status: 0 OK, 1 BAD_SHA, 2 NO_SPACE, 3 INSTALL_FAILED, 4 BAD_REQUEST",
    *_TEXT,
)

#: the body of each frame type, after its type byte
BODIES: dict[FrameType, cs.Struct] = {
    FrameType.OPEN: cs.Struct(*_OPEN, cs.Terminated),
    FrameType.DATA: cs.Struct(*_DATA, cs.Terminated),
    FrameType.INSTALL: cs.Struct(*_TEXT, cs.Terminated),
    FrameType.QUIT: cs.Struct(cs.Terminated),
    FrameType.HELLO: cs.Struct(*_HELLO, cs.Terminated),
    FrameType.STATE: cs.Struct(*_STATE, cs.Terminated),
    FrameType.ACK: cs.Struct(*_ACK, cs.Terminated),
    FrameType.RESULT: cs.Struct(*_RESULT, cs.Terminated),
}

FrameBody = cs.Struct(
    "type" / cs.Int8ul * "frame type (FrameType); any other value is refused",
    "body" / cs.Switch(cs.this.type, {int(k): v for k, v in BODIES.items()}, default=cs.Error),
)


# --- decoded frames -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Open:
    """Host → board: start (or resume) the transfer of one payload."""

    sha256: bytes
    size: int
    payload_size: int
    codec: Codec


@dataclass(frozen=True, slots=True)
class Data:
    """Host → board: a block of the compressed stream."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Install:
    """Host → board: verify what arrived and carry out this plan (JSON)."""

    plan: str


@dataclass(frozen=True, slots=True)
class Quit:
    """Host → board: restore the console and give the shell back."""


@dataclass(frozen=True, slots=True)
class Hello:
    """Board → host: the stub runs and the console is raw."""

    version: int
    window: int


@dataclass(frozen=True, slots=True)
class State:
    """Board → host: the answer to OPEN."""

    have: int
    size: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Board → host: what is stored, and whether a block was lost."""

    have: int
    gap: bool


@dataclass(frozen=True, slots=True)
class Result:
    """Board → host: the outcome of INSTALL (or a refused OPEN)."""

    status: Status
    message: str


Message = Open | Data | Install | Quit | Hello | State | Ack | Result


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _fields(msg: Message) -> tuple[FrameType, dict[str, object]]:
    match msg:
        case Open():
            return FrameType.OPEN, {
                "sha256": msg.sha256,
                "size": msg.size,
                "payload_size": msg.payload_size,
                "codec": int(msg.codec),
            }
        case Data():
            return FrameType.DATA, {"offset": msg.offset, "length": len(msg.data), "data": msg.data}
        case Install():
            text = msg.plan.encode()
            return FrameType.INSTALL, {"length": len(text), "text": text}
        case Quit():
            return FrameType.QUIT, {}
        case Hello():
            return FrameType.HELLO, {"version": msg.version, "window": msg.window}
        case State():
            return FrameType.STATE, {"have": msg.have, "size": msg.size}
        case Ack():
            return FrameType.ACK, {"have": msg.have, "flags": ACK_FLAG_GAP if msg.gap else 0}
        case Result():
            text = msg.message.encode()[:MAX_TEXT_BYTES]
            return FrameType.RESULT, {"status": int(msg.status), "length": len(text), "text": text}


def encode(msg: Message) -> bytes:
    """The frame of ``msg``: body and CRC (before COBS)."""
    kind, fields = _fields(msg)
    body: bytes = FrameBody.build({"type": int(kind), "body": fields})
    return body + crc32(body).to_bytes(CRC_BYTES, "little")


def decode(frame: bytes) -> Message:
    """A frame (body and CRC, COBS removed) as a message; ``RemoteProtocolError`` if it
    is not one."""
    if len(frame) <= CRC_BYTES:
        raise RemoteProtocolError("flash frame too short")
    body, crc = frame[:-CRC_BYTES], int.from_bytes(frame[-CRC_BYTES:], "little")
    if crc32(body) != crc:
        raise RemoteProtocolError("flash frame CRC mismatch")
    try:
        parsed = FrameBody.parse(body)
    except cs.ConstructError as exc:
        raise RemoteProtocolError(f"malformed flash frame: {exc}") from exc
    f = parsed.body
    match FrameType(parsed.type):
        case FrameType.OPEN:
            return Open(bytes(f.sha256), f.size, f.payload_size, Codec(f.codec))
        case FrameType.DATA:
            return Data(f.offset, bytes(f.data))
        case FrameType.INSTALL:
            return Install(_text(f.text))
        case FrameType.QUIT:
            return Quit()
        case FrameType.HELLO:
            return Hello(f.version, f.window)
        case FrameType.STATE:
            return State(f.have, f.size)
        case FrameType.ACK:
            return Ack(f.have, bool(f.flags & ACK_FLAG_GAP))
        case FrameType.RESULT:
            if f.status not in Status._value2member_map_:
                raise RemoteProtocolError(f"unknown RESULT status {f.status}")
            return Result(Status(f.status), _text(f.text))
    raise RemoteProtocolError(f"unknown flash frame type {parsed.type}")  # pragma: no cover


def _text(raw: bytes) -> str:
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("flash frame text is not UTF-8") from exc


_SUMMARY = """\
A host puts ira on a board through the board's serial console, the one path
every Linux board has before it has a network.  The host types a small receiver
stub into the board's shell; the stub MUST put the console in raw mode (no
echo, no line editing, no character translation) before it sends anything
else, and then sends HELLO.  From then on both directions carry frames:
`body || crc32(body)` (CRC-32 IEEE 802.3, little-endian), COBS-encoded, each
followed by a 0x00 delimiter.  The stub sends a delimiter before its first
frame, so that the shell's echo before it is one spoiled frame.  A frame whose
CRC fails or that does not decode MUST be dropped and counted, without an
answer; the sender's timer recovers it.

The payload (ira and its dependencies, one file) crosses as one compressed
stream, named by the SHA-256 of the payload.  OPEN names it; the board answers
STATE with how many bytes of that stream it already holds (it keeps a partial
stream across sessions), and the host sends DATA blocks from there on, never
more than the window of HELLO beyond the board's `have`.
"""

_NOTES = """\
**Transfer.**  Every DATA frame is answered by an ACK carrying `have`, the
length of the stream's prefix the board has stored.  A block that arrives
beyond `have` is kept (up to the window announced in HELLO) and answered with
an ACK with the GAP flag: the host resends the block at `have` at once, and the
same block again only after a guard time.  When no ACK advances `have` for the
retransmission timeout, the host sends again everything from `have` on
(go-back-N; the board drops what it already holds).  Blocks never overlap:
each starts at a multiple of the host's block size.

**Resuming.**  The board keeps the stream's bytes under the payload's SHA-256
until it is installed.  A new session (the same payload, OPEN again) starts at
the `have` of STATE.  The stub leaves raw mode and returns to the shell after
QUIT, after RESULT of an INSTALL, or after 8 s without a valid frame.

**Installing.**  INSTALL carries a JSON plan (the files, the service, how to
start it).  The board decompresses the stream, checks the payload's SHA-256 and
only then writes a new version directory and switches one symlink to it; it
answers RESULT.  A payload whose SHA-256 differs is deleted, never installed.
"""

SPEC = WireSpec(
    title="Flashing a board through its console",
    summary=_SUMMARY,
    encode=encode,
    messages=(
        MessageSpec(
            "OPEN",
            FrameType.OPEN,
            _whole(FrameType.OPEN, *_OPEN),
            "Names the payload and its stream; the board answers STATE.",
            Open(bytes(range(32)), 1000, 4000, Codec.LZMA),
            direction="host → board",
        ),
        MessageSpec(
            "DATA",
            FrameType.DATA,
            _whole(FrameType.DATA, *_DATA),
            "A block of the compressed stream.",
            Data(1024, b"abc"),
            direction="host → board",
        ),
        MessageSpec(
            "INSTALL",
            FrameType.INSTALL,
            _whole(FrameType.INSTALL, *_TEXT),
            "Verify the stream and carry out the JSON plan; the board answers RESULT.",
            Install('{"action":"rollback"}'),
            direction="host → board",
        ),
        MessageSpec(
            "QUIT",
            FrameType.QUIT,
            _whole(FrameType.QUIT),
            "Leave raw mode and give the shell back.",
            Quit(),
            direction="host → board",
        ),
        MessageSpec(
            "HELLO",
            FrameType.HELLO,
            _whole(FrameType.HELLO, *_HELLO),
            "The stub's first frame: it runs, and the console is raw.",
            Hello(VERSION, 65536),
            direction="board → host",
        ),
        MessageSpec(
            "STATE",
            FrameType.STATE,
            _whole(FrameType.STATE, *_STATE),
            "Answers OPEN: how much of the stream the board holds.",
            State(2048, 1000),
            direction="board → host",
        ),
        MessageSpec(
            "ACK",
            FrameType.ACK,
            _whole(FrameType.ACK, *_ACK),
            "Answers every DATA frame.",
            Ack(3072, True),
            direction="board → host",
        ),
        MessageSpec(
            "RESULT",
            FrameType.RESULT,
            _whole(FrameType.RESULT, *_RESULT),
            "The outcome of INSTALL, or why OPEN was refused.",
            Result(Status.OK, "installed 0.1.0+0011223344ff"),
            direction="board → host",
        ),
    ),
    limits=(
        Limit("VERSION", VERSION, "flash protocol version"),
        Limit("MAX_BLOCK_BYTES", MAX_BLOCK_BYTES, "most stream bytes in one DATA frame"),
        Limit("MAX_TEXT_BYTES", MAX_TEXT_BYTES, "most bytes of a plan or a RESULT message"),
    ),
    statuses=tuple(
        StatusCode(s.name, int(s), m)
        for s, m in (
            (Status.OK, "done"),
            (Status.BAD_SHA, "the decompressed payload's SHA-256 differs: deleted, not installed"),
            (Status.NO_SPACE, "not enough free space for the payload"),
            (Status.INSTALL_FAILED, "a step of the plan failed; the previous version stays"),
            (Status.BAD_REQUEST, "a frame out of order (INSTALL before the stream is whole)"),
        )
    ),
    notes=_NOTES,
)
