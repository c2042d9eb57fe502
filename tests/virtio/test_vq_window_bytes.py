"""What a ring puts on the line when it lives in replicated windows.

Every byte a side writes into a bus window is a byte on the link, so
``WindowMemory`` sends only what changes, the driver hands out descriptors
in FIFO order (a chain used in order comes back to the ring slot of its own
number) and a publish is one barrier: the buffers' windows first, then the
ring entries with the index, in one update.
"""

from __future__ import annotations

import pytest

from ira.busmodel import Window
from ira.busmodel.window import Side
from ira.errors import LocalProtocolError
from ira.virtio import (
    Buffer,
    MemoryMap,
    QueueAddresses,
    VirtqueueDevice,
    VirtqueueDriver,
    WindowMemory,
    split_layout,
)
from ira.wire.bus import WindowUpdate

N = 8


def test_a_write_sends_only_the_bytes_that_change() -> None:
    window = Window(1, 64, side=Side.HOST)
    memory = WindowMemory(window)
    memory.write(0, bytes(16))  # what the replica already holds
    assert window.dirty_bytes == 0
    memory.write(0, bytes.fromhex("0000aa00bb000000"))
    assert window.dirty_bytes == 3  # from the first to the last byte that differ
    assert window.read(0, 8) == bytes.fromhex("0000aa00bb000000")
    with pytest.raises(LocalProtocolError):
        WindowMemory(Window(2, 64, side=Side.HOST, device_offset=0, device_length=8)).write(
            0, b"\x01"
        )


class Line:
    """Both replicas of each window, joined by an in-order list of updates."""

    def __init__(self, layout_size: int, used_offset: int, used_bytes: int) -> None:
        self.updates: list[tuple[str, WindowUpdate]] = []
        self.host: dict[int, Window] = {}
        self.board: dict[int, Window] = {}
        for window_id, size, dev_off, dev_len in (
            (1, layout_size, used_offset, used_bytes),
            (2, 4096, 0, 0),  # data the driver writes
        ):
            host = Window(
                window_id, size, side=Side.HOST, device_offset=dev_off, device_length=dev_len
            )
            board = Window(
                window_id, size, side=Side.BOARD, device_offset=dev_off, device_length=dev_len
            )
            host.connect(lambda u: self.updates.append(("host", u)))
            board.connect(lambda u: self.updates.append(("board", u)))
            self.host[window_id], self.board[window_id] = host, board

    def deliver(self) -> list[WindowUpdate]:
        """Apply every update to the other replica; returns the host's, in order."""
        sent, self.updates = self.updates, []
        for side, update in sent:
            if side == "host":
                assert self.board[update.window].apply(update, writer=Side.HOST) == 0
            else:
                assert self.host[update.window].apply(update, writer=Side.BOARD) == 0
        return [u for side, u in sent if side == "host"]


def test_chains_used_in_order_rewrite_no_ring_bytes_after_the_first_lap() -> None:
    lay = split_layout(N)
    line = Line(lay.size_bytes, lay.used_offset, lay.used_bytes)
    addrs = QueueAddresses.in_window(1, lay)
    driver: VirtqueueDriver[int] = VirtqueueDriver(
        MemoryMap(WindowMemory(w) for w in line.host.values()), N, addrs, event_idx=True
    )
    device = VirtqueueDevice(
        MemoryMap(WindowMemory(w) for w in line.board.values()), N, addrs, event_idx=True
    )
    line.deliver()
    ring_bytes: list[int] = []
    for lap in range(3):
        for i in range(N):
            slot = 64 * i  # the same buffer for the same ring slot, lap after lap
            line.host[2].write(slot, bytes([lap, i]) * 8)
            head = driver.add([Buffer.at(2, slot, 16)], [], slot)
            assert head == i  # FIFO: the head is the slot's own number
            driver.publish()
            updates = line.deliver()
            # one barrier: the data window's update, then the ring's, entries and index
            assert [u.window for u in updates] == [2, 1]
            if lap:
                ring_bytes.append(sum(len(s.data) for s in updates[1].spans))
            chain = device.pop()
            assert chain is not None and device.read(chain) == bytes([lap, i]) * 8
            device.push(chain, 0)
            device.publish()
            line.deliver()
            assert [u.token for u in driver.collect()] == [slot]
    # after the first lap only the index (and used_event) move: no descriptor, no entry
    assert max(ring_bytes) <= 4
