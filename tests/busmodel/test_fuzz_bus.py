"""The bus and the connector, end to end, under arbitrary sequences (a hypothesis state machine).

A host ``Bus`` and a board ``Connector`` with the standard devices run over the in-memory
pipe of ``busharness``.  The machine mixes what a host may do (open, call, attach, detach,
close), what a link may do (go down and up, lose the session, see the board restart) and
what a hostile peer may send to either side (valid messages with arbitrary ids, mutated
messages, random bytes).  After every step: no exception escaped a core for anything the
peer sent, and what each side holds stays within its limits.  ``IRA_FUZZ_EXAMPLES`` scales
the number of runs (``make fuzz``).
"""

from __future__ import annotations

import contextlib
import os

import pytest
from busharness import Pair
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ira.busmodel import Bus, Connector
from ira.busmodel.config import ConnectorConfig, ContainerLimits
from ira.busmodel.devices import BoardInfo, CountingDevice, Echo, RingLoopback
from ira.busmodel.events import DeviceOpened, WindowAttached
from ira.busmodel.window import Window
from ira.errors import LocalProtocolError
from ira.link.events import Channel, MessageReceived
from ira.wire import bus

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz

RUNS = max(40, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")) // 100)
LIMITS = ContainerLimits(max_handles=8, max_windows=4, max_total_window_bytes=1 << 21)
EXAMPLES = [d.example for d in bus.MESSAGES]
#: the most a host may have pending: what the machine can issue in one run, with margin
MAX_PENDING = 200

ids = st.one_of(st.integers(0, 8), st.integers(0, 0xFFFFFFFF))
hostile_messages = st.one_of(
    st.binary(max_size=48),
    st.builds(
        lambda data, at, byte: bytes(data[:at]) + bytes([byte]) + bytes(data[at + 1 :]),
        st.sampled_from(EXAMPLES).map(bus.encode),
        st.integers(0, 40),
        st.integers(0, 255),
    ),
    st.builds(bus.DevOpen, ids, ids, st.integers(0, 3)).map(bus.encode),
    st.builds(
        bus.DevCall, ids, ids, st.integers(0, 3), st.sampled_from([0, 1]), st.binary(max_size=16)
    ).map(bus.encode),
    st.builds(bus.DevClose, ids).map(bus.encode),
    st.builds(
        bus.ShmAttach,
        ids,
        ids,
        st.integers(0, 2),
        ids,
        st.integers(0, 9000),
        st.integers(0, 4096),
        st.integers(0, 4096),
        st.sampled_from([0, 1]),
    ).map(bus.encode),
    st.builds(bus.ShmDetach, ids, ids, ids).map(bus.encode),
    st.builds(
        bus.WindowUpdate,
        ids,
        st.lists(
            st.builds(bus.Span, st.integers(0, 5000), st.binary(min_size=1, max_size=8)),
            min_size=1,
            max_size=3,
        ),
        st.booleans(),
    ).map(bus.encode),
    st.builds(bus.SignalNotify, ids).map(bus.encode),
    st.builds(bus.SignalState, ids, st.booleans(), ids).map(bus.encode),
    st.builds(bus.DevAdd, ids, st.integers(0, 3), st.sampled_from(["echo", "x"])).map(bus.encode),
    st.builds(bus.DevDrop, ids).map(bus.encode),
    st.sampled_from(EXAMPLES).map(bus.encode),
)


def _board() -> Connector:
    connector = Connector(ConnectorConfig(limits=LIMITS))
    info = BoardInfo("fuzz", started_at=0.0)
    for device in (info, Echo(), CountingDevice(), RingLoopback()):
        connector.add_device(device, now=0.0)
    return connector


class BusMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(_board(), Bus(), interleave="random", seed=1)
        self.pair.start()
        self.windows: list[Window] = []
        self.seen_events = 0

    # -- what a host does ---------------------------------------------------------

    def _handles(self) -> list[int]:
        opened = [ev.handle for ev in self.pair.events(DeviceOpened)]
        return [h for h in opened if self.pair.host.is_open(h)]

    @precondition(lambda self: self.pair.host.ready)
    @rule(which=st.integers(0, 3), version=st.sampled_from([None, 1, 2]))
    def open(self, which: int, version: int | None) -> None:
        devices = self.pair.host.devices()
        if devices:
            device = devices[which % len(devices)]
            self.pair.host.open(device.device_id, now=self.pair.now, version=version, timeout_s=1.0)

    @rule(
        pick=st.integers(0, 20),
        func=st.integers(0, 3),
        payload=st.binary(max_size=32),
        no_reply=st.booleans(),
        ordered=st.booleans(),
    )
    def call(self, pick: int, func: int, payload: bytes, no_reply: bool, ordered: bool) -> None:
        handles = self._handles()
        if handles:
            with contextlib.suppress(LocalProtocolError):  # not registered: refused locally
                self.pair.host.call(
                    handles[pick % len(handles)],
                    func,
                    payload,
                    now=self.pair.now,
                    timeout_s=1.0,
                    no_reply=no_reply,
                    ordered=ordered,
                )

    @rule(
        pick=st.integers(0, 20),
        shm=st.integers(0, 2),
        size=st.sampled_from([8, 64, 4096]),
        board_writes=st.booleans(),
        signal=st.booleans(),
    )
    def attach(self, pick: int, shm: int, size: int, board_writes: bool, signal: bool) -> None:
        handles = self._handles()
        if handles:
            window = self.pair.host.create_window(
                size, device_offset=0, device_length=size if board_writes else 0
            )
            self.pair.host.attach(
                handles[pick % len(handles)],
                shm,
                window,
                now=self.pair.now,
                signal=signal,
                timeout_s=1.0,
            )
            self.windows.append(window)

    @rule(pick=st.integers(0, 20))
    def detach(self, pick: int) -> None:
        attached = {ev.window_id for ev in self.pair.events(WindowAttached)}
        windows = [w for w in self.windows if w.window_id in attached]
        if windows:
            with contextlib.suppress(LocalProtocolError):  # detached meanwhile
                self.pair.host.detach(
                    windows[pick % len(windows)], now=self.pair.now, timeout_s=1.0
                )

    @rule(pick=st.integers(0, 20))
    def close(self, pick: int) -> None:
        handles = self._handles()
        if handles:
            self.pair.host.close(handles[pick % len(handles)])

    # -- what the link does -------------------------------------------------------

    @rule(n=st.integers(1, 30))
    def deliver(self, n: int) -> None:
        for _ in range(n):
            if not self.pair.step():
                break

    @rule(dt=st.sampled_from([0.001, 0.1, 0.6, 2.0]))
    def advance(self, dt: float) -> None:
        self.pair.advance(dt)

    @rule()
    def link_down_and_up(self) -> None:
        self.pair.link_down()
        self.pair.link_up()

    @rule()
    def session_lost(self) -> None:
        self.pair.lose_session()
        self.pair.start()

    @rule()
    def board_restarts(self) -> None:
        self.pair.restart_board(_board())

    # -- what a hostile peer sends ------------------------------------------------

    @rule(data=hostile_messages, bulk=st.booleans())
    def hostile_to_board(self, data: bytes, bulk: bool) -> None:
        channel = Channel.BULK if bulk else Channel.CONTROL
        self.pair.board.handle_link_event(MessageReceived(channel, data), now=self.pair.now)
        self.pair.collect()

    @rule(data=hostile_messages, bulk=st.booleans())
    def hostile_to_host(self, data: bytes, bulk: bool) -> None:
        channel = Channel.BULK if bulk else Channel.CONTROL
        self.pair.host.handle_link_event(MessageReceived(channel, data), now=self.pair.now)
        self.pair.collect()

    # -- what must hold -----------------------------------------------------------

    @invariant()
    def the_board_holds_no_more_than_its_limits(self) -> None:
        stats = self.pair.board.statistics()
        assert stats.handles <= LIMITS.max_handles
        assert stats.windows <= LIMITS.max_windows

    @invariant()
    def the_host_holds_a_bounded_state(self) -> None:
        stats = self.pair.host.statistics()
        assert stats.pending_requests <= MAX_PENDING
        assert stats.devices <= 4 + 64  # the board's four, and what a hostile peer may add
        assert len(self.pair.to_board) + len(self.pair.to_host) <= 10_000


BusMachine.TestCase.settings = settings(
    max_examples=RUNS,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_bus_and_connector_end_to_end = BusMachine.TestCase
