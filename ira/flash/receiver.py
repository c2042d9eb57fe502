"""The board's end of a flash transfer: frames in, events and frames out (sans-I/O).

Theory of operation
-------------------
This module runs *on the board*, inside the receiver stub that ``ira flash``
types into the board's shell, before ira is there: it imports nothing but the
standard library, and nothing of ira (``ira.tools.flash.stub`` concatenates it
with the stub's I/O loop; a test runs the result with ``python3 -I -S``).  Its
frames are written with ``struct`` here and with construct in
``ira.wire.flash``; the tests check both byte for byte.

``Receiver`` takes console bytes (``receive_data(data, now=)``) and returns
events; the stub acts on them and calls back:

* ``Opened(sha256, size, payload_size, codec)`` → the stub looks for a partial
  stream of that payload and calls ``accept(have)`` (its length): STATE goes out.
* ``Stored(offset, data)`` → append ``data`` to the stream (offsets only ever
  continue the stream: blocks that arrive beyond a gap are held here, bounded by
  ``window`` bytes, and released in order once the gap is filled).
* ``InstallAsked(plan)`` (only once the stream is whole, else RESULT BAD_REQUEST)
  → the stub verifies and installs, then ``finish(status, message)``.
* ``QuitAsked`` → restore the console and leave.

Each DATA frame is answered with an ACK of ``have``; a block beyond ``have``
sets the GAP flag.  ``next_deadline()`` is the idle limit: ``handle_timeout``
past it returns ``IdleExpired`` (the host is gone: leave, keep the stream).
Bytes that are not a valid frame are counted (``statistics()``), never raised.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 1
CRC_BYTES = 4
T_OPEN, T_DATA, T_INSTALL, T_QUIT = 0x01, 0x02, 0x03, 0x04
T_HELLO, T_STATE, T_ACK, T_RESULT = 0x80, 0x81, 0x82, 0x83
ACK_FLAG_GAP = 0x01
ST_OK, ST_BAD_SHA, ST_NO_SPACE, ST_INSTALL_FAILED, ST_BAD_REQUEST = 0, 1, 2, 3, 4
#: the stub leaves when no valid frame arrived for this long
IDLE_S = 8.0
#: bytes held beyond a gap
DEFAULT_WINDOW = 65536
#: a chunk between delimiters longer than this is junk
MAX_CHUNK = 70000


def cobs_encode(data: bytes) -> bytes:
    """COBS (Cheshire and Baker) of ``data``, without the delimiter."""
    out = bytearray()
    parts = data.split(b"\x00")
    for i, part in enumerate(parts):
        whole = bool(part) and len(part) % 254 == 0 and i == len(parts) - 1
        while len(part) >= 254:
            out += b"\xff" + part[:254]
            part = part[254:]
        if not whole:  # a final run of 254 needs no closing code
            out.append(len(part) + 1)
            out += part
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """The bytes COBS encoded as ``data``, or None when ``data`` is no COBS encoding."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        end = i + code
        if end > n:
            return None
        out += data[i + 1 : end]
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def frame(body: bytes) -> bytes:
    """A body as it crosses the console: CRC appended, COBS, delimiter."""
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return cobs_encode(body + struct.pack("<I", crc)) + b"\x00"


def hello_body(window: int) -> bytes:
    return struct.pack("<BBI", T_HELLO, VERSION, window)


def state_body(have: int, size: int) -> bytes:
    return struct.pack("<BII", T_STATE, have, size)


def ack_body(have: int, gap: bool) -> bytes:
    return struct.pack("<BIB", T_ACK, have, ACK_FLAG_GAP if gap else 0)


def result_body(status: int, message: str) -> bytes:
    text = message.encode()[:65535]
    return struct.pack("<BBH", T_RESULT, status, len(text)) + text


@dataclass(frozen=True)
class Opened:
    sha256: bytes
    size: int
    payload_size: int
    codec: int


@dataclass(frozen=True)
class Stored:
    offset: int
    data: bytes


@dataclass(frozen=True)
class InstallAsked:
    plan: str


@dataclass(frozen=True)
class QuitAsked:
    pass


@dataclass(frozen=True)
class IdleExpired:
    pass


@dataclass
class ReceiverStatistics:
    frames: int = 0
    bad_frames: int = 0
    blocks: int = 0
    duplicate_blocks: int = 0
    held_blocks: int = 0
    dropped_blocks: int = 0


@dataclass
class Receiver:
    """The board's end of one stub run (see the module docstring)."""

    now: float
    window: int = DEFAULT_WINDOW
    idle_s: float = IDLE_S
    size: int | None = None
    have: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _held: dict[int, bytes] = field(default_factory=dict)
    _out: bytearray = field(default_factory=bytearray)
    _last: float = 0.0
    stats: ReceiverStatistics = field(default_factory=ReceiverStatistics)

    def __post_init__(self) -> None:
        self._last = self.now
        self._out += b"\x00" + frame(hello_body(self.window))

    # --- the verbs -------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float) -> list[object]:
        events: list[object] = []
        self._buf += data
        while True:
            end = self._buf.find(b"\x00")
            if end < 0:
                if len(self._buf) > MAX_CHUNK:
                    self.stats.bad_frames += 1
                    del self._buf[:]
                return events
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if chunk:
                events += self._frame(chunk, now)

    def accept(self, have: int) -> None:
        """Answer OPEN: the board holds ``have`` bytes of the stream."""
        assert self.size is not None
        self.have = have
        self._held.clear()
        self._out += frame(state_body(have, self.size))

    def finish(self, status: int, message: str) -> None:
        """Answer INSTALL (or refuse an OPEN) with RESULT."""
        self._out += frame(result_body(status, message))

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        del self._out[:]
        return out

    def next_deadline(self) -> float:
        return self._last + self.idle_s

    def handle_timeout(self, *, now: float) -> list[object]:
        return [IdleExpired()] if now >= self.next_deadline() else []

    def statistics(self) -> ReceiverStatistics:
        return self.stats

    # --- frames ----------------------------------------------------------------

    def _frame(self, chunk: bytes, now: float) -> list[object]:
        raw = cobs_decode(chunk)
        if raw is None or len(raw) <= CRC_BYTES:
            self.stats.bad_frames += 1
            return []
        body = raw[:-CRC_BYTES]
        if zlib.crc32(body) & 0xFFFFFFFF != struct.unpack("<I", raw[-CRC_BYTES:])[0]:
            self.stats.bad_frames += 1
            return []
        try:
            events = self._body(body)
        except (struct.error, ValueError):
            self.stats.bad_frames += 1
            return []
        self.stats.frames += 1
        self._last = now
        return events

    def _body(self, body: bytes) -> list[object]:
        kind = body[0]
        if kind == T_OPEN:
            if len(body) != 42 or body[41] not in (1, 2):
                raise ValueError("bad OPEN")
            size, payload_size = struct.unpack_from("<II", body, 33)
            self.size = size
            return [Opened(body[1:33], size, payload_size, body[41])]
        if kind == T_DATA:
            offset, length = struct.unpack_from("<IH", body, 1)
            if len(body) != 7 + length or length == 0:
                raise ValueError("bad DATA")
            return self._data(offset, body[7:])
        if kind == T_INSTALL:
            (length,) = struct.unpack_from("<H", body, 1)
            if len(body) != 3 + length:
                raise ValueError("bad INSTALL")
            plan = body[3:].decode()
            if self.size is not None and self.have < self.size:
                self.finish(ST_BAD_REQUEST, "INSTALL before the whole stream arrived")
                return []
            return [InstallAsked(plan)]
        if kind == T_QUIT and len(body) == 1:
            return [QuitAsked()]
        raise ValueError("unknown frame")

    def _data(self, offset: int, data: bytes) -> list[object]:
        if self.size is None or offset + len(data) > self.size:
            raise ValueError("DATA outside the stream")
        self.stats.blocks += 1
        events: list[object] = []
        if offset < self.have or offset in self._held:
            self.stats.duplicate_blocks += 1
        elif offset > self.have:
            if offset - self.have + len(data) <= self.window:
                self._held[offset] = data
                self.stats.held_blocks += 1
            else:
                self.stats.dropped_blocks += 1
        else:
            events.append(Stored(offset, data))
            self.have += len(data)
            while self.have in self._held:
                block = self._held.pop(self.have)
                events.append(Stored(self.have, block))
                self.have += len(block)
        self._out += frame(ack_body(self.have, bool(self._held)))
        return events
