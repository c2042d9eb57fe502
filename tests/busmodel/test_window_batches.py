"""Bus v4: consecutive WINDOW messages travel as one WINDOWS; older peers get them one by one."""

from __future__ import annotations

import pytest
from busharness import Pair
from test_windows import Scratch, attach

from ira.busmodel import Bus, BusConfig, Connector, ConnectorConfig
from ira.busmodel.outbox import JOIN_BYTES, Outbox
from ira.busmodel.window import FLUSH_MESSAGE_BYTES
from ira.link.events import Channel, MessageReceived
from ira.wire.bus import (
    BUS_VERSION_MAX,
    BUS_VERSION_WINDOWS,
    MAX_BATCH_UPDATES,
    DevClose,
    Span,
    WindowBatch,
    WindowUpdate,
    decode,
    encode,
)


def _pair(
    board_max: int = BUS_VERSION_MAX, host_max: int = BUS_VERSION_MAX
) -> tuple[Pair, Scratch, int]:
    scratch = Scratch()
    board = Connector(ConnectorConfig(version_max=board_max))
    board.add_device(scratch, now=0.0)
    pair = Pair(board, Bus(BusConfig(version_max=host_max)))
    pair.start()
    pair.take_events()
    return pair, scratch, pair.open(1)


def test_a_buffer_and_the_ring_update_that_exposes_it_cross_as_one_message() -> None:
    pair, scratch, handle = _pair()
    assert pair.host.version == BUS_VERSION_WINDOWS
    buffers = pair.host.create_window(4096)
    ring = pair.host.create_window(64)
    attach(pair, handle, 0, buffers, signal=False)
    attach(pair, handle, 1, ring)
    board_ring = scratch.attached[ring.window_id].window
    board_buffers = scratch.attached[buffers.window_id].window
    seen: list[bytes] = []
    board_ring.on_update = lambda: seen.append(board_buffers.read(100, 5))
    buffers.write(100, b"frame")
    ring.write(2, b"\x01\x00")
    buffers.flush()
    ring.flush()
    sent = pair.host.messages_to_send()
    assert len(sent) == 1
    channel, data = sent[0]
    assert channel is Channel.BULK
    assert decode(data) == WindowBatch(
        (
            WindowUpdate(buffers.window_id, (Span(100, b"frame"),)),
            WindowUpdate(ring.window_id, (Span(2, b"\x01\x00"),)),
        )
    )
    pair.board.handle_link_event(MessageReceived(channel, data), now=pair.now)
    # the ring's flush ended after the buffer was in the replica
    assert seen == [b"frame"]
    assert pair.board.statistics().as_dict()["window_updates_applied"] == 2


def test_the_board_joins_its_updates_too() -> None:
    pair, scratch, handle = _pair()
    used = pair.host.create_window(64, device_length=64)
    data = pair.host.create_window(64, device_length=64)
    attach(pair, handle, 0, used)
    attach(pair, handle, 1, data, signal=False)
    scratch.attached[data.window_id].window.write(0, b"rx")
    scratch.attached[used.window_id].window.write(8, b"\x07")
    scratch.attached[data.window_id].window.flush()
    scratch.attached[used.window_id].window.flush()
    pair.pump()
    assert pair.to_host.tags["WINDOWS"] == 1 and pair.to_host.tags["WINDOW"] == 0
    assert data.read(0, 2) == b"rx" and used.read(8, 1) == b"\x07"


@pytest.mark.parametrize(("board_max", "host_max"), [(3, BUS_VERSION_MAX), (BUS_VERSION_MAX, 3)])
def test_a_version_3_peer_gets_window_messages_one_by_one(board_max: int, host_max: int) -> None:
    pair, scratch, handle = _pair(board_max, host_max)
    assert pair.host.version == 3
    window = pair.host.create_window(64, device_offset=32, device_length=32)
    attach(pair, handle, 0, window)
    board_window = scratch.attached[window.window_id].window
    for i in range(3):
        window.write(i, b"h")
        window.flush()
        board_window.write(32 + i, b"b")
        board_window.flush()
    pair.pump()
    for direction in (pair.to_board, pair.to_host):
        assert direction.tags["WINDOWS"] == 0 and direction.tags["WINDOW"] >= 3
    assert window.read(32, 3) == b"bbb" and board_window.read(0, 3) == b"hhh"
    # ... and the driver's window still wants its SIGNALs
    assert not window.flush_notifies


def test_windows_in_a_version_3_session_is_refused_and_counted() -> None:
    pair, scratch, handle = _pair(board_max=3)
    window = pair.host.create_window(64)
    attach(pair, handle, 0, window)
    batch = WindowBatch(
        (
            WindowUpdate(window.window_id, (Span(0, b"a"),)),
            WindowUpdate(window.window_id, (Span(1, b"b"),)),
        )
    )
    before = pair.board.statistics().as_dict()
    pair.board.handle_link_event(MessageReceived(Channel.BULK, encode(batch)), now=pair.now)
    after = pair.board.statistics().as_dict()
    assert after["refused_unexpected"] == before.get("refused_unexpected", 0) + 1
    assert scratch.attached[window.window_id].window.read(0, 2) == b"\x00\x00"


def test_each_update_of_a_batch_is_checked_and_applied_on_its_own() -> None:
    pair, scratch, handle = _pair()
    window = pair.host.create_window(64, device_offset=32, device_length=32)
    attach(pair, handle, 0, window)
    batch = WindowBatch(
        (
            WindowUpdate(window.window_id, (Span(0, b"ok"),)),
            WindowUpdate(window.window_id, (Span(40, b"board's"),)),  # not the host's to write
            WindowUpdate(window.window_id, (Span(62, b"far"),)),  # past the end
            WindowUpdate(window.window_id, (Span(4, b"too"),)),
        )
    )
    before = pair.board.statistics().as_dict()
    pair.board.handle_link_event(MessageReceived(Channel.BULK, encode(batch)), now=pair.now)
    after = pair.board.statistics().as_dict()
    board_window = scratch.attached[window.window_id].window
    assert board_window.read(0, 7) == b"ok\x00\x00too"
    assert after["refused_wrong_writer"] == before.get("refused_wrong_writer", 0) + 1
    assert after["refused_out_of_bounds"] == before.get("refused_out_of_bounds", 0) + 1
    assert after["window_updates_applied"] == before["window_updates_applied"] + 2


def _window(i: int, size: int = 1) -> bytes:
    return encode(WindowUpdate(i, (Span(0, bytes(size)),)))


def test_the_outbox_joins_runs_of_bulk_window_messages_only() -> None:
    outbox = Outbox()
    outbox.batch_windows = True
    for i in range(MAX_BATCH_UPDATES + 3):
        outbox.send_encoded(Channel.BULK, _window(i), WindowUpdate)
    outbox.send(DevClose(5))
    outbox.send_encoded(Channel.BULK, _window(100), WindowUpdate)
    outbox.send_encoded(Channel.CONTROL, _window(101), WindowUpdate)  # not BULK: left alone
    outbox.send_encoded(Channel.BULK, _window(102), WindowUpdate)
    outbox.send_encoded(Channel.BULK, _window(103), WindowUpdate)
    taken = [(channel, decode(data)) for channel, data in outbox.take()]
    kinds = [type(msg).__name__ for _, msg in taken]
    assert kinds == [
        "WindowBatch",
        "WindowBatch",
        "DevClose",
        "WindowUpdate",
        "WindowUpdate",
        "WindowBatch",
    ]
    first, second = taken[0][1], taken[1][1]
    assert isinstance(first, WindowBatch) and isinstance(second, WindowBatch)
    ids = [u.window for u in first.updates + second.updates]
    assert ids == list(range(MAX_BATCH_UPDATES + 3))
    assert len(first.updates) == MAX_BATCH_UPDATES
    assert taken[3:5] == [
        (Channel.BULK, WindowUpdate(100, (Span(0, b"\x00"),))),
        (Channel.CONTROL, WindowUpdate(101, (Span(0, b"\x00"),))),
    ]
    assert outbox.sent[WindowBatch] == 3 and outbox.sent[WindowUpdate] == MAX_BATCH_UPDATES + 7


def test_a_frame_and_its_ring_update_share_a_message_two_frames_do_not() -> None:
    outbox = Outbox()
    outbox.batch_windows = True
    big = encode(WindowUpdate(1, tuple(Span(i * 4096, bytes(4096)) for i in range(16))))
    assert len(big) > FLUSH_MESSAGE_BYTES
    frame = _window(1, 1500)
    small = _window(2, JOIN_BYTES - 12)  # 12 bytes of WINDOW and span headers
    assert len(small) == JOIN_BYTES
    for data in (big, _window(2), big, _window(3), frame, small, frame, _window(4)):
        outbox.send_encoded(Channel.BULK, data, WindowUpdate)
    taken = [decode(data) for _, data in outbox.take()]
    assert [len(m.updates) if isinstance(m, WindowBatch) else 1 for m in taken] == [2, 2, 2, 2]


def test_without_batching_the_outbox_hands_over_what_it_was_given() -> None:
    outbox = Outbox()
    messages = [(Channel.BULK, _window(i)) for i in range(3)]
    for channel, data in messages:
        outbox.send_encoded(channel, data, WindowUpdate)
    assert outbox.take() == messages
