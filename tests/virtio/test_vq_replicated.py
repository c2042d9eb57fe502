"""Virtqueues in replicated bus windows, over a lossy simulated serial link.

The driver runs on the host over its replicas of four windows (the queue,
outgoing data, device-written data, indirect tables), the device on the
board over the board's replicas; the only way bytes get across is WINDOW
updates on a link with bit errors, drops and duplicates, and notifications
are bus SIGNALs.  Every chain must be used exactly once, with the bytes and
length the device wrote, in the order the device pushed them, from ring
indices just below the 16-bit wrap.

Over a link a side's view of the peer's suppression fields can be stale
(a store-load barrier needs a round trip), so both sides here notify after
every publish that exposed something; the bus signal coalesces those (one
SIGNAL in flight, none while the peer is busy).  ``publish()``'s decision is
counted, not obeyed.
"""

from __future__ import annotations

import os
import random

import pytest
from linkrig import BusOverLink

from ira.busmodel import Attachment, Bus, Connector, Device, Handle, Window
from ira.busmodel.events import DeviceOpened, SignalReceived, WindowAttached
from ira.virtio import (
    Buffer,
    MemoryMap,
    QueueAddresses,
    VirtqueueDevice,
    VirtqueueDriver,
    WindowMemory,
    split_layout,
)
from ira.virtio.ring import DESC_BYTES
from ira.wire.bus import SignalNotify, Status

RING, OUT, IN, TABLES = 0, 1, 2, 3
SLOT = 32
#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
SEEDS = max(8, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")) // 1000)


def reply_to(data: bytes, room: int) -> bytes:
    """What the device writes for a chain that carried ``data`` and can take ``room`` bytes."""
    return (bytes(b ^ 0x5A for b in data) + b"!")[:room]


class RingDevice(Device):
    """A board device that serves one virtqueue: answers each chain with ``reply_to``."""

    type = "vqtest"

    def __init__(self, queue_size: int, *, base: int, event_idx: bool, indirect: bool) -> None:
        self.queue_size = queue_size
        self.base = base
        self.event_idx = event_idx
        self.indirect = indirect
        self.windows: dict[int, Attachment] = {}
        self.queue: VirtqueueDevice | None = None
        self.rng = random.Random(queue_size * 7 + base)

    def attach(self, handle: Handle, attachment: Attachment, *, now: float) -> int:
        self.windows[attachment.shm_id] = attachment
        if len(self.windows) == 4:
            memory = MemoryMap(WindowMemory(a.window) for a in self.windows.values())
            ring = self.windows[RING]
            addresses = QueueAddresses.in_window(
                ring.window.window_id, split_layout(self.queue_size)
            )
            self.queue = VirtqueueDevice(
                memory,
                self.queue_size,
                addresses,
                event_idx=self.event_idx,
                indirect=self.indirect,
                base=self.base,
            )
            assert ring.signal is not None
            ring.signal.handler = self.turn
        return Status.OK

    def turn(self) -> None:
        queue = self.queue
        assert queue is not None
        signal = self.windows[RING].signal
        assert signal is not None
        while True:
            chains = []
            while (chain := queue.pop()) is not None:
                chains.append(chain)
            if not chains:
                return
            self.rng.shuffle(chains)  # used out of order
            for chain in chains:
                reply = reply_to(queue.read(chain), chain.writable_bytes)
                queue.write(chain, reply)
                queue.push(chain, len(reply))
            queue.publish()
            signal.notify()


class Host:
    """The driver on the host: keeps the queue full until ``total`` chains went round."""

    def __init__(
        self,
        net: BusOverLink,
        windows: dict[int, Window],
        queue_size: int,
        *,
        base: int,
        event_idx: bool,
        indirect: bool,
    ) -> None:
        self.net = net
        self.windows = windows
        self.queue_size = queue_size
        memory = MemoryMap(WindowMemory(w) for w in windows.values())
        addresses = QueueAddresses.in_window(windows[RING].window_id, split_layout(queue_size))
        self.driver: VirtqueueDriver[int] = VirtqueueDriver(
            memory, queue_size, addresses, event_idx=event_idx, indirect=indirect, base=base
        )
        self.rng = random.Random(queue_size)
        self.free_slots = list(range(queue_size))
        self.sent: dict[int, tuple[int, bytes, int]] = {}  # token -> slot, data, room
        self.used: list[tuple[int, int]] = []
        self.next_token = 0
        self.total = 0

    def fill(self) -> None:
        added = False
        while self.next_token < self.total and self.free_slots:
            n_read = self.rng.randint(1, 2)
            n_write = self.rng.randint(0, min(2, self.queue_size - n_read))
            needed = 1 if self.driver.indirect else n_read + n_write
            if self.driver.num_free < needed:
                break
            token, slot = self.next_token, self.free_slots.pop()
            self.next_token += 1
            data = random.Random(token).randbytes(self.rng.randint(n_read, 12))
            self.windows[OUT].write(slot * SLOT, data)
            cut = self.rng.randint(1, len(data) - n_read + 1)
            pieces = (
                [(0, cut), (cut, len(data) - cut)][:n_read] if n_read == 2 else [(0, len(data))]
            )
            readable = [
                Buffer.at(self.windows[OUT].window_id, slot * SLOT + o, n) for o, n in pieces
            ]
            sizes = [self.rng.randint(0, SLOT // 2) for _ in range(n_write)]
            writable, pos = [], slot * SLOT
            for n in sizes:
                writable.append(Buffer.at(self.windows[IN].window_id, pos, n))
                pos += n
            table = None
            if self.driver.indirect:
                table = Buffer.at(
                    self.windows[TABLES].window_id,
                    slot * DESC_BYTES * 4,
                    DESC_BYTES * (len(readable) + len(writable)),
                )
            self.driver.add(readable, writable, token, indirect_table=table)
            self.sent[token] = (slot, data, sum(sizes))
            added = True
        if added:
            self.driver.publish()
            signal = self.windows[RING].signal
            assert signal is not None
            signal.notify()

    def on_event(self, ev: object) -> None:
        if isinstance(ev, SignalReceived) and ev.window_id == self.windows[RING].window_id:
            for used in self.driver.collect():
                slot, data, room = self.sent.pop(used.token)
                expected = reply_to(data, room)
                assert used.written_bytes == len(expected)
                assert self.windows[IN].read(slot * SLOT, len(expected)) == expected
                self.used.append((used.token, used.written_bytes))
                self.free_slots.append(slot)
            self.fill()


def open_queue(
    net: BusOverLink, queue_size: int, *, base: int, event_idx: bool, indirect: bool
) -> Host:
    host = net.host
    assert net.run_until(lambda: bool(host.devices()), timeout_s=30.0)
    ev = net.outcome(host.open(host.devices()[0].device_id, now=net.now))
    assert isinstance(ev, DeviceOpened)
    lay = split_layout(queue_size)
    windows = {
        RING: host.create_window(
            lay.size_bytes, device_offset=lay.used_offset, device_length=lay.used_bytes
        ),
        OUT: host.create_window(queue_size * SLOT),
        IN: host.create_window(queue_size * SLOT, device_offset=0, device_length=queue_size * SLOT),
        TABLES: host.create_window(queue_size * DESC_BYTES * 4),
    }
    for shm_id, window in windows.items():
        call = host.attach(ev.handle, shm_id, window, now=net.now, signal=shm_id == RING)
        assert isinstance(net.outcome(call), WindowAttached)
    return Host(net, windows, queue_size, base=base, event_idx=event_idx, indirect=indirect)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_chains_go_round_exactly_once_over_a_noisy_link(seed: int) -> None:
    rng = random.Random(seed)
    queue_size = rng.choice([2, 4, 8])
    base = 0xFFFF - rng.randrange(24)
    event_idx, indirect = bool(seed & 1), bool(seed & 2)
    board = Connector()
    device = RingDevice(queue_size, base=base, event_idx=event_idx, indirect=indirect)
    board.add_device(device, now=0.0)
    net = BusOverLink(board, Bus(), seed=seed)
    host = open_queue(net, queue_size, base=base, event_idx=event_idx, indirect=indirect)
    host.total = 300
    net.on_host_event = host.on_event
    host.fill()
    assert net.run_until(lambda: len(host.used) == host.total, timeout_s=600.0), (
        f"{len(host.used)} of {host.total} used"
    )
    assert sorted(t for t, _ in host.used) == list(range(host.total))
    assert device.queue is not None and device.queue.broken is None
    stats = device.queue.statistics()
    assert stats.chains_popped == stats.chains_pushed == host.total
    assert host.driver.outstanding == 0 and host.driver.num_free == queue_size
    # the line really was noisy, and the signals coalesced kicks and interrupts
    assert net.pair.ab.faults_injected + net.pair.ba.faults_injected > 0
    assert net.host.statistics().sent[SignalNotify] < host.total
    assert board.statistics().sent[SignalNotify] < host.total
