"""shm-signal over messages: coalescing, self-delivery, pending after dirty, no loss."""

from __future__ import annotations

import struct

from busharness import Interleave, Pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.busmodel import Connector, Signal, SignalReceived, Window, WindowAttached
from ira.busmodel.devices import CountingDevice
from ira.busmodel.devices.counting import CounterShm
from ira.wire.bus import Message, SignalNotify, SignalState


class Wire:
    """Two ``Signal`` ends joined by in-order queues, delivered by hand."""

    def __init__(self) -> None:
        self.a, self.b = Signal(7), Signal(7)
        self.to_a: list[Message] = []
        self.to_b: list[Message] = []
        self.a.connect(self.to_b.append)
        self.b.connect(self.to_a.append)
        self.b_calls = 0
        self.b.handler = self._count

    def _count(self) -> None:
        self.b_calls += 1

    def deliver(self) -> None:
        while self.to_a or self.to_b:
            for queue, end in ((self.to_b, self.b), (self.to_a, self.a)):
                while queue:
                    msg = queue.pop(0)
                    if isinstance(msg, SignalNotify):
                        end.received_signal()
                    else:
                        assert isinstance(msg, SignalState)
                        end.received_state(msg)


def test_inject_sends_one_signal_until_the_receiver_drains() -> None:
    w = Wire()
    assert w.a.notify() is True
    assert w.a.peer_pending
    assert [w.a.notify() for _ in range(5)] == [False] * 5  # coalesced
    assert w.a.peer_dirty
    w.deliver()
    # One SIGNAL, drained; its SIGNAL_STATE let the coalesced events go as one more.
    assert w.a.signals_sent == 2 and w.b.signals_received == 2
    assert w.b_calls == 2
    assert not (w.a.peer_pending or w.a.peer_dirty or w.b.pending or w.b.dirty)


def test_pending_is_cleared_only_after_dirty_is_drained() -> None:
    w = Wire()
    observed: list[tuple[bool, bool]] = []

    def handler() -> None:
        observed.append((w.b.pending, w.b.dirty))

    w.b.handler = handler
    w.a.notify()
    w.deliver()
    assert observed == [(True, False)]
    assert not w.b.pending


def test_disabled_receiver_holds_the_signal_and_enable_delivers_it() -> None:
    w = Wire()
    w.b.disable()
    for _ in range(100):
        w.a.notify()
    w.deliver()
    assert w.b_calls == 0 and w.b.pending and w.b.dirty
    assert w.a.signals_sent == 1
    w.b.enable()  # self-delivery
    assert w.b_calls == 1 and not w.b.pending
    w.deliver()
    # The 99 events coalesced while pending go out as one SIGNAL after SIGNAL_STATE.
    assert w.b_calls == 2 and w.a.signals_sent == 2


def test_napi_style_disable_in_handler_and_enable_later() -> None:
    w = Wire()

    def napi() -> None:
        w.b_calls += 1
        w.b.disable()

    w.b.handler = napi
    w.a.notify()
    w.deliver()
    assert w.b_calls == 1 and not w.b.enabled and not w.b.pending
    assert not w.a.peer_enabled  # learnt from SIGNAL_STATE
    for _ in range(50):
        assert w.a.notify() is False
    w.deliver()
    assert w.a.signals_sent == 1
    w.b.enable()  # tells the sender, which sends one SIGNAL for the 50 events
    w.deliver()
    assert w.a.signals_sent == 2 and w.b_calls == 2


def test_enable_inside_the_handler_does_not_recurse() -> None:
    w = Wire()
    depth: list[int] = []

    def handler() -> None:
        depth.append(len(depth))
        w.b.enable()

    w.b.handler = handler
    w.a.notify()
    w.deliver()
    assert depth == [0]


def test_a_disconnected_signal_sends_nothing() -> None:
    w = Wire()
    w.a.disconnect()
    assert w.a.notify() is False
    assert w.to_b == []


def _events_pair(interleave: Interleave = "fifo") -> tuple[Pair, CountingDevice, Window]:
    """A counting device whose EVENTS window (with a signal) is attached by the host."""
    counter = CountingDevice()
    board = Connector()
    board.add_device(counter, now=0.0)
    pair = Pair(board, interleave=interleave)
    pair.start()
    handle = pair.open(1)
    window = pair.host.create_window(8, device_length=8)
    ev = pair.outcome(pair.host.attach(handle, CounterShm.EVENTS, window, now=0.0, signal=True))
    assert isinstance(ev, WindowAttached) and ev.signal_id is not None
    return pair, counter, window


def _signals_in_flight(pair: Pair) -> int:
    return pair.board.statistics().sent.get(SignalNotify, 0) - pair.to_host.tags["SIGNAL"]


def test_ten_thousand_events_to_a_busy_receiver_cost_few_signals() -> None:
    pair, counter, window = _events_pair()
    signal = window.signal
    assert signal is not None
    observed: list[int] = []
    signal.handler = lambda: observed.append(struct.unpack("<Q", window.read(0, 8))[0])
    total = 10_000
    for i in range(total):
        counter.post()
        assert _signals_in_flight(pair) <= 1
        if i % 100 == 99:  # the busy host gets round to its messages now and then
            pair.pump()
    pair.pump()
    signals = pair.board.statistics().sent[SignalNotify]
    assert counter.events == total
    assert signals * 50 <= total, f"{signals} SIGNALs for {total} events"
    # None lost: the last notification saw the last event.
    assert observed[-1] == total
    assert observed == sorted(observed)
    assert not (signal.pending or signal.dirty)
    assert len(pair.events(SignalReceived)) == 0  # a handler of our own replaced the event


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("post"), st.integers(1, 30)),
            st.tuples(st.just("deliver"), st.integers(1, 10)),
            st.tuples(st.just("disable")),
            st.tuples(st.just("enable")),
        ),
        max_size=60,
    ),
    st.sampled_from(["fifo", "control-first", "random"]),
)
def test_no_event_is_lost_and_one_signal_at_most_in_flight(
    script: list[tuple[object, ...]], interleave: Interleave
) -> None:
    pair, counter, window = _events_pair(interleave)
    signal = window.signal
    assert signal is not None
    observed: list[int] = []
    signal.handler = lambda: observed.append(struct.unpack("<Q", window.read(0, 8))[0])
    for op in script:
        match op:
            case ("post", int(n)):
                counter.post(n)
            case ("deliver", int(n)):
                for _ in range(n):
                    pair.step()
            case ("disable",):
                signal.disable()
            case ("enable",):
                signal.enable()
        assert _signals_in_flight(pair) <= 1
    signal.enable()
    pair.pump()
    if counter.events:
        assert observed and observed[-1] == counter.events
    assert not (signal.pending or signal.dirty)
