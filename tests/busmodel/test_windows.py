"""Shared windows: attach, flush, ordering with signals, limits, convergence."""

from __future__ import annotations

import pytest
from busharness import Interleave, Pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.busmodel import (
    Attachment,
    CallFailed,
    Connector,
    ConnectorConfig,
    ContainerLimits,
    Device,
    Handle,
    Side,
    SignalReceived,
    Window,
    WindowAttached,
    WindowDetached,
)
from ira.busmodel.counters import Refusal
from ira.busmodel.devices import Echo, RingLoopback
from ira.busmodel.devices.ring_loopback import RingShm
from ira.busmodel.window import FLUSH_MESSAGE_BYTES
from ira.errors import DevcallError, LocalProtocolError
from ira.link.events import Channel, MessageReceived
from ira.wire.bus import (
    SPAN,
    SPAN_HEADER_BYTES,
    ShmAttach,
    ShmAttachReply,
    Status,
    WindowUpdate,
    decode,
    encode,
)


class Scratch(Device):
    """Accepts every window; keeps the attachments so the board side can write."""

    type = "scratch"

    def __init__(self) -> None:
        self.attached: dict[int, Attachment] = {}
        self.detached: list[int] = []

    def attach(self, handle: Handle, attachment: Attachment, *, now: float) -> int:
        self.attached[attachment.window.window_id] = attachment
        return Status.OK

    def detach(self, handle: Handle, attachment: Attachment, *, now: float) -> None:
        self.detached.append(attachment.window.window_id)
        self.attached.pop(attachment.window.window_id, None)


def make_pair(
    *devices: Device, limits: ContainerLimits | None = None, interleave: Interleave = "fifo"
) -> Pair:
    board = Connector(ConnectorConfig(limits=limits or ContainerLimits()))
    for device in devices:
        board.add_device(device, now=0.0)
    pair = Pair(board, interleave=interleave)
    pair.start()
    pair.take_events()
    return pair


def attach(pair: Pair, handle: int, shm_id: int, window: Window, signal: bool = True) -> None:
    ev = pair.outcome(pair.host.attach(handle, shm_id, window, now=pair.now, signal=signal))
    assert isinstance(ev, WindowAttached), ev


@pytest.mark.parametrize("interleave", ["fifo", "control-first", "random"])
def test_ring_loopback_end_to_end(interleave: Interleave) -> None:
    ring = RingLoopback()
    pair = make_pair(ring, interleave=interleave)
    handle = pair.open(1)
    inbound = pair.host.create_window(64)
    outbound = pair.host.create_window(64, device_offset=0, device_length=64)
    attach(pair, handle, RingShm.IN, inbound)
    attach(pair, handle, RingShm.OUT, outbound)
    seen: list[bytes] = []
    signal = outbound.signal
    assert signal is not None
    # The SIGNAL arrives after the update it announces: read the replica in the notifier.
    signal.handler = lambda: seen.append(outbound.read(0, 5))
    for word in (b"hello", b"world"):
        inbound.write(0, word)
        assert inbound.signal is not None
        inbound.signal.notify()
        pair.pump()
    assert seen == [b"hello", b"world"]
    assert ring.copies == 2
    assert outbound.read() == inbound.read()


def test_flush_before_attach_is_carried_out_on_attach() -> None:
    scratch = Scratch()
    pair = make_pair(scratch)
    handle = pair.open(1)
    window = pair.host.create_window(32, device_offset=16, device_length=16)
    window.write(0, b"early")
    assert window.flush() == 0  # not attached yet: remembered
    attach(pair, handle, 0, window, signal=False)
    board_window = scratch.attached[window.window_id].window
    assert board_window.read(0, 5) == b"early"
    board_window.write(16, b"board")
    board_window.flush()
    pair.pump()
    assert window.read(16, 5) == b"board"


def test_each_byte_has_one_writer() -> None:
    scratch = Scratch()
    pair = make_pair(scratch)
    handle = pair.open(1)
    window = pair.host.create_window(32, device_offset=8, device_length=8)
    attach(pair, handle, 0, window)
    board_window = scratch.attached[window.window_id].window
    for bad in ((8, b"x"), (7, b"xx"), (15, b"xx"), (31, b"xx"), (-1, b"x")):
        with pytest.raises(LocalProtocolError):
            window.write(*bad)
    for bad in ((7, b"x"), (16, b"x"), (0, bytes(32))):
        with pytest.raises(LocalProtocolError):
            board_window.write(*bad)
    with pytest.raises(LocalProtocolError):
        window.read(30, 4)


def test_large_flush_is_split_and_converges() -> None:
    scratch = Scratch()
    pair = make_pair(scratch)
    handle = pair.open(1)
    window = pair.host.create_window(100_000)
    attach(pair, handle, 0, window)
    data = bytes(range(256)) * 390
    window.write(1, data)
    window.write(99_000, b"tail")
    sent = window.flush()
    assert sent >= -(-len(data) // FLUSH_MESSAGE_BYTES) >= 2
    pair.pump()
    assert scratch.attached[window.window_id].window.read() == window.read()
    assert window.flush() == 0


def test_attach_refusals() -> None:
    limits = ContainerLimits(max_windows=2, max_window_bytes=4096, max_total_window_bytes=6000)
    pair = make_pair(Scratch(), Echo(), limits=limits)
    scratch, echo = pair.open(1), pair.open(2)

    def status_of(handle: int, window: Window) -> int:
        ev = pair.outcome(pair.host.attach(handle, 0, window, now=pair.now))
        if isinstance(ev, WindowAttached):
            return 0
        assert isinstance(ev, CallFailed) and isinstance(ev.error, DevcallError)
        return ev.error.status

    assert status_of(echo, pair.host.create_window(16)) == Status.EOPNOTSUPP
    assert status_of(scratch, pair.host.create_window(4000)) == 0
    assert status_of(scratch, pair.host.create_window(2500)) == Status.ENOSPC
    assert status_of(scratch, pair.host.create_window(2000)) == 0
    assert status_of(scratch, pair.host.create_window(16)) == Status.ENOSPC
    with pytest.raises(LocalProtocolError):
        pair.host.create_window(5000)  # over the board's max_window_bytes
    # Raw requests the host API would not send.
    board = pair.board
    scratch_handle = scratch
    for msg, status in (
        (ShmAttach(90, scratch_handle, 0, 2, 16, 0, 0, 0), Status.EEXIST),
        (ShmAttach(91, scratch_handle, 0, 77, 16, 8, 9, 0), Status.ERANGE),
        (ShmAttach(92, scratch_handle, 0, 78, 0, 0, 0, 0), Status.EINVAL),
        (ShmAttach(93, 0x5151, 0, 79, 16, 0, 0, 0), Status.EBADF),
    ):
        board.handle_link_event(MessageReceived(Channel.BULK, encode(msg)), now=0.0)
        [(channel, data)] = board.messages_to_send()
        assert channel is Channel.BULK
        assert decode(data) == ShmAttachReply(msg.call_id, status, 0)
    stats = board.statistics()
    assert stats.windows == 2 and stats.window_bytes == 6000
    assert stats.refused[Refusal.WINDOW_EXISTS] == 1 and stats.refused[Refusal.OUT_OF_BOUNDS] == 1


def test_detach_and_close_free_windows() -> None:
    scratch = Scratch()
    pair = make_pair(scratch)
    handle = pair.open(1)
    first, second = pair.host.create_window(64), pair.host.create_window(64)
    attach(pair, handle, 0, first)
    attach(pair, handle, 1, second)
    assert pair.board.statistics().windows == 2
    ev = pair.outcome(pair.host.detach(first, now=pair.now))
    assert isinstance(ev, WindowDetached)
    assert first.closed and scratch.detached == [first.window_id]
    with pytest.raises(LocalProtocolError):
        first.write(0, b"x")
    pair.host.close(handle)
    pair.pump()
    assert second.closed
    stats = pair.board.statistics()
    assert stats.windows == 0 and stats.signals == 0 and stats.window_bytes == 0
    assert sorted(scratch.detached) == [first.window_id, second.window_id]


def test_device_removal_closes_host_windows_and_stale_updates_are_ignored() -> None:
    scratch = Scratch()
    pair = make_pair(scratch)
    handle = pair.open(1)
    window = pair.host.create_window(64, device_length=64)
    attach(pair, handle, 0, window)
    board_window = scratch.attached[window.window_id].window
    board_window.write(0, b"in flight")
    board_window.flush()
    pair.collect()
    pair.board.remove_device(1, now=0.0)
    pair.pump()
    assert window.closed
    stats = pair.host.statistics()
    assert stats.refused_total == 0


# ---------------------------------------------------------------------------
# Property: replicas converge
# ---------------------------------------------------------------------------

SIZE = 256
SPLIT = 96  # the board writes [SPLIT, SIZE)

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"),
            st.sampled_from([Side.HOST, Side.BOARD]),
            st.integers(0, SIZE - 1),
            st.binary(min_size=1, max_size=40),
        ),
        st.tuples(st.just("flush"), st.sampled_from([Side.HOST, Side.BOARD])),
        st.tuples(st.just("deliver"), st.integers(1, 8)),
    ),
    max_size=60,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(ops, st.sampled_from(["fifo", "control-first", "random"]), st.integers(0, 1000))
def test_replicas_converge_once_quiet(
    script: list[tuple[object, ...]], interleave: Interleave, seed: int
) -> None:
    scratch = Scratch()
    pair = make_pair(scratch, interleave=interleave)
    pair.rng.seed(seed)
    handle = pair.open(1)
    host = pair.host.create_window(SIZE, device_offset=SPLIT, device_length=SIZE - SPLIT)
    attach(pair, handle, 0, host, signal=True)
    board = scratch.attached[host.window_id].window
    replicas = {Side.HOST: host, Side.BOARD: board}
    for op in script:
        match op:
            case ("write", Side() as side, int(offset), bytes(data)):
                low, high = (0, SPLIT) if side is Side.HOST else (SPLIT, SIZE)
                start = low + offset % (high - low)
                replicas[side].write(start, data[: high - start])
            case ("flush", Side() as side):
                replicas[side].flush()
            case ("deliver", int(n)):
                for _ in range(n):
                    pair.step()
    host.flush()
    board.flush()
    pair.pump()
    assert host.read() == board.read()
    assert pair.board.statistics().refused_total == 0
    assert pair.host.statistics().refused_total == 0


def test_signal_received_event_after_window_update() -> None:
    scratch = Scratch()
    pair = make_pair(scratch, interleave="control-first")
    handle = pair.open(1)
    window = pair.host.create_window(16, device_length=16)
    attach(pair, handle, 0, window)
    att = scratch.attached[window.window_id]
    assert att.signal is not None
    att.window.write(0, b"x" * 16)
    att.signal.notify()  # flushes first
    pair.pump()
    [ev] = pair.events(SignalReceived)
    assert ev.window_id == window.window_id and ev.device_id == 1
    assert window.read() == b"x" * 16


def _flushed_spans(window: Window) -> list[tuple[int, bytes]]:
    sent: list[WindowUpdate] = []
    window.connect(sent.append)
    window.flush()
    return [(span.offset, span.data) for update in sent for span in update.spans]


def test_a_short_gap_between_a_writers_ranges_goes_in_one_span() -> None:
    """Sending a gap's bytes (the same in both replicas) costs less than another header."""
    window = Window(1, 64, side=Side.HOST)
    window.write(2, b"ab")
    window.write(4 + SPAN_HEADER_BYTES, b"cd")  # a gap of SPAN_HEADER_BYTES: closed up
    window.write(40, b"ef")  # a longer gap: a span of its own
    expected = bytes(window.read(2, 8 + SPAN_HEADER_BYTES - 2 - 2))
    assert _flushed_spans(window) == [(2, expected), (40, b"ef")]


def test_a_gap_the_peer_writes_is_never_sent() -> None:
    window = Window(1, 64, side=Side.HOST, device_offset=8, device_length=2)
    window.write(4, b"ab")  # ends at 6; the device owns [8, 10)
    window.write(10, b"cd")
    assert _flushed_spans(window) == [(4, b"ab"), (10, b"cd")]


def test_the_span_header_size_is_the_schemas() -> None:
    assert len(SPAN.build({"offset": 0, "data": b"x"})) == SPAN_HEADER_BYTES + 1
