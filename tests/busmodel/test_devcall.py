"""DEVOPEN/DEVCALL: results, errors, exactly once, timeouts, session resets."""

from __future__ import annotations

import json
import struct

import pytest
from busharness import Pair

from ira.busmodel import (
    Bus,
    BusConfig,
    CallCompleted,
    CallFailed,
    Connector,
    Device,
    DeviceOpened,
    Handle,
)
from ira.busmodel.counters import Refusal
from ira.busmodel.devices import BoardInfo, CountingDevice, Echo
from ira.busmodel.devices.counting import CounterFunc
from ira.errors import DevcallError, DevcallTimeout, LocalProtocolError, SessionReset
from ira.link.events import Channel, MessageReceived
from ira.wire.bus import DevCall, DevCallReply, DevOpen, DevOpenReply, Status, decode, encode


def make_pair(*devices: Device, **kwargs: object) -> Pair:
    board = Connector()
    for device in devices:
        board.add_device(device, now=0.0)
    pair = Pair(board, **kwargs)  # type: ignore[arg-type]
    pair.start()
    pair.take_events()
    return pair


def test_echo_round_trip_reports_the_round_trip_time() -> None:
    pair = make_pair(Echo())
    handle = pair.open(1)
    call_id = pair.host.call(handle, 0, b"hello", now=pair.now)
    pair.collect()
    pair.now = 0.25
    ev = pair.outcome(call_id)
    assert ev == CallCompleted(call_id, 1, 0, Status.OK, b"hello", 0.25)


def test_negative_statuses_never_crash() -> None:
    class Fussy(Device):
        type = "fussy"

        def call(
            self, handle: Handle, func: int, payload: bytes, *, now: float
        ) -> tuple[int, bytes]:
            if func == 1:
                raise DevcallError(Status.EINVAL, "bad argument")
            return -5, b"ignored detail"

    pair = make_pair(Echo(), Fussy())
    echo = pair.open(1)
    unknown_func = pair.call(echo, 77)
    assert isinstance(unknown_func, CallFailed)
    assert isinstance(unknown_func.error, DevcallError)
    assert unknown_func.error.status == Status.ENOSYS
    assert "ENOSYS" in str(unknown_func.error)
    fussy = pair.open(2)
    for func, status in ((1, Status.EINVAL), (2, -5)):
        ev = pair.call(fussy, func)
        assert isinstance(ev, CallFailed) and isinstance(ev.error, DevcallError)
        assert ev.error.status == status
    # Opens that cannot succeed.
    bad_version = pair.outcome(pair.host.open(1, version=9, now=pair.now))
    assert isinstance(bad_version, CallFailed)
    assert isinstance(bad_version.error, DevcallError)
    assert bad_version.error.status == Status.EPROTONOSUPPORT


def test_unknown_device_and_handle_on_the_wire() -> None:
    pair = make_pair(Echo())
    board = pair.board
    for msg in (DevOpen(1, 42, 1), DevCall(2, 0xDEAD, 0, 0, b"x")):
        board.handle_link_event(MessageReceived(Channel.CONTROL, encode(msg)), now=0.0)
    replies = [decode(data) for _, data in board.messages_to_send()]
    assert replies == [DevOpenReply(1, Status.ENODEV, 0), DevCallReply(2, Status.EBADF, b"")]
    stats = board.statistics()
    assert stats.refused[Refusal.UNKNOWN_DEVICE] == 1
    assert stats.refused[Refusal.UNKNOWN_HANDLE] == 1


def test_ten_thousand_calls_run_exactly_once() -> None:
    counter = CountingDevice()
    pair = make_pair(counter, interleave="random", seed=7)
    handle = pair.open(1)
    call_ids = set()
    for i in range(10_000):
        call_ids.add(pair.host.call(handle, CounterFunc.INCREMENT, now=pair.now))
        if i % 37 == 0:
            pair.step()
    pair.pump()
    done = pair.events(CallCompleted)
    assert counter.count == 10_000
    assert {ev.call_id for ev in done} == call_ids
    assert sorted(struct.unpack("<Q", ev.payload)[0] for ev in done) == list(range(1, 10_001))
    assert pair.host.statistics().pending_requests == 0


def test_no_reply_calls_run_once_and_report_nothing() -> None:
    counter = CountingDevice()
    pair = make_pair(counter)
    handle = pair.open(1)
    pair.take_events()
    for _ in range(3):
        pair.host.call(handle, CounterFunc.INCREMENT, now=0.0, no_reply=True)
    pair.pump()
    assert counter.count == 3
    assert pair.take_events() == []
    assert pair.host.next_deadline() is None


def test_ordered_calls_travel_on_bulk() -> None:
    pair = make_pair(Echo())
    handle = pair.open(1)
    pair.host.call(handle, 0, b"a", now=0.0)
    pair.host.call(handle, 0, b"b", now=0.0, ordered=True)
    channels = [channel for channel, _ in pair.host.messages_to_send()]
    assert channels == [Channel.CONTROL, Channel.BULK]


def test_session_reset_fails_pending_calls() -> None:
    counter = CountingDevice()
    pair = make_pair(counter)
    handle = pair.open(1)
    pair.take_events()
    call_ids = [pair.host.call(handle, CounterFunc.INCREMENT, now=0.0) for _ in range(10)]
    # Five calls reach the board and run; their replies and the rest are lost.
    pair.collect()
    for _ in range(5):
        pair.step(to_host=False)
    assert counter.count == 5
    fresh = Connector()
    fresh.add_device(CountingDevice(), now=0.0)
    pair.restart_board(fresh)
    failed = pair.events(CallFailed)
    assert [ev.call_id for ev in failed] == call_ids
    for ev in failed:
        assert isinstance(ev.error, SessionReset)
        assert "the session reset; the call may or may not have run" in str(ev.error)
    assert pair.host.statistics().pending_requests == 0


def test_timeouts_and_late_replies() -> None:
    pair = make_pair(Echo(), host=Bus(BusConfig(call_timeout_s=2.0)))
    handle = pair.open(1)
    pair.take_events()
    pair.link_down()
    slow = pair.host.call(handle, 0, b"slow", now=pair.now)
    quick = pair.host.call(handle, 0, b"quick", now=pair.now, timeout_s=0.5)
    assert pair.host.next_deadline() == pytest.approx(pair.now + 0.5)
    pair.advance(0.6)
    [failed] = pair.events(CallFailed)
    assert failed.call_id == quick and isinstance(failed.error, DevcallTimeout)
    assert pair.host.next_deadline() == pytest.approx(2.0)
    pair.link_up()
    pair.pump()
    done = pair.events(CallCompleted)
    assert [ev.call_id for ev in done] == [slow]
    stats = pair.host.statistics()
    assert stats.late_replies == 1 and stats.timeouts == 1 and stats.refused_total == 0


def test_calls_on_a_closed_handle_are_local_errors() -> None:
    pair = make_pair(Echo())
    handle = pair.open(1)
    pair.host.close(handle)
    pair.pump()
    assert pair.board.statistics().handles == 0
    with pytest.raises(LocalProtocolError):
        pair.host.call(handle, 0, now=0.0)
    with pytest.raises(LocalProtocolError):
        pair.host.close(handle)
    with pytest.raises(LocalProtocolError):
        pair.host.open(99, now=0.0)
    with pytest.raises(LocalProtocolError):
        pair.host.call(0x1234, 0, now=0.0)


def test_a_call_the_wire_cannot_carry_leaves_nothing_pending() -> None:
    pair = make_pair(Echo())
    handle = pair.open(1)
    for func in (-1, 1 << 32):
        with pytest.raises(LocalProtocolError):
            pair.host.call(handle, func, now=pair.now)
    assert pair.host.statistics().pending_requests == 0
    assert pair.host.next_deadline() is None
    assert pair.host.messages_to_send() == []
    ev = pair.call(handle, 0, b"still fine")
    assert isinstance(ev, CallCompleted) and ev.payload == b"still fine"


def test_handle_limit() -> None:
    from ira.busmodel import ConnectorConfig, ContainerLimits

    board = Connector(ConnectorConfig(limits=ContainerLimits(max_handles=2)))
    board.add_device(Echo(), now=0.0)
    pair = Pair(board)
    pair.start()
    opened = [pair.outcome(pair.host.open(1, now=0.0)) for _ in range(3)]
    assert [type(ev) for ev in opened] == [DeviceOpened, DeviceOpened, CallFailed]
    last = opened[-1]
    assert isinstance(last, CallFailed) and isinstance(last.error, DevcallError)
    assert last.error.status == Status.EMFILE


def test_board_info_reports_uptime_and_link_statistics() -> None:
    info = BoardInfo("bb-1", started_at=10.0, link_statistics=lambda: {"frames_sent": 12})
    pair = make_pair(info)
    pair.now = 12.5
    handle = pair.open(1)
    ev = pair.call(handle, 0)
    assert isinstance(ev, CallCompleted)
    assert json.loads(ev.payload) == {
        "board": "bb-1",
        "ira_version": "0.1.0",
        "uptime_s": 2.5,
        "link": {"frames_sent": 12},
    }
    uptime = pair.call(handle, 1)
    assert isinstance(uptime, CallCompleted) and struct.unpack("<Q", uptime.payload) == (2500,)
