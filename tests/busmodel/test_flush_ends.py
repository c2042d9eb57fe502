"""Where a flush ends: WINDOW's MORE (bus v2) and ``Window.on_update``."""

from __future__ import annotations

from busharness import Pair
from test_windows import Scratch, attach

from ira.busmodel import (
    Bus,
    BusConfig,
    Connector,
    Side,
    SignalReceived,
    Window,
    WindowUpdated,
)
from ira.busmodel.window import FLUSH_MESSAGE_BYTES
from ira.wire.bus import BUS_VERSION_WINDOWS, Span, Status, WindowUpdate, decode

BIG = FLUSH_MESSAGE_BYTES * 2 + 100  # one flush of this many bytes takes three messages
PATTERN = (bytes(range(256)) * (BIG // 256 + 1))[:BIG]


def _flushed(window: Window) -> list[WindowUpdate]:
    sent: list[WindowUpdate] = []
    window.connect(sent.append, flush_ends=window.side is Side.HOST)
    window.write(0, PATTERN)
    window.flush()
    return sent


def test_every_message_of_a_flush_but_the_last_says_more() -> None:
    sent = _flushed(Window(1, BIG, side=Side.HOST))
    assert len(sent) == 3
    assert [m.more for m in sent] == [True, True, False]


def test_without_flush_ends_no_message_says_more() -> None:
    sent = _flushed(Window(1, BIG, side=Side.BOARD, device_length=BIG))
    assert len(sent) == 3 and not any(m.more for m in sent)


def test_on_update_runs_after_the_last_message_of_a_flush_only() -> None:
    sent = _flushed(Window(1, BIG, side=Side.HOST))
    replica = Window(1, BIG, side=Side.BOARD)
    replica.connect(lambda msg: None, flush_ends=True)
    seen: list[bytes] = []
    replica.on_update = lambda: seen.append(replica.read())
    for msg in sent[:-1]:
        assert replica.apply(msg, writer=Side.HOST) is Status.OK
        assert seen == []
    assert replica.apply(sent[-1], writer=Side.HOST) is Status.OK
    assert seen == [PATTERN]


def test_on_update_does_not_run_without_flush_ends_nor_after_a_refused_message() -> None:
    replica = Window(1, 64, side=Side.BOARD)
    calls: list[None] = []
    replica.on_update = lambda: calls.append(None)
    replica.connect(lambda msg: None)  # a v1 peer: nothing says where its flushes end
    assert replica.apply(WindowUpdate(1, (Span(0, b"x"),)), writer=Side.HOST) is Status.OK
    assert calls == []
    replica = Window(1, 64, side=Side.BOARD)
    replica.on_update = lambda: calls.append(None)
    replica.connect(lambda msg: None, flush_ends=True)
    assert replica.apply(WindowUpdate(1, (Span(63, b"xy"),)), writer=Side.HOST) is Status.ERANGE
    assert calls == []
    replica.disconnect()
    assert replica.on_update is None


def _pair(host: Bus | None = None) -> tuple[Pair, Scratch, int]:
    scratch = Scratch()
    board = Connector()
    board.add_device(scratch, now=0.0)
    pair = Pair(board, host)
    pair.start()
    pair.take_events()
    return pair, scratch, pair.open(1)


def test_the_board_hook_runs_once_per_host_flush_with_all_of_it_applied() -> None:
    # version 3: one WINDOW message each (from version 4 on consecutive ones may travel as one)
    pair, scratch, handle = _pair(Bus(BusConfig(version_max=BUS_VERSION_WINDOWS - 1)))
    assert pair.host.version == BUS_VERSION_WINDOWS - 1 >= 2
    window = pair.host.create_window(BIG)
    attach(pair, handle, 0, window)
    board_window = scratch.attached[window.window_id].window
    seen: list[bytes] = []
    board_window.on_update = lambda: seen.append(board_window.read())
    data = PATTERN
    window.write(0, data)
    assert window.flush() == 3
    # Deliver one message at a time: the hook waits for the last one.
    for _ in range(2):
        pair.step(to_host=False)
        assert seen == []
    pair.step(to_host=False)
    assert seen == [data]
    window.write(5, b"z")
    window.flush()
    pair.pump()
    assert len(seen) == 2 and seen[1][5:6] == b"z"


def test_the_host_reports_the_end_of_a_board_flush_on_windows_with_a_signal() -> None:
    pair, scratch, handle = _pair(Bus(BusConfig(version_max=BUS_VERSION_WINDOWS - 1)))
    ring = pair.host.create_window(BIG, device_length=BIG)
    data = pair.host.create_window(64, device_length=64)
    attach(pair, handle, 0, ring)
    attach(pair, handle, 1, data, signal=False)
    board_ring = scratch.attached[ring.window_id].window
    board_ring.write(0, b"r" * BIG)
    assert board_ring.flush() == 3
    scratch.attached[data.window_id].window.write(0, b"d")
    scratch.attached[data.window_id].window.flush()
    pair.take_events()
    for _ in range(2):
        pair.step(to_board=False)
        assert pair.events(WindowUpdated) == []
    pair.pump()
    # No SIGNAL was sent; the end of the flush alone is reported, once, for the window
    # with a signal only.
    assert pair.events(SignalReceived) == []
    assert pair.events(WindowUpdated) == [WindowUpdated(1, ring.window_id)]
    assert ring.read() == b"r" * BIG


def test_a_version_1_host_gets_no_more_and_no_hooks() -> None:
    host = Bus(BusConfig(version_max=1))
    pair, scratch, handle = _pair(host)
    assert host.version == 1
    ring = host.create_window(BIG, device_length=BIG // 2)
    attach(pair, handle, 0, ring)
    board_ring = scratch.attached[ring.window_id].window
    calls: list[None] = []
    board_ring.on_update = lambda: calls.append(None)
    ring.write(BIG // 2, bytes(BIG // 2))
    ring.write(BIG - 1, b"h")
    board_ring.write(0, b"b" * (BIG // 2))
    ring.flush()
    board_ring.flush()
    to_board = pair.host.messages_to_send()
    to_host = pair.board.messages_to_send()
    windows = [decode(data) for _, data in to_board + to_host]
    assert len(windows) >= 4
    assert all(isinstance(m, WindowUpdate) and not m.more for m in windows)
    for channel, data in to_board:
        pair.to_board.push(channel, data)
    for channel, data in to_host:
        pair.to_host.push(channel, data)
    pair.pump()
    assert calls == [] and pair.events(WindowUpdated) == []
    assert ring.read(0, 1) == b"b" and board_ring.read(BIG - 1, 1) == b"h"
