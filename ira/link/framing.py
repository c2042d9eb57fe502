"""Byte-stream framing: COBS with a 0x00 delimiter (sans-I/O).

Stream transports (UART, pty, TCP) carry each frame COBS-encoded between 0x00
delimiters: the overhead is bounded (one byte per 254 plus the delimiter) and
after garbage the decoder resynchronises at the next delimiter.  Packet
transports carry frames as they are and need none of this.

Message lengths inside a channel's byte stream use LEB128 varints
(``encode_varint`` here; the receiver's reassembler reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

from cobs import cobs

DELIMITER = b"\x00"


def encode_frames(frames: list[bytes]) -> bytes:
    """COBS-encode frames into one chunk of stream bytes.

    The chunk starts with a delimiter too, so that whatever noise the line
    carried before it ends at that delimiter instead of spoiling the first frame.
    """
    if len(frames) == 1:
        encoded: bytes = cobs.encode(frames[0])
        return b"\x00" + encoded + b"\x00"
    # one join (one copy of the chunk), with empty ends for the outer delimiters
    encode = cobs.encode
    return DELIMITER.join([b"", *[encode(f) for f in frames], b""])


@dataclass(slots=True)
class DeframerStatistics:
    frames: int = 0
    #: chunks between delimiters that were not valid COBS
    malformed: int = 0
    #: chunks longer than the largest frame allowed (dropped up to the next delimiter)
    oversize: int = 0
    #: bytes discarded while skipping an oversize chunk
    discarded_bytes: int = 0


class StreamDeframer:
    """Cuts a byte stream into decoded frames; never holds more than ``max_frame_bytes``.

    Feed it bytes as they arrive, cut anywhere; it returns the decoded frames
    (CRC not yet checked).  Invalid chunks are counted and dropped.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        # a COBS chunk of a frame of n bytes is at most n + n // 254 + 1 bytes
        self._max_chunk = max_frame_bytes + max_frame_bytes // 254 + 2
        self._buffer = bytearray()
        self._skipping = False
        self.stats = DeframerStatistics()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        """Drop the frame cut so far (the stream it came from is gone); counted as discarded."""
        self.stats.discarded_bytes += len(self._buffer)
        self._buffer.clear()
        self._skipping = False

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        pieces = data.split(b"\x00")
        # pieces[0] continues the chunk buffered so far, pieces[-1] starts the next
        # one; every piece between is a whole chunk (often the only frame of a read)
        n = len(pieces)
        if n == 1:
            self._append(data)
            return []
        if n == 3 and not pieces[0] and not pieces[2] and not self._buffer and not self._skipping:
            # the common case: one whole frame between its delimiters, nothing pending
            chunk = pieces[1]
            if chunk and len(chunk) <= self._max_chunk:
                try:
                    frame: bytes = cobs.decode(chunk)
                except cobs.DecodeError:
                    self.stats.malformed += 1
                    return []
                self.stats.frames += 1
                return [frame]
        frames: list[bytes] = []
        stats = self.stats
        decode = cobs.decode
        first = pieces[0]
        buf = self._buffer
        if self._skipping or buf or len(first) > self._max_chunk:
            self._append(first)
            if not self._skipping and buf:
                self._decode(buf, frames)
            buf.clear()
            self._skipping = False
        elif first:
            self._decode(first, frames)
        max_chunk = self._max_chunk
        for i in range(1, n - 1):
            chunk = pieces[i]
            if not chunk:
                continue
            if len(chunk) > max_chunk:
                stats.oversize += 1
                stats.discarded_bytes += len(chunk)
                continue
            try:
                frames.append(decode(chunk))
            except cobs.DecodeError:
                stats.malformed += 1
        stats.frames += len(frames)
        last = pieces[-1]
        if last:
            self._append(last)
        return frames

    def _decode(self, chunk: bytes | bytearray, frames: list[bytes]) -> None:
        try:
            frames.append(cobs.decode(chunk))
        except cobs.DecodeError:
            self.stats.malformed += 1

    def _append(self, piece: bytes | bytearray) -> None:
        if self._skipping:
            self.stats.discarded_bytes += len(piece)
            return
        self._buffer += piece
        if len(self._buffer) > self._max_chunk:
            self.stats.oversize += 1
            self.stats.discarded_bytes += len(self._buffer)
            self._buffer.clear()
            self._skipping = True


def encode_varint(value: int) -> bytes:
    """LEB128: seven bits a byte, low first, high bit set on all but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


#: a message length never needs more than this many varint bytes (32 bits)
MAX_VARINT_BYTES = 5
