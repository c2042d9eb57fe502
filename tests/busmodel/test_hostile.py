"""A hostile peer: well-formed messages naming bad ids, handles, windows, offsets and
sizes, and random bytes.  Nothing crashes, refusals are answered and counted, memory
stays bounded, and another container is untouched."""

from __future__ import annotations

import random

from busharness import Pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.busmodel import (
    Bus,
    BusConfig,
    Connector,
    ConnectorConfig,
    ContainerLimits,
    DeviceAdded,
    WindowAttached,
)
from ira.busmodel.counters import Refusal
from ira.busmodel.devices import CountingDevice, Echo, RingLoopback
from ira.busmodel.devices.counting import CounterFunc, CounterShm
from ira.link.events import Channel, MessageReceived, SessionStarted
from ira.wire.bus import (
    Attribute,
    BusHello,
    BusSynced,
    BusWelcome,
    DevAdd,
    DevCall,
    DevCallReply,
    DevClose,
    DevDrop,
    DevOpen,
    DevOpenReply,
    Message,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    SignalNotify,
    SignalState,
    Span,
    WindowUpdate,
    decode,
    encode,
)

LIMITS = ContainerLimits(
    max_devices=8, max_handles=8, max_windows=4, max_window_bytes=4096,
    max_total_window_bytes=8192,
)  # fmt: skip
u32 = st.integers(0, 0xFFFFFFFF)


class Victim:
    """A registered board with devices, an open handle and an attached window."""

    def __init__(self, seed: int) -> None:
        self.counter = CountingDevice()
        board = Connector(ConnectorConfig(limits=LIMITS, seed=seed))
        for device in (Echo(), self.counter, RingLoopback()):
            board.add_device(device, now=0.0)
        self.pair = Pair(board)
        self.pair.start()
        self.handle = self.pair.open(2)
        self.window = self.pair.host.create_window(64, device_length=64)
        ev = self.pair.outcome(
            self.pair.host.attach(self.handle, CounterShm.EVENTS, self.window, now=0.0, signal=True)
        )
        assert isinstance(ev, WindowAttached) and ev.signal_id is not None
        self.signal_id = ev.signal_id

    @property
    def board(self) -> Connector:
        return self.pair.board

    def known(self) -> dict[str, list[int]]:
        return {
            "device": [1, 2, 3, 0, 4],
            "handle": [self.handle, 0],
            "window": [self.window.window_id, 0, 2],
            "signal": [self.signal_id, 0],
        }


def host_messages(known: dict[str, list[int]]) -> st.SearchStrategy[Message]:
    """What a hostile host can send: well formed, with ids near and far from real ones."""

    def ids(kind: str) -> st.SearchStrategy[int]:
        return st.one_of(st.sampled_from(known[kind]), u32)

    small = st.integers(0, 8)
    sizes = st.one_of(st.integers(0, 5000), u32)
    return st.one_of(
        st.builds(BusHello, st.just(1), st.integers(1, 3)),
        st.builds(DevOpen, u32, ids("device"), st.one_of(small, u32)),
        st.builds(DevClose, ids("handle")),
        st.builds(DevCall, u32, ids("handle"), st.one_of(small, u32), st.sampled_from([0, 1]),
                  st.binary(max_size=64)),
        st.builds(ShmAttach, u32, ids("handle"), small, ids("window"), sizes, sizes, sizes,
                  st.sampled_from([0, 1])),
        st.builds(ShmDetach, u32, ids("handle"), ids("window")),
        st.builds(
            WindowUpdate,
            ids("window"),
            st.lists(st.builds(Span, st.one_of(st.integers(0, 80), u32),
                               st.binary(min_size=1, max_size=32)), min_size=1, max_size=4)
            .map(tuple),
        ),
        st.builds(SignalNotify, ids("signal")),
        st.builds(SignalState, ids("signal"), st.booleans(), u32),
        # Messages only a board may send.
        st.builds(DevAdd, u32, u32, st.just("evil"), st.just(())),
        st.builds(DevDrop, ids("device")),
        st.builds(DevCallReply, u32, st.integers(-100, 100), st.binary(max_size=8)),
    )  # fmt: skip


def random_host_message(rng: random.Random, known: dict[str, list[int]]) -> Message:
    """The long run's generator: like ``host_messages`` but from a seeded ``Random``."""

    def pick(kind: str) -> int:
        return rng.choice(known[kind]) if rng.random() < 0.5 else rng.getrandbits(32)

    def size() -> int:
        return rng.randrange(0, 5000) if rng.random() < 0.7 else rng.getrandbits(32)

    call_id = rng.getrandbits(32)
    choices: list[Message] = [
        DevOpen(call_id, pick("device"), rng.randrange(0, 3)),
        DevClose(pick("handle")),
        DevCall(call_id, pick("handle"), rng.randrange(0, 4), rng.randrange(0, 2),
                rng.randbytes(rng.randrange(0, 32))),
        ShmAttach(call_id, pick("handle"), rng.randrange(0, 3), pick("window"), size(), size(),
                  size(), rng.randrange(0, 2)),
        ShmDetach(call_id, pick("handle"), pick("window")),
        WindowUpdate(pick("window"), (Span(size(), rng.randbytes(rng.randrange(1, 16))),)),
        SignalNotify(pick("signal")),
        SignalState(pick("signal"), rng.random() < 0.5, rng.getrandbits(32)),
        DevDrop(pick("device")),
    ]  # fmt: skip
    return rng.choice(choices)


def feed(board: Connector, data: bytes, channel: Channel) -> list[bytes]:
    board.handle_link_event(MessageReceived(channel, data), now=0.0)
    return [reply for _, reply in board.messages_to_send()]


def check_bounded(board: Connector) -> None:
    stats = board.statistics()
    assert stats.handles <= LIMITS.max_handles
    assert stats.windows <= LIMITS.max_windows
    assert stats.window_bytes <= LIMITS.max_total_window_bytes
    assert stats.devices == 3


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_hostile_host_messages(data: st.DataObject) -> None:
    victim, bystander = Victim(seed=1), Victim(seed=2)
    before = bystander.board.statistics()
    refused_before = victim.board.statistics().refused_total
    messages = data.draw(st.lists(host_messages(victim.known()), min_size=1, max_size=40))
    for msg in messages:
        channel = data.draw(st.sampled_from(list(Channel)))
        replies = feed(victim.board, encode(msg), channel)
        for reply in replies:
            decode(reply)  # everything the board says is well formed
        if isinstance(msg, DevOpen | ShmAttach | ShmDetach) or (
            isinstance(msg, DevCall) and not msg.flags
        ):
            assert any(decode(r).call_id == msg.call_id for r in replies)  # type: ignore[union-attr]
        check_bounded(victim.board)
    assert victim.board.statistics().refused_total >= refused_before
    # The other container saw nothing.
    assert bystander.board.statistics() == before


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=80), st.sampled_from(list(Channel)))
def test_random_bytes_to_the_board(data: bytes, channel: Channel) -> None:
    victim = Victim(seed=3)
    for reply in feed(victim.board, data, channel):
        decode(reply)
    check_bounded(victim.board)


def test_a_long_hostile_run_raises_counters_and_stays_bounded() -> None:
    victim, bystander = Victim(seed=4), Victim(seed=5)
    before = bystander.board.statistics()
    rng = random.Random(1234)
    refusals = []
    for i in range(20_000):
        if rng.random() < 0.2:
            payload = rng.randbytes(rng.randrange(0, 40))
        else:
            payload = encode(random_host_message(rng, victim.known()))
        feed(victim.board, payload, rng.choice(list(Channel)))
        check_bounded(victim.board)
        if i % 2000 == 0:
            refusals.append(victim.board.statistics().refused_total)
    stats = victim.board.statistics()
    assert refusals == sorted(refusals) and stats.refused_total > refusals[0]
    assert stats.refused[Refusal.MALFORMED] > 0 and stats.refused[Refusal.UNKNOWN_HANDLE] > 0
    assert bystander.board.statistics() == before
    # The bystander still works.
    ev = bystander.pair.call(bystander.handle, CounterFunc.INCREMENT)
    assert type(ev).__name__ == "CallCompleted"


def test_a_handle_from_another_container_is_refused() -> None:
    a, b = Victim(seed=6), Victim(seed=7)
    assert a.handle != b.handle
    [reply] = feed(a.board, encode(DevCall(5, b.handle, 0, 0, b"")), Channel.CONTROL)
    assert decode(reply) == DevCallReply(5, -9, b"")  # EBADF
    assert b.counter.count == 0 and a.counter.count == 0
    assert a.board.statistics().refused[Refusal.UNKNOWN_HANDLE] == 1


def test_window_update_out_of_bounds_or_in_the_boards_range_is_refused() -> None:
    victim = Victim(seed=8)
    window_id = victim.window.window_id
    for spans, reason in (
        ((Span(60, b"12345"),), Refusal.OUT_OF_BOUNDS),
        ((Span(0, b"x"),), Refusal.WRONG_WRITER),  # the board writes all of it
        ((Span(0xFFFFFFF0, b"x" * 32),), Refusal.OUT_OF_BOUNDS),
    ):
        feed(victim.board, encode(WindowUpdate(window_id, spans)), Channel.BULK)
        assert victim.board.statistics().refused[reason] >= 1


# ---------------------------------------------------------------------------
# A hostile board
# ---------------------------------------------------------------------------


def board_messages() -> st.SearchStrategy[Message]:
    ids = st.one_of(st.integers(0, 12), u32)
    return st.one_of(
        st.builds(BusWelcome, st.integers(-100, 1), st.integers(0, 3), u32, st.integers(0, 9),
                  st.integers(0, 9), u32, u32),
        st.builds(BusSynced, u32),
        st.builds(DevAdd, ids, u32, st.sampled_from(["echo", "x", "counter"]),
                  st.just((Attribute("k", "v"),))),
        st.builds(DevDrop, ids),
        st.builds(DevOpenReply, ids, st.integers(-5, 5), u32),
        st.builds(DevCallReply, ids, st.integers(-5, 5), st.binary(max_size=8)),
        st.builds(ShmAttachReply, ids, st.integers(-5, 5), u32),
        st.builds(ShmDetachReply, ids, st.integers(-5, 5)),
        st.builds(WindowUpdate, ids, st.lists(st.builds(Span, st.integers(0, 100),
                  st.binary(min_size=1, max_size=8)), min_size=1, max_size=3).map(tuple)),
        st.builds(SignalNotify, ids),
        st.builds(SignalState, ids, st.booleans(), u32),
        st.builds(DevOpen, ids, ids, ids),
    )  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.one_of(board_messages().map(encode), st.binary(max_size=40)), max_size=60))
def test_hostile_board(payloads: list[bytes]) -> None:
    host = Bus(BusConfig(max_devices=5))
    host.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    for payload in payloads:
        host.handle_link_event(MessageReceived(Channel.CONTROL, payload), now=0.0)
        host.messages_to_send()
        while (ev := host.next_event()) is not None:
            if isinstance(ev, DeviceAdded):
                # Poke the device: the requests must not crash either.
                host.open(ev.device.device_id, now=0.0)
        assert len(host.devices()) <= 5
        host.handle_timeout(now=100.0)
    stats = host.statistics()
    assert stats.devices <= 5
