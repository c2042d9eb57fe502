"""The receiving half of a link session: reorder buffer, reassembly, window (sans-I/O).

Theory of operation
-------------------
Segments carry bytes of one channel at a position of the link-wide sequence
space.  Bytes below ``rcv_nxt`` were delivered: a segment wholly below is a
duplicate.  Segments above ``rcv_nxt`` wait in the reorder buffer (bounded by
the advertised window: anything past the right edge is dropped and counted).
When ``rcv_nxt`` reaches a waiting segment its bytes move to their channel's
reassembler, which cuts the channel stream into messages by their LEB128
length prefixes.  A message longer than ``max_message_bytes`` is skipped and
counted, so a lying peer cannot make us buffer more than that; the window
accounts for the reorder buffer and for messages delivered but not yet taken
by the layer above, so a slow consumer slows the sender.  Bytes of a channel
this end does not know (``channel`` None) take their place in the sequence
space like any others, so they are acknowledged, and are discarded on delivery
(``unknown_channel_bytes``).  A length prefix longer than MAX_VARINT_BYTES
raises ``RemoteProtocolError``: the session core resets the session.
"""

from __future__ import annotations

import bisect
import enum
from collections import deque
from dataclasses import dataclass

from ira.errors import RemoteProtocolError
from ira.link.events import Channel
from ira.link.framing import MAX_VARINT_BYTES


class Fate(enum.Enum):
    """What ``Receiver.on_segment`` did with a segment."""

    #: new bytes, held (delivered or in the reorder buffer)
    NEW = "new"
    #: nothing new: already held or delivered (still held, so not to be resent)
    DUPLICATE = "duplicate"
    #: dropped for lack of room: not held, the sender must resend it
    REFUSED = "refused"


@dataclass(slots=True)
class ReceiverStatistics:
    segments_received: int = 0
    payload_bytes_received: int = 0
    messages_delivered: int = 0
    duplicate: int = 0
    out_of_window: int = 0
    oversize_messages: int = 0
    unknown_channel_bytes: int = 0


class _Reassembler:
    """Cuts one channel's byte stream into messages."""

    __slots__ = ("_buf", "_max", "_need", "_skip")

    def __init__(self, max_message_bytes: int) -> None:
        self._buf = bytearray()
        self._need: int | None = None  # body length of the message being read
        self._skip = 0  # bytes of an oversize message still to discard
        self._max = max_message_bytes

    def feed(
        self,
        data: bytes,
        channel: Channel,
        out: deque[tuple[Channel, bytes]],
        stats: ReceiverStatistics,
    ) -> None:
        """Take the channel's next bytes; append the messages they complete to ``out``."""
        if not self._buf and self._need is None and not self._skip and data:
            n = data[0]
            if n < 0x80 and n < len(data) and n <= self._max:
                # the common case: a short message starts the segment, nothing pending
                end = 1 + n
                out.append((channel, data[1:end]))
                stats.messages_delivered += 1
                if end == len(data):
                    return
                data = data[end:]
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            if not data:
                return
        buf = self._buf
        buf += data
        pos = 0
        while True:
            if self._need is None:
                length, used = _read_varint(buf, pos)
                if used == 0:
                    break
                pos += used
                if length > self._max:
                    stats.oversize_messages += 1
                    drop = min(length, len(buf) - pos)
                    pos += drop
                    self._skip = length - drop
                    if self._skip:
                        break
                    continue
                self._need = length
            need = self._need
            if len(buf) - pos < need:
                break
            out.append((channel, bytes(buf[pos : pos + need])))
            stats.messages_delivered += 1
            pos += need
            self._need = None
        del buf[:pos]

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)


def _read_varint(buf: bytearray, pos: int) -> tuple[int, int]:
    """Return (value, bytes used); (0, 0) when the varint is not complete yet."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return 0, 0
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise RemoteProtocolError("message length prefix longer than 5 bytes")


class Receiver:
    def __init__(
        self, window_bytes: int, max_message_bytes: int, stats: ReceiverStatistics | None = None
    ) -> None:
        self.rcv_nxt = 0
        #: bytes held and not yet taken that the window allows
        self.window_bytes = window_bytes
        #: reorder buffer, sorted by sequence number
        self._ooo_seqs: list[int] = []
        self._ooo: list[tuple[int, Channel | None, bytes]] = []
        self.ooo_bytes = 0
        self._reassemblers = {ch: _Reassembler(max_message_bytes) for ch in Channel}
        #: whole messages, in order, for the session core to hand on
        self.delivered: deque[tuple[Channel, bytes]] = deque()
        #: bytes of messages handed on but not yet taken by the layer above (set by the core)
        self.backlog_bytes = 0
        self.stats = stats if stats is not None else ReceiverStatistics()

    @property
    def available(self) -> int:
        return max(0, self.window_bytes - self.ooo_bytes - self.backlog_bytes)

    @property
    def right_edge(self) -> int:
        return self.rcv_nxt + self.available

    @property
    def has_gaps(self) -> bool:
        return bool(self._ooo)

    def on_segment(self, seq: int, channel: Channel | None, payload: bytes) -> Fate:
        """Take one DATA segment and say what became of it (``channel`` None: a channel
        this end does not know, whose bytes are acknowledged and discarded)."""
        n = len(payload)
        end = seq + n
        rcv_nxt = self.rcv_nxt
        stats = self.stats
        if end <= rcv_nxt or not n:
            stats.duplicate += 1
            return Fate.DUPLICATE
        if end > rcv_nxt + self.window_bytes - self.backlog_bytes or (
            seq > rcv_nxt and self.ooo_bytes + n > self.window_bytes
        ):
            stats.out_of_window += 1
            return Fate.REFUSED
        stats.segments_received += 1
        if seq > rcv_nxt:
            idx = bisect.bisect_left(self._ooo_seqs, seq)
            if idx < len(self._ooo) and self._ooo_seqs[idx] == seq:
                if len(self._ooo[idx][2]) >= len(payload):
                    self.stats.duplicate += 1
                    return Fate.DUPLICATE
                self.ooo_bytes -= len(self._ooo[idx][2])
                self._ooo[idx] = (seq, channel, payload)
            else:
                self._ooo_seqs.insert(idx, seq)
                self._ooo.insert(idx, (seq, channel, payload))
            self.ooo_bytes += len(payload)
            return Fate.NEW
        self._deliver(seq, channel, payload)
        if not self._ooo:
            return Fate.NEW
        while self._ooo and self._ooo_seqs[0] <= self.rcv_nxt:
            del self._ooo_seqs[0]
            oseq, och, opayload = self._ooo.pop(0)
            self.ooo_bytes -= len(opayload)
            if oseq + len(opayload) > self.rcv_nxt:
                self._deliver(oseq, och, opayload)
        return Fate.NEW

    def _deliver(self, seq: int, channel: Channel | None, payload: bytes) -> None:
        rcv_nxt = self.rcv_nxt
        if seq < rcv_nxt:
            payload = payload[rcv_nxt - seq :]
        n = len(payload)
        self.rcv_nxt = rcv_nxt + n
        stats = self.stats
        if channel is None:
            stats.unknown_channel_bytes += n
            return
        stats.payload_bytes_received += n
        self._reassemblers[channel].feed(payload, channel, self.delivered, stats)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Merged ranges held above ``rcv_nxt``, lowest first, at most ``limit``."""
        blocks: list[tuple[int, int]] = []
        for seq, _, payload in self._ooo:
            end = seq + len(payload)
            if blocks and seq <= blocks[-1][1]:
                if end > blocks[-1][1]:
                    blocks[-1] = (blocks[-1][0], end)
            else:
                if len(blocks) == limit:
                    break
                blocks.append((seq, end))
        return blocks
