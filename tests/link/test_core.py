"""The link core (DESIGN §3): two ends over simulated lossy lines, driven by a fake clock.

Every test reads as a timeline: set up two ``Link`` cores joined by a
``LinkPair``, advance the fake clock, assert on the events each end reported.
Nothing sleeps; nothing looks inside the cores.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import TypeVar

import pytest

from ira.errors import ConfigError, LocalProtocolError
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import (
    Channel,
    LinkDown,
    LinkEvent,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.link.framing import StreamDeframer, encode_frames, encode_varint
from ira.link.simulate import LineFaults, LinkPair
from ira.wire.link import (
    VERSION_MAX,
    VERSION_MIN,
    Data,
    Hello,
    decode,
    encode,
    seal,
)

CONTROL, BULK = Channel.CONTROL, Channel.BULK
CLEAN = LineFaults(latency_s=0.001)
SERIAL_115200 = LineFaults(latency_s=0.001, bytes_per_s=11520.0, max_read=64)

Message = tuple[Channel, bytes]
E = TypeVar("E", bound=LinkEvent)


# --- helpers -------------------------------------------------------------------------------


def new_link(config: LinkConfig | None = None, *, seed: int, now: float = 0.0) -> Link:
    return Link(config or LinkConfig(), rng=random.Random(seed), now=now)


def make_pair(
    config: LinkConfig | None = None,
    faults: LineFaults = CLEAN,
    *,
    config_b: LinkConfig | None = None,
    faults_ba: LineFaults | None = None,
    seed: int = 0,
) -> LinkPair:
    a = new_link(config, seed=seed * 2 + 1)
    b = new_link(config_b or config, seed=seed * 2 + 2)
    return LinkPair(a, b, faults, random.Random(seed), faults_ba=faults_ba)


def received(events: list[LinkEvent]) -> list[Message]:
    return [(e.channel, e.payload) for e in events if isinstance(e, MessageReceived)]


def on_channel(messages: list[Message], channel: Channel) -> list[bytes]:
    return [m for c, m in messages if c is channel]


def kinds(events: list[LinkEvent]) -> list[type]:
    """The events that are not messages, by type, in order."""
    return [type(e) for e in events if not isinstance(e, MessageReceived)]


def of_type(events: list[LinkEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def send_all(link: Link, messages: list[Message]) -> None:
    for channel, payload in messages:
        link.send_message(payload, channel)


def numbered(prefix: bytes, count: int, size: int = 40, channel: Channel = BULK) -> list[Message]:
    """Distinct messages: the prefix and number in front, padding behind."""
    return [(channel, (prefix + b"%06d-" % i).ljust(size, b".")) for i in range(count)]


def up(pair: LinkPair, timeout_s: float = 5.0) -> None:
    assert pair.run_until(
        lambda: (
            bool(of_type(pair.events_a, SessionStarted))
            and bool(of_type(pair.events_b, SessionStarted))
        ),
        timeout_s=timeout_s,
    )


def assert_exactly_once_in_order(sent: list[Message], got: list[Message]) -> None:
    for channel in Channel:
        assert on_channel(got, channel) == on_channel(sent, channel), channel


def tag_of(link: Link) -> int:
    """The session tag both ends put in DATA and ACK frames (ira.wire.link)."""
    st = link.statistics()
    assert st.peer_epoch is not None
    return (st.local_epoch ^ st.peer_epoch) & 0xFFFF


def data_frame(**fields: object) -> bytes:
    """A DATA frame; fields not given are 0 (or empty)."""
    values: dict[str, object] = dict.fromkeys(Data._fields, 0)
    values["payload"] = b""
    values.update(fields)
    return encode(Data(**values))  # type: ignore[arg-type]


def wire(link: Link, frame: bytes) -> bytes:
    """How ``frame`` travels to ``link``: as it is (packet) or COBS-framed (stream)."""
    return frame if link.config.packet else encode_frames([frame])


def hello(*, epoch: int, ack: bool = False, peer_epoch: int = 0, **fields: int) -> bytes:
    values = {
        "version_min": VERSION_MIN,
        "version_max": VERSION_MAX,
        "features": 1,
        "max_frame_bytes": 1500,
        "window_bytes": 1 << 16,
        "keepalive_ms": 250,
    }
    values.update(fields)
    return encode(Hello(ack=ack, epoch=epoch, peer_epoch=peer_epoch, **values))


def drain(link: Link) -> list[LinkEvent]:
    events = []
    while (event := link.next_event()) is not None:
        events.append(event)
    return events


# --- the seeded scenario matrix ----------------------------------------------------------------

SCENARIOS = 1000
BATCH = 50
SIZES = (0, 1, 2, 17, 127, 128, 129, 300, 1000, 3000)


def _faults(rng: random.Random) -> LineFaults:
    return LineFaults(
        ber=rng.choice((0.0, 1e-5, 1e-4)),
        drop=rng.choice((0.0, 1e-3, 1e-2)),
        dup=rng.choice((0.0, 1e-3, 1e-2)),
        latency_s=rng.choice((1e-4, 1e-3, 2e-2)),
        bytes_per_s=rng.choice((None, 11520.0, 92160.0, 1e6)),
        max_read=rng.choice((1, 7, 64, 4096)),
    )


@dataclass(frozen=True)
class Scenario:
    """Everything one seeded run depends on (its repr is the failure report)."""

    seed: int
    packet: bool
    max_frame_bytes: int
    faults_ab: LineFaults
    faults_ba: LineFaults
    sizes_ab: tuple[tuple[Channel, int], ...]
    sizes_ba: tuple[tuple[Channel, int], ...]

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        ab = _faults(rng)
        ba = ab if rng.random() < 0.5 else _faults(rng)
        # reads of a few bytes on a rate-limited line are one simulation step each:
        # keep those transfers small so that a thousand scenarios stay fast
        tiny_reads = any(f.max_read < 64 and f.bytes_per_s for f in (ab, ba))
        sizes = SIZES[:8] if tiny_reads else SIZES

        def traffic(most: int) -> tuple[tuple[Channel, int], ...]:
            n = rng.randint(0, most)
            return tuple((Channel(rng.randrange(2)), rng.choice(sizes)) for _ in range(n))

        return cls(
            seed=seed,
            packet=rng.random() < 0.4,
            max_frame_bytes=rng.choice((64, 100, 256, 1500, 65536)),
            faults_ab=ab,
            faults_ba=ba,
            sizes_ab=traffic(8) or ((CONTROL, 1),),
            sizes_ba=traffic(6),
        )


def run_scenario(sc: Scenario) -> None:
    rng = random.Random(sc.seed)
    config = LinkConfig(packet=sc.packet, max_frame_bytes=sc.max_frame_bytes)
    a = new_link(config, seed=rng.getrandbits(64))
    b = new_link(config, seed=rng.getrandbits(64))
    pair = LinkPair(a, b, sc.faults_ab, rng, faults_ba=sc.faults_ba)
    to_b = [(ch, rng.randbytes(n)) for ch, n in sc.sizes_ab]
    to_a = [(ch, rng.randbytes(n)) for ch, n in sc.sizes_ba]
    send_all(a, to_b)
    send_all(b, to_a)

    def done() -> bool:
        return (
            len(received(pair.events_b)) >= len(to_b)
            and len(received(pair.events_a)) >= len(to_a)
            and not a.busy
            and not b.busy
        )

    assert pair.run_until(done, timeout_s=300.0), f"stalled at t={pair.now:.1f}s"
    pair.run_for(0.5)  # late duplicates would show up here
    assert_exactly_once_in_order(to_b, received(pair.events_b))
    assert_exactly_once_in_order(to_a, received(pair.events_a))
    for link, events, sent, got in ((a, pair.events_a, to_b, to_a), (b, pair.events_b, to_a, to_b)):
        seq = kinds(events)
        assert seq[0] is SessionStarted and seq.count(SessionStarted) == 1
        assert not of_type(events, PeerRestarted) and not of_type(events, SessionLost)
        # a lossy handshake can leave one end silent past the dead interval: then
        # LinkDown and LinkUp alternate, and the session goes on
        assert seq[1:] == [LinkDown, LinkUp] * (len(seq[1:]) // 2)
        st = link.statistics()
        assert st.messages_queued == st.messages_acked == len(sent)
        assert st.messages_delivered == len(got)
        assert st.messages_discarded == 0


@pytest.mark.parametrize("first", range(0, SCENARIOS, BATCH), ids=lambda s: f"seeds{s}+")
def test_seeded_scenarios_deliver_every_message_exactly_once_in_order(first: int) -> None:
    for seed in range(first, first + BATCH):
        sc = Scenario.from_seed(seed)
        try:
            run_scenario(sc)
        except AssertionError as exc:
            raise AssertionError(f"{sc!r}: {exc}") from exc


HEAVY = [
    pytest.param(
        LinkConfig(),
        LineFaults(ber=3e-4, drop=1e-2, dup=1e-2, latency_s=1e-3, bytes_per_s=92160.0),
        [(BULK, 65536), (CONTROL, 10), (BULK, 20000), (CONTROL, 300)],
        id="stream-noisy-921600",
    ),
    pytest.param(
        LinkConfig(packet=True, max_frame_bytes=512),
        LineFaults(ber=1e-4, drop=0.05, dup=0.05, latency_s=2e-3),
        [(BULK, 100_000), (CONTROL, 1), (BULK, 0), (CONTROL, 4000)],
        id="packet-5pct-loss-and-dup",
    ),
    pytest.param(
        LinkConfig(max_frame_bytes=64, window_bytes=4096),
        LineFaults(ber=1e-4, drop=1e-2, dup=1e-2, latency_s=2e-2, bytes_per_s=11520.0),
        [(CONTROL, 5000), (BULK, 3000), (CONTROL, 0)],
        id="stream-small-frames-small-window-115200",
    ),
]


@pytest.mark.parametrize(("config", "faults", "sizes"), HEAVY)
def test_heavy_faults_still_deliver_exactly_once(
    config: LinkConfig, faults: LineFaults, sizes: list[tuple[Channel, int]]
) -> None:
    rng = random.Random(99)
    pair = make_pair(config, faults, seed=99)
    to_b = [(ch, rng.randbytes(n)) for ch, n in sizes]
    to_a = [(ch, rng.randbytes(n // 3)) for ch, n in sizes]
    send_all(pair.a, to_b)
    send_all(pair.b, to_a)
    assert pair.run_until(
        lambda: (
            len(received(pair.events_b)) == len(to_b) and len(received(pair.events_a)) == len(to_a)
        ),
        timeout_s=600.0,
    )
    pair.run_for(1.0)
    assert_exactly_once_in_order(to_b, received(pair.events_b))
    assert_exactly_once_in_order(to_a, received(pair.events_a))
    assert not of_type(pair.events_a + pair.events_b, PeerRestarted)


# --- handshake ----------------------------------------------------------------------------


def test_handshake_starts_one_session_on_each_end() -> None:
    config_a = LinkConfig(max_frame_bytes=1500)
    config_b = LinkConfig(max_frame_bytes=256, features=0)
    pair = make_pair(config_a, config_b=config_b)
    up(pair)
    (sa,) = of_type(pair.events_a, SessionStarted)
    (sb,) = of_type(pair.events_b, SessionStarted)
    assert (sa.local_epoch, sa.peer_epoch) == (sb.peer_epoch, sb.local_epoch)
    assert sa.local_epoch != sb.local_epoch
    assert sa.max_frame_bytes == 256  # the peer's limit for what we send
    assert sb.max_frame_bytes == 1500
    assert sa.features == sb.features == 0  # the AND of both ends' features
    assert sa.version == sb.version == VERSION_MAX
    assert pair.now < 0.1
    assert pair.a.statistics().state == pair.b.statistics().state == "up"


def test_messages_sent_before_the_handshake_are_delivered() -> None:
    pair = make_pair()
    early = numbered(b"early", 5, channel=CONTROL)
    send_all(pair.a, early)
    assert pair.a.statistics().state == "handshake"
    up(pair)
    assert pair.run_until(lambda: len(received(pair.events_b)) == 5, timeout_s=1.0)
    assert received(pair.events_b) == early


def test_hello_is_retried_with_backoff_until_a_peer_answers() -> None:
    config = LinkConfig()
    link = new_link(config, seed=1)
    now = 0.0
    sent_at = []
    while now < 6.0:
        if link.data_to_send(now=now):
            sent_at.append(round(now, 6))
        deadline = link.next_deadline()
        assert deadline is not None and deadline > now
        now = deadline
        link.handle_timeout(now=now)
    first = config.hello_interval_s
    cap = 4 * config.keepalive_interval_s
    expected, t, interval = [], 0.0, first
    while t < 6.0:
        expected.append(round(t, 6))
        t += interval
        interval = min(2 * interval, cap)
    assert sent_at == expected
    assert drain(link) == []


def test_a_retransmitted_hello_of_the_same_peer_changes_nothing() -> None:
    pair = make_pair()
    up(pair)
    peer_epoch = pair.b.statistics().local_epoch
    before = list(pair.events_a)
    pair.a.receive_data(wire(pair.a, hello(epoch=peer_epoch)), now=pair.now)
    assert drain(pair.a) == []
    assert pair.events_a == before
    # it is answered with a HELLO_ACK
    out = StreamDeframer(1 << 20).feed(b"".join(pair.a.data_to_send(now=pair.now)))
    answers = [f for f in map(decode, out) if isinstance(f, Hello)]
    assert [(h.ack, h.peer_epoch) for h in answers] == [(True, peer_epoch)]
    send_all(pair.a, numbered(b"after", 3))
    assert pair.run_until(lambda: len(received(pair.events_b)) == 3, timeout_s=1.0)


def test_a_peer_speaking_a_wider_version_range_gets_the_common_version() -> None:
    link = new_link(seed=1)
    link.receive_data(wire(link, hello(epoch=77, version_min=0, version_max=200)), now=0.0)
    (started,) = drain(link)
    assert isinstance(started, SessionStarted)
    assert started.version == VERSION_MAX


def test_hello_ack_for_another_epoch_is_stale_and_ignored() -> None:
    link = new_link(seed=1)
    mine = link.statistics().local_epoch
    frame = hello(epoch=77, ack=True, peer_epoch=mine ^ 0x10)
    link.receive_data(wire(link, frame), now=0.0)
    assert drain(link) == []
    st = link.statistics()
    assert (st.state, st.drop_stale, st.sessions) == ("handshake", 1, 0)
    # the answer to our own HELLO is taken
    link.receive_data(wire(link, hello(epoch=77, ack=True, peer_epoch=mine)), now=0.0)
    assert kinds(drain(link)) == [SessionStarted]


# --- delivery ---------------------------------------------------------------------------


def test_control_goes_ahead_of_queued_bulk() -> None:
    pair = make_pair(LinkConfig(), SERIAL_115200)
    up(pair)
    bulk = numbered(b"bulk", 40, size=1000)
    send_all(pair.a, bulk)
    pair.run_for(0.2)
    pair.a.send_message(b"urgent", CONTROL)
    assert pair.run_until(lambda: len(received(pair.events_b)) == 41, timeout_s=30.0)
    got = received(pair.events_b)
    position = got.index((CONTROL, b"urgent"))
    # 40 KB at 11.5 KB/s: the control message overtakes most of the bulk backlog
    assert position < 10, position
    assert on_channel(got, BULK) == on_channel(bulk, BULK)


@pytest.mark.parametrize("packet", [False, True], ids=["stream", "packet"])
def test_messages_larger_than_frames_and_window_are_reassembled(packet: bool) -> None:
    config = LinkConfig(packet=packet, max_frame_bytes=64, window_bytes=4096)
    pair = make_pair(config, LineFaults(latency_s=1e-3, drop=0.01 if packet else 0.0))
    big = [(BULK, random.Random(5).randbytes(50_000)), (CONTROL, b"x" * 5000), (BULK, b"")]
    send_all(pair.a, big)
    assert pair.run_until(lambda: len(received(pair.events_b)) == 3, timeout_s=120.0)
    assert_exactly_once_in_order(big, received(pair.events_b))


def test_empty_messages_are_delivered() -> None:
    pair = make_pair()
    msgs = [(CONTROL, b""), (BULK, b""), (CONTROL, b""), (BULK, b"x")]
    send_all(pair.a, msgs)
    assert pair.run_until(lambda: len(received(pair.events_b)) == 4, timeout_s=1.0)
    assert_exactly_once_in_order(msgs, received(pair.events_b))


def test_idle_link_stays_up_on_keepalives() -> None:
    config = LinkConfig()
    pair = make_pair(config, LineFaults(latency_s=1e-3, drop=1e-3, bytes_per_s=11520.0))
    up(pair)
    start_frames = pair.a.statistics().frames_sent
    pair.run_for(60.0)
    assert kinds(pair.events_a) == kinds(pair.events_b) == [SessionStarted]
    sent = pair.a.statistics().frames_sent - start_frames
    # about one keepalive per interval, and not many more
    assert 0.8 * 60 / config.keepalive_interval_s <= sent <= 2.5 * 60 / config.keepalive_interval_s


def test_idle_link_with_different_keepalives_on_each_end_stays_up() -> None:
    relaxed = LinkConfig(keepalive_interval_s=1.0, dead_interval_s=4.0)
    eager = LinkConfig(keepalive_interval_s=0.2, dead_interval_s=0.6)
    pair = make_pair(relaxed, config_b=eager)
    up(pair)
    pair.run_for(20.0)
    assert kinds(pair.events_a) == kinds(pair.events_b) == [SessionStarted]


def test_closed_link_refuses_to_send_and_ignores_input() -> None:
    pair = make_pair()
    up(pair)
    pair.a.close()
    with pytest.raises(LocalProtocolError):
        pair.a.send_message(b"late")
    received_before = pair.a.statistics().wire_bytes_received
    pair.a.receive_data(b"\x00anything\x00", now=pair.now)
    assert pair.a.statistics().wire_bytes_received == received_before
    assert pair.a.data_to_send(now=pair.now) == []
    assert pair.a.statistics().state == "closed"


def test_a_link_closed_during_the_handshake_asks_for_no_wake_ups() -> None:
    link = new_link(seed=1)
    assert link.data_to_send(now=0.0)  # the first HELLO
    link.close()
    for now in (0.5, 5.0):
        link.handle_timeout(now=now)
        assert link.data_to_send(now=now) == []
        assert link.next_deadline() is None  # a driver following deadlines would spin


def _lossless_exchange(a: Link, b: Link, now: float, *, drain_b: bool) -> list[LinkEvent]:
    """One instant of a perfect wire: everything written is read at once."""
    got: list[LinkEvent] = []
    for _ in range(3):
        for src, dst in ((a, b), (b, a)):
            for chunk in src.data_to_send(now=now):
                dst.receive_data(chunk, now=now)
    drain(a)
    if drain_b:
        got = drain(b)
    return got


def test_a_slow_consumer_closes_the_window_and_nothing_is_lost() -> None:
    """Messages delivered but not taken count against the receive window."""
    config = LinkConfig(packet=True, window_bytes=8192)
    a, b = new_link(config, seed=1), new_link(config, seed=2)
    msgs = numbered(b"m", 200, size=500)
    send_all(a, msgs)
    now = 0.0
    for _ in range(400):  # b's consumer is asleep for four seconds
        now += 0.01
        _lossless_exchange(a, b, now, drain_b=False)
        for link in (a, b):
            deadline = link.next_deadline()
            if deadline is not None and deadline <= now:
                link.handle_timeout(now=now)
    st = b.statistics()
    assert st.state == "up"
    # b holds at most a window's worth (plus the message straddling its edge)
    assert st.payload_bytes_received <= config.window_bytes + 600
    assert a.busy
    got: list[LinkEvent] = []
    while len(received(got)) < len(msgs) and now < 60.0:
        now += 0.01
        got += _lossless_exchange(a, b, now, drain_b=True)
        for link in (a, b):
            deadline = link.next_deadline()
            if deadline is not None and deadline <= now:
                link.handle_timeout(now=now)
    assert received([e for e in got if isinstance(e, MessageReceived)]) == msgs


# --- outages -------------------------------------------------------------------------------


def test_outage_longer_than_the_dead_interval_is_link_down_then_up_without_loss() -> None:
    config = LinkConfig()
    pair = make_pair(config, SERIAL_115200)
    up(pair)
    to_b = numbered(b"ab", 60, size=700)
    to_a = numbered(b"ba", 30, size=300, channel=CONTROL)
    send_all(pair.a, to_b)
    send_all(pair.b, to_a)
    pair.run_for(1.0)  # the transfer is under way
    assert 0 < len(received(pair.events_b)) < len(to_b)
    start, end = pair.now, pair.now + 3.0
    pair.outage(start, end)
    at: dict[tuple[str, type], float] = {}
    pair.on_event = lambda side, ev: at.setdefault((side, type(ev)), pair.now)
    assert pair.run_until(
        lambda: (
            len(received(pair.events_b)) == len(to_b) and len(received(pair.events_a)) == len(to_a)
        ),
        timeout_s=60.0,
    )
    pair.run_for(1.0)
    assert_exactly_once_in_order(to_b, received(pair.events_b))
    assert_exactly_once_in_order(to_a, received(pair.events_a))
    for side, events, link in (("a", pair.events_a, pair.a), ("b", pair.events_b, pair.b)):
        assert kinds(events) == [SessionStarted, LinkDown, LinkUp]
        (down,) = of_type(events, LinkDown)
        (back,) = of_type(events, LinkUp)
        assert down.silent_s >= config.dead_interval_s - 1e-9
        assert (
            start + config.dead_interval_s - config.keepalive_interval_s <= at[side, LinkDown] < end
        )
        # back within a keepalive interval (plus a frame time) of the line's return
        assert end <= at[side, LinkUp] <= end + config.keepalive_interval_s + 0.2
        assert back.down_s >= at[side, LinkUp] - at[side, LinkDown]
        st = link.statistics()
        assert (st.link_downs, st.sessions, st.messages_discarded) == (1, 1, 0)


def test_link_down_is_reported_one_dead_interval_after_the_last_frame() -> None:
    config = LinkConfig()
    pair = make_pair(config)
    up(pair)
    pair.run_for(1.0)
    t0 = pair.now
    pair.outage(t0, t0 + 100.0)
    times: dict[str, float] = {}
    pair.on_event = lambda side, ev: (
        times.setdefault(side, pair.now) if isinstance(ev, LinkDown) else None
    )
    pair.run_until(lambda: len(times) == 2, timeout_s=5.0)
    for side in "ab":
        assert (
            t0 + config.dead_interval_s - config.keepalive_interval_s
            <= times[side]
            <= t0 + config.dead_interval_s + 0.01
        )


def test_outage_past_the_session_timeout_of_one_end_is_a_restart_for_the_other() -> None:
    """The end that times out tears its session down and comes back with a new
    epoch; the end that waited longer sees its peer restarted."""
    short = LinkConfig(session_timeout_s=4.0)
    long = LinkConfig(session_timeout_s=30.0)
    pair = make_pair(short, SERIAL_115200, config_b=long)
    up(pair)
    old_a = pair.a.statistics().local_epoch
    send_all(pair.a, numbered(b"lost?", 40, size=1000))
    send_all(pair.b, numbered(b"back", 40, size=1000))
    pair.run_for(0.5)
    pair.outage(pair.now, pair.now + 6.0)
    assert pair.run_until(
        lambda: (
            len(of_type(pair.events_a, SessionStarted)) == 2
            and len(of_type(pair.events_b, SessionStarted)) == 2
        ),
        timeout_s=20.0,
    )
    assert kinds(pair.events_a) == [SessionStarted, LinkDown, SessionLost, SessionStarted]
    assert kinds(pair.events_b) == [SessionStarted, LinkDown, PeerRestarted, SessionStarted]
    (lost,) = of_type(pair.events_a, SessionLost)
    (restarted,) = of_type(pair.events_b, PeerRestarted)
    new_a = pair.a.statistics().local_epoch
    assert new_a != old_a
    assert lost.peer_epoch == pair.b.statistics().local_epoch
    assert lost.discarded_messages > 0
    assert (restarted.old_epoch, restarted.new_epoch) == (old_a, new_a)
    assert restarted.discarded_messages > 0
    # the new session carries new traffic both ways
    fresh = numbered(b"fresh", 5)
    send_all(pair.a, fresh)
    send_all(pair.b, fresh)
    n_a, n_b = len(received(pair.events_a)), len(received(pair.events_b))
    for link in (pair.a, pair.b):  # the cheap count agrees with the statistics
        st = link.statistics()
        outstanding = st.messages_queued - st.messages_acked - st.messages_discarded
        assert link.messages_outstanding() == outstanding >= 5
    assert pair.run_until(
        lambda: len(received(pair.events_b)) == n_b + 5 and len(received(pair.events_a)) == n_a + 5,
        timeout_s=10.0,
    )
    assert received(pair.events_b)[n_b:] == fresh
    assert pair.run_until(lambda: not pair.a.busy and not pair.b.busy, timeout_s=10.0)
    # discarded messages are accounted for, not delivered late
    for link in (pair.a, pair.b):
        st = link.statistics()
        assert st.messages_queued == st.messages_acked + st.messages_discarded
        assert link.messages_outstanding() == 0


def test_outage_past_both_session_timeouts_starts_a_new_session_on_each_end() -> None:
    """Both ends tear down: neither has a session left to call restarted."""
    config = LinkConfig(session_timeout_s=4.0)
    pair = make_pair(config)
    up(pair)
    pair.outage(pair.now, pair.now + 8.0)
    assert pair.run_until(
        lambda: (
            len(of_type(pair.events_a, SessionStarted)) == 2
            and len(of_type(pair.events_b, SessionStarted)) == 2
        ),
        timeout_s=20.0,
    )
    for events in (pair.events_a, pair.events_b):
        assert kinds(events) == [SessionStarted, LinkDown, SessionLost, SessionStarted]
    sa = of_type(pair.events_a, SessionStarted)[1]
    sb = of_type(pair.events_b, SessionStarted)[1]
    assert (sa.local_epoch, sa.peer_epoch) == (sb.peer_epoch, sb.local_epoch)


# --- peer restart -----------------------------------------------------------------------------


@pytest.mark.parametrize("packet", [False, True], ids=["stream", "packet"])
def test_peer_restart_mid_transfer(packet: bool) -> None:
    config = LinkConfig(packet=packet)
    faults = LineFaults(latency_s=2e-3, bytes_per_s=92160.0, max_read=512)
    pair = make_pair(config, faults)
    up(pair)
    old_b = pair.b.statistics().local_epoch
    send_all(pair.a, numbered(b"a-old", 300, size=500))
    send_all(pair.b, numbered(b"b-old", 300, size=500, channel=CONTROL))
    assert pair.run_until(lambda: len(received(pair.events_a)) >= 20, timeout_s=10.0)
    assert pair.a.busy and pair.b.busy

    # t0: b's board resets and comes back with a fresh core
    t0 = pair.now
    mark_a, mark_b = len(pair.events_a), len(pair.events_b)
    reported: dict[type, float] = {}
    after_restart = numbered(b"a-new", 10)
    from_new_b = numbered(b"b-new", 10, channel=CONTROL)

    def on_event(side: str, event: LinkEvent) -> None:
        if side == "a" and isinstance(event, PeerRestarted | SessionStarted):
            reported.setdefault(type(event), pair.now)
            if isinstance(event, SessionStarted):
                send_all(pair.a, after_restart)

    pair.on_event = on_event
    new_b = new_link(config, seed=4242, now=t0)
    send_all(new_b, from_new_b)
    pair.replace("b", new_b)
    assert pair.run_until(
        lambda: (
            len(received(pair.events_b[mark_b:])) == len(after_restart)
            and len(received(pair.events_a[mark_a:])) >= len(from_new_b)
        ),
        timeout_s=10.0,
    )
    pair.run_for(1.0)

    new_a_events = pair.events_a[mark_a:]
    # the survivor reports the restart, then the new session, within the dead interval
    restart_at = new_a_events.index(next(e for e in new_a_events if isinstance(e, PeerRestarted)))
    (restarted,) = of_type(new_a_events, PeerRestarted)
    assert restarted.old_epoch == old_b
    assert restarted.new_epoch == new_b.statistics().local_epoch
    assert restarted.discarded_messages > 0
    assert isinstance(new_a_events[restart_at + 1], SessionStarted)
    assert reported[PeerRestarted] - t0 <= config.dead_interval_s
    assert reported[SessionStarted] - t0 <= config.dead_interval_s
    assert kinds(new_a_events) == [PeerRestarted, SessionStarted]
    # before the restart was seen, messages of the old b may still arrive (they were
    # on the line); after it, only the new b's, exactly once and in order
    after = received(new_a_events[restart_at:])
    assert after == from_new_b
    before = received(new_a_events[:restart_at])
    assert all(m.startswith(b"b-old") for _, m in before)
    # the new b saw a new session and only messages sent after it
    new_b_events = pair.events_b[mark_b:]
    assert kinds(new_b_events) == [SessionStarted]
    assert received(new_b_events) == after_restart
    # what the old a sent to the old b and was still on the line was stale for the new b
    assert new_b.statistics().drop_stale > 0
    st = pair.a.statistics()
    assert st.peer_restarts == 1
    assert st.messages_discarded == restarted.discarded_messages


def test_frames_of_the_old_session_are_stale_after_a_restart() -> None:
    config = LinkConfig(packet=True)
    pair = make_pair(config)
    up(pair)
    old_tag = tag_of(pair.a)
    pair.replace("b", new_link(config, seed=4242, now=pair.now))
    assert pair.run_until(lambda: bool(of_type(pair.events_a, PeerRestarted)), timeout_s=1.0)
    assert tag_of(pair.a) != old_tag
    stale_before = pair.a.statistics().drop_stale
    # a DATA frame of the old session, with a message at the old sequence start
    payload = encode_varint(5) + b"ghost"
    for seq in (0, 1, 1000):
        frame = data_frame(channel=0, tag=old_tag, seq=seq, window=16, payload=payload)
        pair.a.receive_data(frame, now=pair.now)
    assert received(drain(pair.a)) == []
    assert pair.a.statistics().drop_stale == stale_before + 3


RESTARTS = 100


def is_prefix(short: list[bytes], long: list[bytes]) -> bool:
    return long[: len(short)] == short


def run_restart(seed: int) -> None:
    """b restarts at a random moment of a transfer over a seeded lossy line."""
    rng = random.Random(seed)
    faults = _faults(rng)
    faults = dataclasses.replace(faults, max_read=max(64, faults.max_read))
    config = LinkConfig(packet=rng.random() < 0.4, max_frame_bytes=rng.choice((64, 256, 1500)))
    pair = LinkPair(new_link(config, seed=seed), new_link(config, seed=~seed), faults, rng)
    up(pair, timeout_s=60.0)
    old_to_b = numbered(b"a-old", 30, size=rng.choice((10, 300)), channel=Channel(seed % 2))
    old_to_a = numbered(b"b-old", 30, size=rng.choice((10, 300)), channel=Channel(seed // 2 % 2))
    send_all(pair.a, old_to_b)
    send_all(pair.b, old_to_a)
    pair.run_for(rng.uniform(0.0, 1.0))
    old_b_events = pair.events_b
    mark = len(pair.events_a)
    new_to_a = numbered(b"b-new", 5, channel=CONTROL) + numbered(b"b-new", 5)
    new_to_b = numbered(b"a-new", 5) + numbered(b"a-new", 5, channel=CONTROL)

    def on_event(side: str, event: LinkEvent) -> None:
        if side == "a" and isinstance(event, SessionStarted):
            send_all(pair.a, new_to_b)

    pair.on_event = on_event
    new_b = new_link(config, seed=seed + 7919, now=pair.now)
    send_all(new_b, new_to_a)
    pair.replace("b", new_b)
    pair.events_b = []
    assert pair.run_until(
        lambda: (
            len(received(pair.events_b)) >= len(new_to_b)
            and len(received(pair.events_a[mark:])) >= len(new_to_a)
            and not pair.a.busy
            and not new_b.busy
        ),
        timeout_s=300.0,
    ), f"stalled at t={pair.now:.1f}s"
    pair.run_for(0.5)
    events = pair.events_a[mark:]
    restarted = [i for i, e in enumerate(events) if isinstance(e, PeerRestarted)]
    assert len(restarted) == 1, kinds(events)
    assert isinstance(events[restarted[0] + 1], SessionStarted)
    assert_exactly_once_in_order(new_to_a, received(events[restarted[0] :]))
    assert_exactly_once_in_order(new_to_b, received(pair.events_b))
    # before the restart was seen: a part of the old b's messages, no more, no less
    got_old = received(pair.events_a[:mark] + events[: restarted[0]])
    got_by_old_b = received(old_b_events)
    for channel in Channel:
        assert is_prefix(on_channel(got_old, channel), on_channel(old_to_a, channel))
        assert is_prefix(on_channel(got_by_old_b, channel), on_channel(old_to_b, channel))
    assert kinds(pair.events_b)[0] is SessionStarted
    assert not of_type(pair.events_b, PeerRestarted)


@pytest.mark.parametrize("first", range(0, RESTARTS, 25), ids=lambda s: f"seeds{s}+")
def test_seeded_restarts_deliver_nothing_of_the_old_incarnation_afterwards(first: int) -> None:
    for seed in range(first, first + 25):
        try:
            run_restart(seed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc


def test_restart_before_any_session_is_just_a_session() -> None:
    config = LinkConfig()
    pair = make_pair(config)
    pair.replace("b", new_link(config, seed=99))
    up(pair)
    assert kinds(pair.events_a) == [SessionStarted]
    assert not of_type(pair.events_b, PeerRestarted)


# --- counters --------------------------------------------------------------------------------


def test_statistics_count_drops_by_reason() -> None:
    config = LinkConfig(packet=True, max_frame_bytes=256)
    pair = make_pair(config)
    up(pair)
    link = pair.a
    now = pair.now
    good = data_frame(tag=tag_of(link), window=16, payload=b"")
    base = link.statistics()

    damaged = bytearray(good)
    damaged[3] ^= 0x40
    link.receive_data(bytes(damaged), now=now)
    link.receive_data(bytes(300), now=now)  # longer than max_frame_bytes
    bad_type = bytes([0x7F]) + bytes(20)
    link.receive_data(seal(bad_type), now=now)
    link.receive_data(good, now=now)  # empty payload: nothing new
    st = link.statistics()
    assert st.drop_bad_crc == base.drop_bad_crc + 1
    assert st.drop_oversize == base.drop_oversize + 1
    assert st.drop_malformed == base.drop_malformed + 1
    assert st.drop_duplicate == base.drop_duplicate + 1
    assert st.drops["bad_crc"] == st.drop_bad_crc
    assert decode(good)  # the reference frame itself is fine


def test_stream_statistics_count_noise() -> None:
    pair = make_pair(LinkConfig(max_frame_bytes=256))
    up(pair)
    link = pair.a
    base = link.statistics()
    link.receive_data(b"\x00\x05ab\x00", now=pair.now)  # not COBS
    link.receive_data(b"\x00" + bytes([0x41]) * 1000 + b"\x00", now=pair.now)  # oversize chunk
    link.receive_data(encode_frames([b"\x01\x02\x03\x04\x05\x06"]), now=pair.now)  # bad CRC
    st = link.statistics()
    assert st.drop_malformed == base.drop_malformed + 1
    assert st.drop_oversize == base.drop_oversize + 1
    assert st.drop_bad_crc == base.drop_bad_crc + 1
    assert drain(link) == []


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"max_frame_bytes": 63},
        {"max_frame_bytes": (1 << 24) + 1},
        {"window_bytes": 1023},
        {"window_bytes": 0xFFFF * 256 + 1},
        {"max_message_bytes": 0},
        {"keepalive_interval_s": 0.0},
        {"keepalive_interval_s": 2.0, "dead_interval_s": 1.5},
        {"dead_interval_s": 20.0, "session_timeout_s": 15.0},
        {"rto_min_s": 0.0},
        {"rto_initial_s": 3.0, "rto_max_s": 2.0},
        {"keepalive_interval_s": 70.0, "dead_interval_s": 80.0, "session_timeout_s": 90.0},
        # each of these stalled the sender or spun a driver
        {"min_segment_bytes": 0},
        {"hello_interval_s": 0.0},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_config_refuses_values_the_link_cannot_work_with(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        LinkConfig(**fields)  # type: ignore[arg-type]


def test_a_lost_transport_takes_the_link_down_at_once_and_the_session_resumes() -> None:
    pair = make_pair(seed=7)
    up(pair)
    sent = numbered(b"a", 50)
    send_all(pair.a, sent)
    pair.run_for(0.01)  # some of it in flight
    lost_at = pair.now
    pair.outage(lost_at, lost_at + 3.0)  # the port is away for 3 s
    pair.a.transport_lost(now=lost_at)
    pair.step()
    downs = of_type(pair.events_a, LinkDown)
    # at once: what it says is the silence so far, short of the dead interval
    assert len(downs) == 1 and downs[0].silent_s < LinkConfig().dead_interval_s
    assert pair.run_until(lambda: bool(of_type(pair.events_a, LinkUp)), timeout_s=10.0)
    assert pair.run_until(lambda: len(received(pair.events_b)) == len(sent), timeout_s=10.0)
    assert_exactly_once_in_order(sent, received(pair.events_b))
    assert PeerRestarted not in kinds(pair.events_a) + kinds(pair.events_b)
    assert SessionLost not in kinds(pair.events_a) + kinds(pair.events_b)


def test_a_lost_transport_while_down_or_handshaking_changes_no_state() -> None:
    link = new_link(seed=1)
    link.transport_lost(now=0.5)  # handshaking: nothing to report
    assert link.next_event() is None
    assert link.statistics().state == "handshake"


def test_the_deframer_drops_a_frame_cut_by_a_lost_stream() -> None:
    frame = data_frame(payload=b"whole")
    chunk = encode_frames([frame])
    deframer = StreamDeframer(1024)
    assert deframer.feed(chunk[: len(chunk) // 2]) == []
    held = deframer.buffered_bytes
    deframer.reset()
    assert held > 0 and deframer.stats.discarded_bytes == held
    assert deframer.feed(chunk) == [frame]
