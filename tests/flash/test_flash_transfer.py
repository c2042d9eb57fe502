"""The flash transfer as timelines: Sender and Receiver over a paced, lossy pipe with
explicit time (no sleeps, no threads)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from cobs import cobs

from ira.flash import receiver as rx
from ira.flash.sender import (
    Finished,
    Sender,
    SenderConfig,
    Stalled,
    Stream,
    Transferred,
    TransferStarted,
)
from ira.wire import flash as wire
from ira.wire.flash import Codec, Status

RATE = 11520.0  # bytes per second: 115200 baud, 10 bits a byte


@dataclass
class Pipe:
    """One direction: paced at ``rate``; ``flip`` per-byte probability of a bit error;
    bytes sent while unplugged are lost."""

    rng: random.Random
    rate: float = RATE
    flip: float = 0.0
    unplugged: tuple[float, float] = (0.0, 0.0)
    busy_until: float = 0.0
    queue: list[tuple[float, bytes]] = field(default_factory=list)

    def send(self, data: bytes, now: float) -> None:
        if not data:
            return
        start = max(now, self.busy_until)
        self.busy_until = start + len(data) / self.rate
        if self.unplugged[0] <= start < self.unplugged[1]:
            return
        if self.flip:
            buf = bytearray(data)
            for i in range(len(buf)):
                if self.rng.random() < self.flip:
                    buf[i] ^= 1 << self.rng.randrange(8)
            data = bytes(buf)
        self.queue.append((self.busy_until, data))

    def due(self, now: float) -> bytes:
        out = b"".join(d for t, d in self.queue if t <= now)
        self.queue = [(t, d) for t, d in self.queue if t > now]
        return out


@dataclass
class Board:
    """What the stub does with the receiver's events; ``store`` outlives a session."""

    store: bytearray = field(default_factory=bytearray)
    installed: bytes | None = None

    def act(self, r: rx.Receiver, events: list[object], stream: Stream) -> None:
        for ev in events:
            match ev:
                case rx.Opened():
                    r.accept(len(self.store))
                case rx.Stored(offset, data):
                    assert offset == len(self.store)
                    self.store += data
                case rx.InstallAsked():
                    ok = hashlib.sha256(bytes(self.store)).digest() == stream.sha256
                    if ok:
                        self.installed = bytes(self.store)
                    r.finish(rx.ST_OK if ok else rx.ST_BAD_SHA, "done")


def make_stream(size: int, seed: int = 1) -> Stream:
    data = random.Random(seed).randbytes(size)
    # the "payload" of these timelines is the stream itself (what the SHA is checked on)
    return Stream(data, hashlib.sha256(data).digest(), size, Codec.ZLIB)


def run(
    stream: Stream,
    board: Board,
    *,
    seed: int = 0,
    flip: float = 0.0,
    unplugged: tuple[float, float] = (0.0, 0.0),
    stop_at_have: int | None = None,
    limit_s: float = 600.0,
    config: SenderConfig | None = None,
    answer: bool = True,
) -> tuple[Sender, rx.Receiver, list[object], float]:
    rng = random.Random(seed)
    down = Pipe(rng, flip=flip, unplugged=unplugged)
    up = Pipe(rng, flip=flip, unplugged=unplugged)
    now, dt = 0.0, 0.002
    s = Sender(stream, now=now, config=config or SenderConfig(window_bytes=8192, rto_s=2.0))
    r = rx.Receiver(now=now)
    seen: list[object] = []
    installing = False
    while now < limit_s:
        if answer:
            up.send(r.data_to_send(), now)
        down.send(s.data_to_send(), now)
        board.act(r, r.receive_data(down.due(now), now=now), stream)
        events: list[object] = list(s.receive_data(up.due(now), now=now))
        deadline = s.next_deadline()
        assert deadline is None or deadline > now - dt  # never asks to be woken in the past
        if deadline is not None and now >= deadline:
            events += s.handle_timeout(now=now)
        seen += events
        for ev in events:
            if isinstance(ev, Transferred) and not installing:
                installing = True
                s.install("{}", now=now)
            if isinstance(ev, Finished | Stalled):
                return s, r, seen, now
        if stop_at_have is not None and s.have >= stop_at_have:
            return s, r, seen, now
        now += dt
    raise AssertionError("the timeline did not finish")


def test_a_clean_line_carries_the_stream_near_line_rate() -> None:
    stream, board = make_stream(60_000), Board()
    s, _r, seen, t = run(stream, board)
    assert board.installed == stream.data
    assert Finished(Status.OK, "done") in seen
    st = s.statistics()
    assert st.blocks_resent == 0 and st.timeouts == 0
    # DATA frames carry ~15 bytes of overhead per 1024: the stream moves at >= 0.95 of the line
    assert len(stream.data) / t >= 0.95 * RATE


def test_spoiled_blocks_are_resent_and_the_stream_arrives_whole() -> None:
    stream, board = make_stream(60_000), Board()
    s, r, _seen, _ = run(stream, board, flip=2e-5, seed=7)
    assert board.installed == stream.data
    assert r.statistics().bad_frames > 0
    assert s.statistics().blocks_resent > 0


def test_an_unplugged_cable_resumes_where_it_stopped_in_one_session() -> None:
    stream, board = make_stream(60_000), Board()
    s, _, _seen, _t = run(stream, board, unplugged=(2.0, 5.0))
    assert board.installed == stream.data
    assert s.statistics().timeouts > 0
    # after the cable came back only what was lost was sent again, not the stream
    assert s.statistics().data_bytes_sent <= len(stream.data) + 3 * 8192


def test_a_new_session_resumes_from_what_the_board_kept() -> None:
    stream, board = make_stream(60_000), Board()
    run(stream, board, stop_at_have=30_000)
    kept = len(board.store)
    assert 30_000 <= kept < 60_000
    s, _, seen, _ = run(stream, board)
    assert TransferStarted(kept, 60_000) in seen
    assert s.statistics().resumed_from == kept
    assert s.statistics().data_bytes_sent == 60_000 - kept
    assert board.installed == stream.data


def test_a_stream_whose_sha_differs_is_never_installed() -> None:
    good = make_stream(20_000)
    lying = Stream(good.data, hashlib.sha256(b"other").digest(), good.payload_size, good.codec)
    board = Board()
    _, _, seen, _ = run(lying, board)
    assert board.installed is None
    assert Finished(Status.BAD_SHA, "done") in seen


def test_a_silent_board_stalls_the_sender() -> None:
    stream = make_stream(5_000)
    config = SenderConfig(rto_s=1.0, stall_s=10.0)
    s, _, seen, t = run(stream, Board(), answer=False, config=config, limit_s=60)
    assert isinstance(seen[-1], Stalled) and 10.0 <= t < 11.0
    assert s.statistics().frames_sent == 0  # nothing is sent before the stub's HELLO


def test_the_receiver_counts_junk_and_holds_at_most_its_window() -> None:
    rng = random.Random(3)
    r = rx.Receiver(now=0.0, window=4096)
    for i in range(2000):
        events = r.receive_data(rng.randbytes(rng.randrange(1, 300)), now=i * 0.01)
        assert all(
            isinstance(e, rx.Opened | rx.Stored | rx.InstallAsked | rx.QuitAsked) for e in events
        )
    assert r.statistics().bad_frames > 0
    # blocks far beyond `have` are not held
    r2 = rx.Receiver(now=0.0, window=4096)
    r2.receive_data(_host(_open(100_000)), now=0.0)
    r2.accept(0)
    for off in range(1024, 100_000, 1024):
        r2.receive_data(_host(_data(off, bytes(1024))), now=0.0)
    st = r2.statistics()
    assert st.held_blocks == 3 and st.dropped_blocks > 90


def test_the_receiver_gives_up_when_the_host_is_gone() -> None:
    r = rx.Receiver(now=100.0)
    assert r.handle_timeout(now=100.0 + rx.IDLE_S - 0.1) == []
    assert r.handle_timeout(now=100.0 + rx.IDLE_S) == [rx.IdleExpired()]


def _host(body_frame: bytes) -> bytes:
    return b"\x00" + cobs.encode(body_frame) + b"\x00"


def _open(size: int) -> bytes:
    return wire.encode(wire.Open(bytes(32), size, size, Codec.ZLIB))


def _data(offset: int, data: bytes) -> bytes:
    return wire.encode(wire.Data(offset, data))
