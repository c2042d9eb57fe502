"""Frames waiting to go over the link, one queue per flow, served in turn.

Sans-I/O.  On a slow link the queue of frames toward the peer is where latency
under load comes from: at 115200 baud a TCP transfer keeps ~2 s of frames
waiting, and a ping or a keystroke behind them waits as long.  The kernel cannot
help: a TAP takes each packet off its queue discipline at once and never pushes
back, so the backlog has to be scheduled where ira holds it.  This is fq_codel
(RFC 8290 §4): frames are hashed to
flows by their IP 5-tuple, flows take turns by deficit round robin with a quantum
of one full frame, and a flow that was idle goes ahead of the busy ones
(RFC 8290's new-flows list), so a sparse flow — a ping, an ssh session, a DNS
query — waits behind at most what is already in flight and one frame of each
busy flow.  When the queue is full, frames are dropped from the head of the flow
holding the most bytes (the bulk flow pays, and TCP backs off), and counted.
Once the line's rate is known (``set_line_rate``), each flow's queue also runs
CoDel (``ira.venet.codel``, RFC 8289, its times scaled to the line): a bulk flow
whose frames wait longer than about one frame's time on the line loses one from
its head now and then, so TCP keeps its own queue short (its round trip, and what
a new flow's first frames wait behind, stay near the line's).

A frame here is what the virtio-net driver sends: a virtio-net header, then the
Ethernet frame.
"""

from __future__ import annotations

import struct
from collections import deque

from ira.venet.codel import CoDel, CoDelParams
from ira.wire.venet import VNET_HDR_BYTES

#: Ethernet header: destination, source, ethertype
_ETH_BYTES = 14
_ETHERTYPE_AT = VNET_HDR_BYTES + 12
_IP_AT = VNET_HDR_BYTES + _ETH_BYTES
_IPV4, _IPV6 = 0x0800, 0x86DD
#: IP protocols whose first 4 bytes are the ports
_PORTED = frozenset({6, 17, 33, 132, 136})  # TCP, UDP, DCCP, SCTP, UDP-Lite
_U16 = struct.Struct("!H")

#: RFC 8290's defaults: 1024 flows' worth of frames; here a byte bound too
LIMIT_FRAMES = 1024
LIMIT_BYTES = 4 << 20


def flow_key(frame: bytes) -> bytes:
    """What identifies a frame's flow: IP version, protocol, addresses and ports where
    the frame has them (fragments and unknown protocols: the addresses), else the
    Ethernet type and addresses."""
    if len(frame) < _IP_AT:
        return b""
    (ethertype,) = _U16.unpack_from(frame, _ETHERTYPE_AT)
    ip = _IP_AT
    if ethertype == _IPV4 and len(frame) >= ip + 20:
        proto = frame[ip + 9]
        key = frame[ip + 9 : ip + 10] + frame[ip + 12 : ip + 20]
        header = (frame[ip] & 0x0F) * 4
        first_fragment = not _U16.unpack_from(frame, ip + 6)[0] & 0x1FFF
        if proto in _PORTED and first_fragment and len(frame) >= ip + header + 4:
            key += frame[ip + header : ip + header + 4]
        return b"4" + key
    if ethertype == _IPV6 and len(frame) >= ip + 40:
        proto = frame[ip + 6]
        key = frame[ip + 6 : ip + 7] + frame[ip + 8 : ip + 40]
        if proto in _PORTED and len(frame) >= ip + 44:
            key += frame[ip + 40 : ip + 44]
        return b"6" + key
    return frame[VNET_HDR_BYTES : VNET_HDR_BYTES + _ETH_BYTES]


class _Flow:
    __slots__ = ("bytes", "codel", "deficit", "frames", "key")

    def __init__(self, key: bytes, quantum: int) -> None:
        self.key = key
        #: frames and when each was queued
        self.frames: deque[tuple[bytes, float]] = deque()
        self.bytes = 0
        self.deficit = quantum
        self.codel = CoDel()

    def take(self) -> tuple[bytes, float] | None:
        if not self.frames:
            return None
        head = self.frames.popleft()
        self.bytes -= len(head[0])
        return head


class FlowQueue:
    """Frames by flow, taken out in turn (see the module docstring)."""

    def __init__(
        self, *, quantum: int, limit_frames: int = LIMIT_FRAMES, limit_bytes: int = LIMIT_BYTES
    ) -> None:
        """``quantum``: bytes a flow may send per turn (one full frame: header, Ethernet
        header and MTU); ``limit_*``: what the queue holds at most."""
        if quantum <= 0 or limit_frames <= 0 or limit_bytes <= 0:
            raise ValueError("quantum and limits must be positive")
        self.quantum = quantum
        self.limit_frames = limit_frames
        self.limit_bytes = limit_bytes
        self._flows: dict[bytes, _Flow] = {}
        self._new: deque[_Flow] = deque()
        self._old: deque[_Flow] = deque()
        self._rate: float | None = None
        self.frames = 0
        self.bytes = 0
        #: frames dropped because the queue was full
        self.dropped = 0
        #: frames CoDel dropped (flows gone since included)
        self._codel_dropped = 0
        #: CoDel's times; None (the line's rate not known yet): no CoDel drops
        self.codel: CoDelParams | None = None

    @property
    def codel_dropped(self) -> int:
        """Frames dropped by CoDel for waiting too long."""
        return self._codel_dropped + sum(f.codel.dropped for f in self._flows.values())

    def set_line_rate(self, rate: float | None) -> None:
        """The line moves ``rate`` bytes a second (None: not known): CoDel's times follow."""
        if rate is None or rate <= 0:
            self.codel = None
        elif self.codel is None or rate != self._rate:
            self.codel = CoDelParams.for_line(rate, self.quantum)
        self._rate = rate

    def __len__(self) -> int:
        return self.frames

    def push(self, frame: bytes, *, now: float) -> None:
        """Queue a frame behind the others of its flow (dropping from the fattest flow
        when the queue is full)."""
        key = flow_key(frame)
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow(key, self.quantum)
            self._new.append(flow)
        flow.frames.append((frame, now))
        flow.bytes += len(frame)
        self.frames += 1
        self.bytes += len(frame)
        while self.frames > self.limit_frames or self.bytes > self.limit_bytes:
            self._drop_from_fattest()

    def pop(self, *, now: float) -> bytes | None:
        """The next frame to send, or None when the queue is empty (CoDel may drop
        frames of the flow whose turn it is on the way)."""
        while True:
            lst = self._new if self._new else self._old
            if not lst:
                return None
            flow = lst[0]
            if flow.deficit <= 0:
                flow.deficit += self.quantum
                lst.popleft()
                self._old.append(flow)
                continue
            if not flow.frames:
                lst.popleft()
                if lst is self._new and self._old:
                    # RFC 8290: an emptied new flow goes to the old list once, so that
                    # a flow cannot stay "new" by sending one frame at a time
                    self._old.append(flow)
                else:
                    del self._flows[flow.key]
                    self._codel_dropped += flow.codel.dropped
                continue
            frames, nbytes = len(flow.frames), flow.bytes
            if self.codel is None:
                head = flow.take()
                frame = None if head is None else head[0]
            else:
                frame = flow.codel.dequeue(flow, self.codel, now=now)
            self.frames -= frames - len(flow.frames)
            self.bytes -= nbytes - flow.bytes
            if frame is None:
                continue  # CoDel dropped to the last: the flow is empty
            flow.deficit -= len(frame)
            return frame

    def _drop_from_fattest(self) -> None:
        fattest = max(self._flows.values(), key=lambda f: (f.bytes, len(f.frames)))
        frame = fattest.frames.popleft()[0]
        fattest.bytes -= len(frame)
        self.frames -= 1
        self.bytes -= len(frame)
        self.dropped += 1


class InflightLimit:
    """How many bytes of frames to keep handed to the peer: the frame on the line and
    about one more, and no more — the rest waits in the ``FlowQueue``, where it can be
    scheduled (Linux's byte queue limits do this for a NIC's ring).

    The limit is in the line's time: one full ``frame`` (the one on the line) plus
    ``target_s`` of the rate at which the peer returns frames, but at least a second
    full frame (committed behind the first, so the line does not stand idle while the
    return of the first comes back), at most ``cap``.  A sparse flow's frame then waits
    behind at most the frame on the line and one more (0.13 s each at 115200 baud);
    on a fast line the limit is ``target_s`` of its rate.  The rate is measured only
    while frames are out (idle time is not a slow link), as the highest of the last
    ``samples`` measurements (a stall does not shrink it), each over at least two
    full frames' returns.  It starts at the cap: a
    rate is measured between two returns while frames are out, and a limit that let
    only one frame out at a time would never see two (a fast link would stay at the
    least).  A slow link measures its rate within the first returns, after a first
    burst (TCP's initial window) has gone out.
    """

    #: a measurement spans at least this long (returns come in batches on a fast link)
    MIN_INTERVAL_S = 0.01

    def __init__(self, *, frame: int, cap: int, target_s: float = 0.05, samples: int = 16) -> None:
        if not 0 < frame <= cap or target_s <= 0 or samples <= 0:
            raise ValueError("need 0 < frame <= cap, target_s > 0 and samples > 0")
        self.frame = frame
        self.cap = cap
        self.target_s = target_s
        self._rates: deque[float] = deque(maxlen=samples)
        self._start: float | None = None
        self._bytes = 0

    @property
    def limit(self) -> int:
        if not self._rates:
            return self.cap
        behind = max(self.frame, int(max(self._rates) * self.target_s))
        return min(self.cap, self.frame + behind)

    @property
    def rate(self) -> float | None:
        """Bytes per second the peer returned frames at lately (None: not measured yet)."""
        return max(self._rates) if self._rates else None

    def returned(self, nbytes: int, inflight: int, *, now: float) -> None:
        """The peer returned ``nbytes`` of frames; ``inflight`` bytes are still out."""
        start = self._start
        if start is None:
            self._start, self._bytes = now, 0  # these bytes went out before it started
        else:
            self._bytes += nbytes
            # over two full frames at least: a return that came late, just before the
            # next one, would make a slow line look fast
            if now - start >= self.MIN_INTERVAL_S and self._bytes >= 2 * self.frame:
                self._rates.append(self._bytes / (now - start))
                self._start, self._bytes = now, 0
        if not inflight:
            self._start = None  # nothing out: what follows is idle, not a slow link
