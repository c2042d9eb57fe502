"""Link protocol version 2 (DATA2, STALE_ECHO, the tail-loss probe) and its interop with 1.

Timelines with a fake clock: two ``Link`` cores handing each other their frames
through a pipe of fixed latency that can lose chosen frames, or the simulated
lossy lines of ``ira.link.simulate``.  Nothing sleeps; nothing looks inside a core.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ira.errors import ConfigError, RemoteProtocolError
from ira.link.config import LinkConfig, parse_version_max
from ira.link.core import Link
from ira.link.events import Channel, LinkEvent, MessageReceived, SessionStarted
from ira.link.framing import StreamDeframer
from ira.link.simulate import LineFaults, LinkPair
from ira.wire.link import (
    DATA_HEADER_BYTES,
    Ack,
    Data,
    LinkFrame,
    check_crc,
    decode_body,
)
from ira.wire.link2 import Data2, header_bytes

CONTROL, BULK = Channel.CONTROL, Channel.BULK
NOISY_115200 = LineFaults(ber=1e-5, drop=0.002, latency_s=0.002, bytes_per_s=11520.0, max_read=64)
SERIAL_115200 = LineFaults(latency_s=0.001, bytes_per_s=11520.0, max_read=64)
KEY = b"0123456789abcdef0123456789abcdef"


# --- a pipe of fixed latency that loses chosen frames (packet mode: one frame an item) --


@dataclass
class Pipe:
    """Two packet-mode cores, a one-way latency, and a rule for frames to lose."""

    a: Link
    b: Link
    latency_s: float = 0.005
    #: lose a frame when this returns True (direction "ab" or "ba", the decoded frame)
    lose: Callable[[str, LinkFrame], bool] = lambda direction, frame: False
    now: float = 0.0
    #: every frame written: when, which way, decoded (None: not decodable as it is,
    #: an authenticated HELLO or ACK), and its bytes
    sent: list[tuple[float, str, LinkFrame | None]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    events: dict[str, list[LinkEvent]] = field(default_factory=lambda: {"a": [], "b": []})
    _flight: list[tuple[float, str, bytes]] = field(default_factory=list)

    def run_for(self, duration_s: float, tick_s: float = 0.0005) -> None:
        end = self.now + duration_s
        while self.now < end:
            self.now += tick_s
            now = self.now
            arrived = [f for f in self._flight if f[0] <= now]
            self._flight = [f for f in self._flight if f[0] > now]
            for _, to, raw in arrived:
                (self.b if to == "b" else self.a).receive_data(raw, now=now)
            for name, link in (("a", self.a), ("b", self.b)):
                due = link.next_deadline()
                if due is not None and due <= now:
                    link.handle_timeout(now=now)
                direction = "ab" if name == "a" else "ba"
                for raw in link.data_to_send(now=now):
                    frame = _decoded(raw)
                    self.sent.append((now, direction, frame))
                    self.raw.append(raw)
                    if frame is None or not self.lose(direction, frame):
                        self._flight.append((now + self.latency_s, direction[1], raw))
                while (event := link.next_event()) is not None:
                    self.events[name].append(event)

    def received(self, name: str) -> list[bytes]:
        return [e.payload for e in self.events[name] if isinstance(e, MessageReceived)]


def _decoded(raw: bytes) -> LinkFrame | None:
    try:
        return decode_body(check_crc(raw))
    except RemoteProtocolError:
        return None


def packet_pair(config_a: LinkConfig, config_b: LinkConfig | None = None) -> Pipe:
    a = Link(config_a, rng=random.Random(1), now=0.0)
    b = Link(config_b or config_a, rng=random.Random(2), now=0.0)
    pipe = Pipe(a, b)
    pipe.run_for(0.2)
    assert any(isinstance(e, SessionStarted) for e in pipe.events["a"])
    assert any(isinstance(e, SessionStarted) for e in pipe.events["b"])
    return pipe


def data_frames(pipe: Pipe, direction: str) -> list[tuple[float, LinkFrame]]:
    return [(t, f) for t, d, f in pipe.sent if d == direction and isinstance(f, Data | Data2)]


# --- negotiation and interop -------------------------------------------------------------


@pytest.mark.parametrize(
    ("version_a", "version_b", "session"), [(2, 2, 2), (1, 2, 1), (2, 1, 1), (1, 1, 1)]
)
def test_the_session_speaks_the_highest_common_version_over_a_lossy_line(
    version_a: int, version_b: int, session: int
) -> None:
    cfg_a, cfg_b = LinkConfig(version_max=version_a), LinkConfig(version_max=version_b)
    a = Link(cfg_a, rng=random.Random(1), now=0.0)
    b = Link(cfg_b, rng=random.Random(2), now=0.0)
    pair = LinkPair(a, b, NOISY_115200, random.Random(3))
    sent = [b"m%04d" % i + bytes(i % 300) for i in range(300)]
    for i, m in enumerate(sent):
        a.send_message(m, BULK if i % 3 else CONTROL)
        b.send_message(m, CONTROL)
    assert pair.run_until(
        lambda: (
            sum(isinstance(e, MessageReceived) for e in pair.events_b) == 300
            and sum(isinstance(e, MessageReceived) for e in pair.events_a) == 300
        ),
        timeout_s=120.0,
    )
    got_b = [e.payload for e in pair.events_b if isinstance(e, MessageReceived)]
    got_a = [e.payload for e in pair.events_a if isinstance(e, MessageReceived)]
    assert sorted(got_b) == sorted(sent) and got_a == sent  # exactly once; in order per channel
    assert [e.version for e in pair.events_a if isinstance(e, SessionStarted)] == [session]
    assert [e.version for e in pair.events_b if isinstance(e, SessionStarted)] == [session]


@pytest.mark.parametrize(("version_a", "version_b"), [(2, 2), (1, 2), (2, 1), (1, 1)])
def test_data_frames_are_data2_exactly_when_both_speak_version_2(
    version_a: int, version_b: int
) -> None:
    pipe = packet_pair(
        LinkConfig(packet=True, version_max=version_a),
        LinkConfig(packet=True, version_max=version_b),
    )
    pipe.a.send_message(b"hello")
    pipe.b.send_message(b"world")
    pipe.run_for(0.2)
    assert pipe.received("b") == [b"hello"] and pipe.received("a") == [b"world"]
    want = Data2 if version_a == version_b == 2 else Data
    frames = [f for _, _, f in pipe.sent if isinstance(f, Data | Data2)]
    assert frames and all(isinstance(f, want) for f in frames)


# --- the lean header -------------------------------------------------------------------------


def test_data2_headers_are_about_half_of_data_headers_in_a_transfer() -> None:
    """Bulk one way, small answers the other, at 115200 baud: a DATA2 header averages
    about half of DATA's 18 bytes (seq and ack in one or two bytes, no window or echo most
    of the time), and every message still arrives."""
    a = Link(LinkConfig(), rng=random.Random(1), now=0.0)
    b = Link(LinkConfig(), rng=random.Random(2), now=0.0)
    pair = LinkPair(a, b, SERIAL_115200, random.Random(0))
    frames: list[Data2] = []
    write = pair.ab.write
    deframer = StreamDeframer(1 << 20)

    def tapped(data: bytes, now: float) -> None:
        for raw in deframer.feed(data):
            frame = decode_body(check_crc(raw))
            if isinstance(frame, Data2):
                frames.append(frame)
        write(data, now)

    pair.ab.write = tapped  # type: ignore[method-assign]
    for i in range(100):
        a.send_message(bytes(1500), BULK)
        if i % 2:
            b.send_message(bytes(60), BULK)
    assert pair.run_until(
        lambda: sum(isinstance(e, MessageReceived) for e in pair.events_b) == 100, timeout_s=60
    )
    assert len(frames) >= 100
    mean = sum(header_bytes(f) for f in frames) / len(frames)
    assert mean <= DATA_HEADER_BYTES - 8, mean  # 18 bytes in DATA
    assert max(f.seq_bytes for f in frames) <= 2  # never more than the bytes in flight need


def test_a_keyed_data2_frame_replayed_where_its_truncated_seq_fits_again_is_refused() -> None:
    """The MAC covers the whole sequence number: a DATA2 frame of seq 0 (one byte on the
    wire), replayed when the receiver expects byte 256, does not verify."""
    cfg = LinkConfig(packet=True, psk=KEY)
    pipe = packet_pair(cfg)
    pipe.a.send_message(bytes(9))  # 10 bytes of stream: seq 0..10
    pipe.run_for(0.2)
    first = [
        raw
        for (_, d, f), raw in zip(pipe.sent, pipe.raw, strict=True)
        if d == "ab" and isinstance(f, Data2)
    ]
    assert len(first) == 1
    frame = _decoded(first[0])
    assert isinstance(frame, Data2) and frame.seq == 0 and frame.seq_bytes == 1
    pipe.a.send_message(bytes(244))  # 246 bytes more: the receiver expects byte 256
    pipe.run_for(0.3)
    assert len(pipe.received("b")) == 2
    refused = pipe.b.statistics().drop_unauthenticated
    pipe.b.receive_data(first[0], now=pipe.now)
    pipe.run_for(0.2)
    assert pipe.b.statistics().drop_unauthenticated == refused + 1
    assert len(pipe.received("b")) == 2  # nothing delivered again


# --- the tail-loss probe -----------------------------------------------------------------------


def lose_first(times: int, marker: bytes) -> Callable[[str, LinkFrame], bool]:
    """Lose the first ``times`` transmissions from A of the message ending in ``marker``
    (a transmission sent twice, as version 2 sends a noisy line's tail, both times)."""
    left = [times]
    lost_tx = [-1]

    def lose(direction: str, frame: LinkFrame) -> bool:
        if direction == "ab" and isinstance(frame, Data | Data2) and marker in frame.payload:
            if frame.tx == lost_tx[0]:
                return True  # the copy of a transmission lost
            left[0] -= 1
            if left[0] >= 0:
                lost_tx[0] = frame.tx
                return True
        return False

    return lose


def warmed_up(version: int) -> Pipe:
    """A packet pair that exchanged some pings: both ends know the round trip (~10 ms)."""
    pipe = packet_pair(LinkConfig(packet=True, version_max=version))
    for i in range(10):
        pipe.a.send_message(b"ping %d" % i)
        pipe.run_for(0.03)
        pipe.b.send_message(b"pong %d" % i)
        pipe.run_for(0.03)
    assert len(pipe.received("b")) == len(pipe.received("a")) == 10
    return pipe


def make_noisy(pipe: Pipe) -> None:
    """Lose every second of 16 frames from A: the held bitmaps show a lossy line."""
    lost = [0]

    def lose(direction: str, frame: LinkFrame) -> bool:
        if direction == "ab" and isinstance(frame, Data | Data2) and b"noise" in frame.payload:
            lost[0] += 1
            return lost[0] % 2 == 1
        return False

    pipe.lose = lose
    for i in range(16):
        pipe.a.send_message(b"noise %d" % i)
        pipe.run_for(0.002)
    pipe.run_for(0.5)
    assert len([m for m in pipe.received("b") if m.startswith(b"noise")]) == 16


def arrival_after_loss(pipe: Pipe, losses: int) -> tuple[float, list[float]]:
    """Send one message from A whose first ``losses`` transmissions are lost: seconds
    until B has it, and when each of its transmissions went (relative to the first)."""
    pipe.lose = lose_first(losses, b"LONE")
    start, before = pipe.now, len(pipe.sent)
    pipe.a.send_message(b"a LONE message")
    while b"a LONE message" not in pipe.received("b"):
        assert pipe.now - start < 30.0
        pipe.run_for(0.001)
    sends: list[float] = []
    last_tx = -1
    for t, d, f in pipe.sent[before:]:
        if d == "ab" and isinstance(f, Data | Data2) and b"LONE" in f.payload:
            if f.tx != last_tx:  # a copy is the same transmission
                sends.append(t - start)
            last_tx = f.tx
    return pipe.now - start, sends


def test_a_lone_lost_frame_costs_about_a_round_trip_on_a_noisy_line_in_version_2() -> None:
    v1, v2 = warmed_up(1), warmed_up(2)
    for pipe in (v1, v2):
        make_noisy(pipe)
    probes_before = v2.a.statistics().tail_probes
    timeouts_before = (
        v1.a.statistics().retransmission_timeouts,
        v2.a.statistics().retransmission_timeouts,
    )
    srtt = v2.a.statistics().srtt_s
    assert srtt is not None and srtt < 0.02
    took_v1, _ = arrival_after_loss(v1, 1)
    took_v2, _ = arrival_after_loss(v2, 1)
    s1, s2 = v1.a.statistics(), v2.a.statistics()
    # the probe: 2 SRTT and the peer's ack delay after the frame, then one way
    assert took_v2 <= 2 * srtt + v2.a.config.ack_delay_s + 0.005 + 0.002
    assert s2.tail_probes - probes_before == 1
    assert s2.retransmission_timeouts == timeouts_before[1]
    # version 1 waits for the retransmission timer (at least rto_min_s)
    assert took_v1 >= v1.a.config.rto_min_s
    assert s1.tail_probes == 0
    assert s1.retransmission_timeouts == timeouts_before[0] + 1
    assert took_v2 < took_v1


def test_a_lone_small_tail_goes_twice_on_a_noisy_line_and_once_on_a_clean_one() -> None:
    """Where a frame is lost as often as not, two copies of the same transmission halve
    the rounds a lone request or reply takes; a clean line gets one."""
    noisy, clean = warmed_up(2), warmed_up(2)
    make_noisy(noisy)
    for pipe, copies in ((noisy, 2), (clean, 1)):
        before, counted = len(pipe.sent), pipe.a.statistics().tail_copies
        pipe.a.send_message(b"a TAIL message")
        pipe.run_for(0.1)
        frames = [
            f
            for _, d, f in pipe.sent[before:]
            if d == "ab" and isinstance(f, Data2) and b"TAIL" in f.payload
        ]
        assert len(frames) == copies
        assert all(f == frames[0] for f in frames)  # the same transmission
        assert pipe.a.statistics().tail_copies - counted == copies - 1
        assert pipe.received("b").count(b"a TAIL message") == 1


def test_no_probe_fires_when_nothing_is_lost() -> None:
    """A clean line sends no probes: a late ACK there is queued, not lost."""
    pipe = warmed_up(2)
    for i in range(50):
        pipe.a.send_message(b"one way %d" % i)
        pipe.run_for(0.05)
    assert len(pipe.received("b")) == 60
    stats = pipe.a.statistics()
    assert (stats.tail_probes, stats.segments_retransmitted) == (0, 0)


@pytest.mark.parametrize("noisy", [True, False])
def test_the_timer_does_not_back_off_on_a_noisy_line_while_the_peer_is_heard(
    noisy: bool,
) -> None:
    """Five transmissions of one message lost in a row, the peer's keepalives arriving:
    on a noisy line version 2's resends keep their pace (noise, not silence); version 1
    backs off, and so does version 2 on a clean line (an ACK queued behind bulk data
    looks the same)."""
    gaps = {}
    for version in (1, 2):
        pipe = warmed_up(version)
        if noisy:
            make_noisy(pipe)
        _, sends = arrival_after_loss(pipe, 5)
        assert len(sends) == 6
        gaps[version] = [b - a for a, b in itertools.pairwise(sends)]
    assert gaps[1][-1] >= 2 * gaps[1][0]  # version 1's timer doubled
    if noisy:
        # version 2: probe and timer alternate, none longer than the first timeout
        assert max(gaps[2]) <= 2 * max(gaps[2][:2])
        assert max(gaps[2]) < max(gaps[1]) / 2
    else:
        # probe, timer, probe, timer backed off (its base doubled), probe
        assert gaps[2][3] >= 1.4 * gaps[2][1]


def test_a_keepalive_ack_marks_its_echo_stale_in_version_2() -> None:
    """An ACK that repeats an old echo (a keepalive) says so, so the sender takes no
    round-trip sample from it; a version-1 session's ACKs carry no such flag."""
    for version in (1, 2):
        pipe = warmed_up(version)
        before = len(pipe.sent)
        pipe.run_for(1.0)  # idle: keepalives
        acks = [f for _, d, f in pipe.sent[before:] if d == "ba" and isinstance(f, Ack)]
        assert acks
        assert all(a.stale_echo for a in acks) == (version == 2)
        assert any(a.stale_echo for a in acks) == (version == 2)
        assert pipe.a.statistics().srtt_s < 0.02  # type: ignore[operator]


@pytest.mark.parametrize("text", ["0", "3", "two", ""])
def test_a_version_cap_out_of_range_is_refused_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigError, match=r"IRA_LINK_VERSION_MAX.*1\.\.2"):
        parse_version_max(text)


def test_the_version_cap_parses_and_the_config_checks_its_range() -> None:
    assert [parse_version_max(t) for t in ("1", "2")] == [1, 2]
    with pytest.raises(ConfigError, match="version_max 3"):
        LinkConfig(version_max=3)
