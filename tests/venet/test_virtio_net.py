"""virtio-net device and driver over a simulated link, with in-memory ports (sans-I/O).

A board ``Connector`` with a ``VirtioNetDevice`` and a host ``Bus`` with a
``VirtioNetClient`` run over two link cores on a simulated line (fake clock,
seeded faults); each end's network stack is a ``MemPort``.  Nothing sleeps.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netframes import tcp4

from ira.busmodel import Bus, BusConfig, Connector
from ira.busmodel.drivers import DriverRegistry
from ira.busmodel.events import DeviceRemoved
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import LinkEvent
from ira.link.simulate import LineFaults, LinkPair
from ira.runtime.backlog import LinkBacklog
from ira.venet.device import VirtioNetDevice
from ira.venet.driver import (
    QUEUE_SIZE,
    InterfaceSettings,
    NetDriverConfig,
    TxFifo,
    VirtioNetClient,
)
from ira.venet.flowqueue import LIMIT_FRAMES
from ira.venet.netspec import (
    GUEST_OFFLOADS,
    HDR_DELTA,
    NET_ID,
    OFFLOADS,
    TX_QUEUE,
    F,
    Offloads,
    features_consistent,
    generated_mac,
)
from ira.venet.vnethdr import Drop
from ira.virtio.calls import VIRTIO_TYPE
from ira.virtio.counters import DeviceRingStatistics, DeviceStatistics
from ira.virtio.driver import Buffer
from ira.virtio.features import FeaturePolicy
from ira.virtio.host import BindingState, VirtioBinding, VirtioHostDriver
from ira.virtio.ring import Fault
from ira.wire.bus import (
    BUS_VERSION_MAX,
    SignalNotify,
    SignalState,
    WindowBatch,
    WindowUpdate,
    decode,
)
from ira.wire.framedelta import Kind
from ira.wire.venet import HEADER, VNET_HDR_BYTES, GsoType, HdrFlags

CLEAN = LineFaults()
#: header compression (IRA_HDR_DELTA) kept out of the negotiation
NO_DELTA = FeaturePolicy(allowed=~HDR_DELTA)
NOISY = LineFaults(ber=2e-6, drop=2e-6, latency_s=0.002)
MAC = bytes.fromhex("020000000042")
ETH = bytes.fromhex("02000000004202000000000108004500")  # dst, src, IPv4, start of a header


class MemPort:
    """A network stack in memory: frames it "sends" are read by venet, frames written kept."""

    def __init__(self, name: str, *, vnet_hdr: bool, mtu: int = 1500) -> None:
        self.name = name
        self.vnet_hdr = vnet_hdr
        self.mtu = mtu
        self.outgoing: deque[bytes] = deque()
        self.delivered: list[bytes] = []
        self.carrier: bool | None = None
        #: every carrier change, in order
        self.carriers: list[bool] = []
        self.offloads: Offloads | None = None
        self._on_readable: Callable[[], None] | None = None
        self._armed = True

    def send(self, *frames: bytes) -> None:
        """The stack sends frames; venet is told once, as a real port's watcher would."""
        self.outgoing.extend(frames)
        if self._armed and self._on_readable is not None:
            self._armed = False
            self._on_readable()

    # -- NetPort --
    def read_frame(self) -> bytes | None:
        if self.outgoing:
            return self.outgoing.popleft()
        self._armed = True
        return None

    def write_frame(self, frame: bytes) -> bool:
        self.delivered.append(bytes(frame))
        return True

    def connect(self, on_readable: Callable[[], None]) -> None:
        self._on_readable = on_readable

    def set_carrier(self, on: bool) -> None:
        if on != self.carrier:
            self.carriers.append(on)
        self.carrier = on

    def set_offloads(self, offloads: Offloads) -> None:
        self.offloads = offloads


class Rig:
    """A board with a network device and a host with its driver, over a simulated line."""

    def __init__(
        self,
        *,
        board_vnet: bool = True,
        host_vnet: bool = True,
        mtu: int = 1500,
        faults: LineFaults = CLEAN,
        policy: FeaturePolicy | None = None,
        seed: int = 0,
        bus_version_max: int = BUS_VERSION_MAX,
        driver_config: NetDriverConfig | None = None,
        paced: bool = False,
    ) -> None:
        """``paced``: the device paces itself by the board link's backlog, as the board
        runtime has it do (``ira.runtime.backlog``)."""
        self.board_port = MemPort("board", vnet_hdr=board_vnet, mtu=mtu)
        self.host_port = MemPort("host", vnet_hdr=host_vnet)
        self.driver_config = driver_config
        self.opened: list[InterfaceSettings] = []
        self.clients: list[VirtioNetClient] = []
        rng = random.Random(seed)
        a = Link(LinkConfig(), rng=random.Random(rng.getrandbits(64)), now=0.0)
        b = Link(LinkConfig(), rng=random.Random(rng.getrandbits(64)), now=0.0)
        self.pair = LinkPair(a, b, faults, rng)
        self.pair.on_event = self._link_event
        self.backlog = LinkBacklog(a, clock=lambda: self.pair.now) if paced else None
        self.device = VirtioNetDevice(MAC, port=self.board_port, pacing=self.backlog)
        self.driver = VirtioHostDriver({NET_ID: self._client}, policy=policy)
        registry = DriverRegistry()
        registry.register(VIRTIO_TYPE, self.driver)
        self.board = Connector()
        self.device_id = self.board.add_device(self.device, now=0.0)
        self.host = Bus(BusConfig(version_max=bus_version_max), drivers=registry)
        #: SIGNALs (either way) lost on purpose from now on; counted here
        self.drop_signals = False
        self.signals_dropped = 0
        #: WINDOW messages seen with MORE (a flush split in several), counted while dropping
        self.split_messages = 0
        #: the messages the host sends, kept when a list is put here
        self.host_sent: list[bytes] | None = None
        self.removed = 0

    def _client(self) -> VirtioNetClient:
        def open_port(settings: InterfaceSettings) -> MemPort:
            self.opened.append(settings)
            self.host_port.mtu = settings.mtu
            return self.host_port

        client = VirtioNetClient(
            open_port, vnet_hdr=self.host_port.vnet_hdr, config=self.driver_config
        )
        self.clients.append(client)
        return client

    @property
    def client(self) -> VirtioNetClient:
        return self.clients[-1]

    @property
    def binding(self) -> VirtioBinding:
        (binding,) = self.driver.bindings.values()
        return binding

    def _link_event(self, side: str, ev: LinkEvent) -> None:
        core = self.board if side == "a" else self.host
        core.handle_link_event(ev, now=self.pair.now)

    def _passes(self, data: bytes) -> bool:
        if not self.drop_signals:
            return True
        msg = decode(data)
        if isinstance(msg, SignalNotify):
            self.signals_dropped += 1
            return False
        # a flush split over several messages (MORE), alone or in a WINDOWS (bus v4)
        updates = msg.updates if isinstance(msg, WindowBatch) else (msg,)
        self.split_messages += any(isinstance(u, WindowUpdate) and u.more for u in updates)
        return True

    def _flush(self) -> None:
        moved = True
        while moved:
            moved = False
            if self.backlog is not None:
                self.backlog.poll()
            for channel, data in self.board.messages_to_send():
                if self._passes(data):
                    self.pair.a.send_message(data, channel)
                    if self.backlog is not None:
                        self.backlog.handed(len(data))
                moved = True
            for channel, data in self.host.messages_to_send():
                if self.host_sent is not None:
                    self.host_sent.append(data)
                if self._passes(data):
                    self.pair.b.send_message(data, channel)
                moved = True
            while (ev := self.host.next_event()) is not None:
                self.removed += isinstance(ev, DeviceRemoved)
            while self.board.next_event() is not None:
                pass

    def run_until(self, condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
        limit = self.pair.now + timeout_s
        while not condition():
            self._flush()
            if self.pair.now > limit or not self.pair.step():
                return condition()
            for core in (self.board, self.host):
                deadline = core.next_deadline()
                if deadline is not None and deadline <= self.pair.now:
                    core.handle_timeout(now=self.pair.now)
            self._flush()
        self._flush()
        return True

    def ready(self) -> Rig:
        assert self.run_until(lambda: bool(self.clients) and self.client.carrier), [
            b.reason for b in self.driver.bindings.values()
        ]
        return self

    def accepted(self) -> int:
        negotiation = self.binding.negotiation
        assert negotiation is not None
        return negotiation.accepted


def frame(payload: bytes, hdr: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0)) -> bytes:
    return HEADER.pack(*hdr) + ETH + payload


def tcp_gso_frame(size: int) -> bytes:
    """A TCP/IPv4 GSO segment: partial checksum, MSS 1448."""
    hdr = (int(HdrFlags.NEEDS_CSUM), int(GsoType.TCPV4), 66, 1448, 34, 16, 0)
    return frame(bytes(random.Random(size).randbytes(size)), hdr)


def bare(f: bytes) -> bytes:
    return f[VNET_HDR_BYTES:]


# -- negotiation and configuration ------------------------------------------------------


def test_features_offloads_and_interface_settings() -> None:
    rig = Rig().ready()
    accepted = rig.accepted()
    for feature in (F.MAC, F.MTU, F.STATUS, F.MRG_RXBUF):
        assert accepted & feature.mask
    assert accepted & OFFLOADS == OFFLOADS
    assert rig.opened == [InterfaceSettings(MAC, 1500)]
    everything = Offloads(csum=True, tso4=True, tso6=True, ecn=True)
    assert rig.board_port.offloads == everything  # what the board's stack may hand over
    assert rig.host_port.offloads == everything
    assert rig.board_port.carrier and rig.host_port.carrier


@pytest.mark.parametrize(("board_vnet", "host_vnet"), [(False, True), (True, False)])
def test_offloads_only_when_both_ends_carry_headers(board_vnet: bool, host_vnet: bool) -> None:
    rig = Rig(board_vnet=board_vnet, host_vnet=host_vnet).ready()
    assert rig.accepted() & OFFLOADS == 0
    assert rig.accepted() & F.MRG_RXBUF.mask
    vnet_port = rig.board_port if board_vnet else rig.host_port
    assert vnet_port.offloads == Offloads()


def test_a_feature_set_breaking_the_dependencies_is_refused() -> None:
    """§5.1.3.1: GUEST_TSO4 without GUEST_CSUM; the device refuses FEATURES_OK."""
    assert not features_consistent(F.GUEST_TSO4.mask)
    assert features_consistent(F.GUEST_TSO4.mask | F.GUEST_CSUM.mask)
    policy = FeaturePolicy(allowed=~F.GUEST_CSUM.mask)
    rig = Rig(policy=policy)
    assert rig.run_until(
        lambda: any(b.state is BindingState.FAILED for b in rig.driver.bindings.values())
    )
    assert rig.binding.reason == "the device refused the features"
    assert not rig.host_port.carrier


def test_mtu_9000_is_the_interfaces_and_bounds_plain_frames() -> None:
    rig = Rig(mtu=9000).ready()
    assert rig.opened == [InterfaceSettings(MAC, 9000)]
    fits, too_big = frame(bytes(9000)), frame(bytes(9000 + 4 + 1))  # 4: a VLAN tag
    rig.board_port.send(fits, too_big)
    rig.host_port.send(fits, too_big)
    assert rig.run_until(lambda: rig.board_port.delivered and rig.host_port.delivered)
    rig.run_until(lambda: False, timeout_s=0.5)
    assert rig.host_port.delivered == [fits] and rig.board_port.delivered == [fits]
    assert rig.device.net_statistics().rx.dropped[Drop.OVERSIZE] == 1
    assert rig.client.statistics().tx.dropped[Drop.OVERSIZE] == 1


def test_without_the_mtu_feature_the_driver_assumes_1500() -> None:
    rig = Rig(mtu=9000, policy=FeaturePolicy(allowed=~F.MTU.mask)).ready()
    assert rig.opened == [InterfaceSettings(MAC, 1500)]


# -- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(("board_vnet", "host_vnet"), [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize(("faults", "seed"), [(CLEAN, 0), (NOISY, 1)])
@pytest.mark.parametrize("delta", [True, False], ids=["delta", "plain"])
def test_frames_cross_both_ways_in_order(
    board_vnet: bool, host_vnet: bool, faults: LineFaults, seed: int, delta: bool
) -> None:
    policy = None if delta else NO_DELTA
    rig = Rig(board_vnet=board_vnet, host_vnet=host_vnet, faults=faults, seed=seed, policy=policy)
    rig.ready()
    assert bool(rig.accepted() & HDR_DELTA) is delta
    rng = random.Random(seed)
    up = [frame(rng.randbytes(rng.randrange(46, 1500))) for _ in range(300)]
    down = [frame(rng.randbytes(rng.randrange(46, 1500))) for _ in range(300)]
    rig.board_port.send(*(f if board_vnet else bare(f) for f in up))
    rig.host_port.send(*(f if host_vnet else bare(f) for f in down))
    assert rig.run_until(
        lambda: len(rig.host_port.delivered) == 300 and len(rig.board_port.delivered) == 300,
        timeout_s=120.0,
    )
    assert rig.host_port.delivered == [f if host_vnet else bare(f) for f in up]
    assert rig.board_port.delivered == [f if board_vnet else bare(f) for f in down]
    assert rig.device.net_statistics().rx.frames == rig.client.statistics().rx.frames == 300


def test_frames_flow_on_ring_updates_alone_when_no_signal_arrives() -> None:
    """Every SIGNAL lost after DRIVER_OK: each side still runs its queues as soon as the
    peer's flush of a ring window is all in its replica (bus v2), never before, and frames
    cross both ways, in order, without a queue breaking."""
    rig = Rig().ready()
    rig.drop_signals = True
    rng = random.Random(7)
    up = [frame(rng.randbytes(rng.randrange(46, 1500))) for _ in range(300)]
    down = [frame(rng.randbytes(rng.randrange(46, 1500))) for _ in range(300)]
    down.insert(150, tcp_gso_frame(65000))  # a data flush in two messages
    rig.board_port.send(*up)
    rig.host_port.send(*down)
    assert rig.run_until(
        lambda: len(rig.host_port.delivered) == 300 and len(rig.board_port.delivered) == 301,
        timeout_s=120.0,
    )
    assert rig.host_port.delivered == up and rig.board_port.delivered == down
    assert rig.signals_dropped > 0 and rig.split_messages > 0
    stats = rig.device.statistics()
    assert stats.ring_update_runs > 0
    assert stats.needs_reset == 0 and not stats.queue_broken
    assert rig.binding.state is BindingState.READY and rig.removed == 0


def test_a_version_1_bus_still_waits_for_signals() -> None:
    """The same loss with a v1 host: nothing says where a flush ends, so nothing runs a
    queue but a SIGNAL, and frames stop once the SIGNALs are gone."""
    rig = Rig(bus_version_max=1).ready()
    assert rig.host.version == 1
    rig.drop_signals = True
    rig.host_port.send(*(frame(bytes([i]) * 100) for i in range(20)))
    rig.run_until(lambda: len(rig.board_port.delivered) == 20, timeout_s=10.0)
    assert len(rig.board_port.delivered) < 20
    assert rig.split_messages == 0 and rig.device.statistics().ring_update_runs == 0


@pytest.mark.parametrize("mergeable", [True, False], ids=["mrg_rxbuf", "big-buffers"])
@pytest.mark.parametrize("delta", [True, False], ids=["delta", "plain"])
def test_gso_segments_cross_whole(mergeable: bool, delta: bool) -> None:
    masked = (0 if mergeable else F.MRG_RXBUF.mask) | (0 if delta else HDR_DELTA)
    rig = Rig(policy=FeaturePolicy(allowed=~masked)).ready()
    assert bool(rig.accepted() & F.MRG_RXBUF.mask) is mergeable
    assert bool(rig.accepted() & HDR_DELTA) is delta
    segments = [tcp_gso_frame(n) for n in (65000, 100, 30000, 65483)]
    rig.board_port.send(*segments)
    rig.host_port.send(*segments)
    assert rig.run_until(
        lambda: len(rig.host_port.delivered) == 4 and len(rig.board_port.delivered) == 4
    )
    assert rig.host_port.delivered == segments  # num_buffers back to 0 for the stack
    assert rig.board_port.delivered == segments
    if mergeable:  # a 64 KiB segment takes 16 or 17 pages
        pages = sum(-(-len(s) // 4096) for s in segments)
        assert queue_statistics(rig.device.statistics(), 0).chains_pushed == pages == 41


@pytest.mark.parametrize("mergeable", [True, False], ids=["mrg_rxbuf", "big-buffers"])
def test_the_smallest_receive_window_still_takes_a_stream_of_gso_segments(
    mergeable: bool,
) -> None:
    """128 KiB of receive buffers (the least allowed): 32 pages, and a 64 KiB segment
    takes 17 of them: a device short of buffers holds at most 16 for the segment it is
    writing, so the other 16 must be enough for the driver to offer them again."""
    policy = None if mergeable else FeaturePolicy(allowed=~F.MRG_RXBUF.mask)
    config = NetDriverConfig(rx_window_bytes=128 * 1024)
    rig = Rig(policy=policy, driver_config=config).ready()
    segments = [tcp_gso_frame(65483 - n) for n in range(12)]
    rig.board_port.send(*segments)
    assert rig.run_until(lambda: len(rig.host_port.delivered) == len(segments))
    assert rig.host_port.delivered == segments


def test_a_receive_slot_holds_the_longest_compressed_frame() -> None:
    """Without MRG_RXBUF each receive slot holds the longest frame; compressed, a frame
    may be up to MAX_OVERHEAD bytes longer (here 8,192 bytes become 8,194)."""
    masked = F.MRG_RXBUF.mask | GUEST_OFFLOADS
    rig = Rig(mtu=8162, policy=FeaturePolicy(allowed=~masked)).ready()
    longest = frame(bytes(8192 - 28))  # 12 + 14 + 4 + 8162 bytes: the MTU with a VLAN tag
    assert len(longest) == 8192
    rig.board_port.send(longest)
    assert rig.run_until(lambda: rig.host_port.delivered == [longest])
    assert Drop.BUFFER_TOO_SMALL not in rig.device.net_statistics().rx.dropped


def test_a_backlog_waits_in_the_port_and_nothing_is_lost() -> None:
    """More frames than receive buffers and the flow queue hold: the device leaves the
    rest in the port."""
    rig = Rig().ready()
    frames = [frame(struct.pack(">I", i) + bytes(1400)) for i in range(2000)]
    rig.board_port.send(*frames)
    # read only as far as the buffers and the flow queue allow
    assert len(rig.board_port.outgoing) >= 2000 - LIMIT_FRAMES - QUEUE_SIZE
    assert rig.run_until(lambda: len(rig.host_port.delivered) == 2000, timeout_s=120.0)
    assert rig.host_port.delivered == frames
    stats = rig.device.net_statistics()
    assert stats.rx.waits > 0
    assert not stats.rx.dropped


def test_the_driver_bounds_its_bytes_in_flight() -> None:
    rig = Rig().ready()
    rig.host_port.send(*(tcp_gso_frame(60000) for _ in range(40)))
    limit = rig.client.config.tx_inflight_bytes
    stats = rig.client.statistics()
    assert stats.tx_inflight_bytes <= limit
    # the rest waits in the driver's flow queue (taken from the port, to be scheduled)
    assert stats.tx_queued_frames > 30 and not rig.host_port.outgoing
    assert rig.run_until(lambda: len(rig.board_port.delivered) == 40)
    assert rig.client.statistics().tx_queued_frames == 0


def _tcp_frame(sport: int, seq: int, size: int = 1400) -> bytes:
    """A plain TCP/IPv4 frame of flow ``sport``, numbered ``seq``."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 4 + size, 0, 0, 64, 6, 0,
                     bytes((10, 0, 0, 2)), bytes((10, 0, 0, 1)))  # fmt: skip
    return (
        HEADER.pack(0, 0, 0, 0, 0, 0, 0)
        + ETH[:12]
        + b"\x08\x00"
        + ip
        + struct.pack("!HH", sport, 5201)
        + seq.to_bytes(4, "big")
        + bytes(size - 4)
    )


def test_on_a_slow_line_a_sparse_flow_waits_behind_what_is_in_flight_not_the_backlog() -> None:
    """At 115200 baud the driver keeps only two frames out (the one on the line and
    one more) and the rest in its flow queue: a frame of another flow goes after
    those, not after the whole backlog (which took ~3 s a frame at a time).  The
    backlog of the bulk flow waits seconds: CoDel drops from it (and counts)."""
    rig = Rig(faults=LineFaults(bytes_per_s=11_520.0, latency_s=0.002)).ready()
    bulk = [_tcp_frame(40000, i) for i in range(46)]
    # the sender's stack hands over two frames per frame delivered (TCP's ACK clock in
    # slow start) until a backlog has built up
    for i in range(0, 40, 2):
        rig.host_port.send(bulk[i], bulk[i + 1])
        assert rig.run_until(lambda: len(rig.board_port.delivered) >= i // 2, timeout_s=20.0)  # noqa: B023
    rig.host_port.send(*bulk[40:])
    stats = rig.client.statistics()
    least = 2 * (VNET_HDR_BYTES + 18 + 1500)
    assert stats.tx_inflight_limit == least  # measured: 0.05 s of 11.5 kB/s is less
    assert stats.tx_inflight_bytes <= least and stats.tx_queued_frames > 20
    sent_at = len(rig.board_port.delivered)
    sparse = _tcp_frame(40001, 0, size=60)
    rig.host_port.send(sparse)
    assert rig.run_until(lambda: sparse in rig.board_port.delivered, timeout_s=20.0)
    ahead = rig.board_port.delivered.index(sparse) - sent_at
    assert ahead <= 3  # what was out (2 frames) and the bulk flow's turn

    def codel() -> int:
        return rig.client.statistics().tx.dropped[Drop.CODEL]

    assert rig.run_until(lambda: len(rig.board_port.delivered) + codel() == 47, timeout_s=60.0)
    assert codel() > 0 and sparse in rig.board_port.delivered
    # the rest of the bulk flow in order, none twice, only CoDel's drops missing
    got = [f for f in rig.board_port.delivered if f != sparse]
    assert got == [f for f in bulk if f in got] and len(got) == len(bulk) - codel()


@pytest.mark.parametrize("bus_version", [1, BUS_VERSION_MAX])
def test_a_steady_stream_costs_no_signal_per_frame(bus_version: int) -> None:
    """Sent frames are reclaimed at the next pull and receive buffers are read when a
    frame comes, so neither the device's used notifications of the transmitq nor the
    driver's refill notifications of the receiveq (nor their answers) go per frame; with
    bus v2, whose ring updates are announced, not even the receiveq's notifications."""
    rig = Rig(bus_version_max=bus_version).ready()
    stats = rig.board.statistics, rig.host.statistics
    before_board = stats[0]().sent.get(SignalNotify, 0)
    before_host = stats[1]().sent.get(SignalState, 0)
    down = [frame(struct.pack(">I", i) + bytes(1400)) for i in range(100)]
    up = [frame(struct.pack(">I", i) + bytes(40)) for i in range(100)]
    for d, u in zip(down, up, strict=True):  # one frame each way at a time, like TCP
        rig.host_port.send(d)
        assert rig.run_until(lambda: rig.board_port.delivered[-1:] == [d])  # noqa: B023
        rig.board_port.send(u)
        assert rig.run_until(lambda: rig.host_port.delivered[-1:] == [u])  # noqa: B023
    assert rig.board_port.delivered == down and rig.host_port.delivered == up
    board_signals = stats[0]().sent.get(SignalNotify, 0) - before_board
    host_answers = stats[1]().sent.get(SignalState, 0) - before_host
    if bus_version == 1:  # one SIGNAL per receiveq frame to the host (and its answer)
        assert 90 <= board_signals < 110 and 90 <= host_answers < 110
    else:  # one SIGNAL per queue at most, which waits unanswered
        assert board_signals <= 2 and host_answers == 0
    assert rig.client.statistics().tx_inflight_bytes < 2 * len(down[0])


@pytest.mark.parametrize("down", [True, False], ids=["to-board", "to-host"])
def test_header_delta_takes_most_header_bytes_off_the_line(down: bool) -> None:
    """A TCP stream one segment at a time (as TCP clocks it): with IRA_HDR_DELTA the
    78 bytes of virtio-net, Ethernet, IP and TCP headers cross as ~25."""
    sent: dict[bool, int] = {}
    segments = [tcp4(40000, 1448 * i, i // 3, bytes(200), ipid=i) for i in range(100)]
    for delta in (True, False):
        rig = Rig(policy=None if delta else NO_DELTA).ready()
        src, dst = (rig.host_port, rig.board_port) if down else (rig.board_port, rig.host_port)
        link = rig.pair.b if down else rig.pair.a
        before = link.statistics().wire_bytes_sent
        for segment in segments:
            src.send(segment)
            assert rig.run_until(lambda: dst.delivered[-1:] == [segment])  # noqa: B023
        assert dst.delivered == segments
        sent[delta] = link.statistics().wire_bytes_sent - before
        compressed = (
            rig.client.statistics().tx.delta if down else rig.device.net_statistics().rx.delta
        )
        assert compressed.frames[Kind.DELTA] == (98 if delta else 0)
    assert (sent[False] - sent[True]) / len(segments) >= 50, sent


def test_a_compressed_frame_that_cannot_be_decoded_is_dropped_and_counted() -> None:
    """A DELTA on a context the device never saw (a driver gone wrong): dropped, counted,
    the device stays live and the flows go on."""
    rig = Rig().ready()
    crossing(rig)
    binding = rig.binding
    window = binding.windows["tx"]
    bogus = bytes.fromhex("2a1a0101000000ff") + bytes(60)  # DELTA, context 10
    at = rig.client._fifo.alloc(len(bogus))  # room the driver returns when the chain is used
    assert at is not None
    window.write(at, bogus)
    binding.queues[TX_QUEUE].add([Buffer.at(window.window_id, at, len(bogus))], [], at)
    binding.kick(TX_QUEUE)
    rig.run_until(lambda: rig.device.net_statistics().tx.dropped[Drop.BAD_DELTA] == 1)
    assert rig.device.net_statistics().tx.dropped[Drop.BAD_DELTA] == 1
    assert rig.device.live and binding.state is BindingState.READY
    crossing(rig)
    crossing(rig, 1400)


def test_receive_buffers_are_offered_again_in_batches() -> None:
    """Used receive buffers go back to the device once half of them have come back, not
    one by one: toward the board, the host sends no ring update per frame it receives."""
    rig = Rig().ready()
    rig.host_sent = []
    up = [frame(struct.pack(">I", i) + bytes(40)) for i in range(200)]
    waits = None
    for u in up:  # one at a time, each read before the next is sent
        rig.board_port.send(u)
        assert rig.run_until(lambda: rig.host_port.delivered[-1:] == [u])  # noqa: B023
        if waits is None:  # (the first frame may come before the device saw the buffers)
            waits = rig.device.net_statistics().rx.waits
    assert rig.host_port.delivered == up
    refills = [m for m in map(decode, rig.host_sent) if isinstance(m, WindowUpdate | WindowBatch)]
    # 128 buffers of 4 KiB (the 512 KiB window): offered again 64 at a time
    assert 3 <= len(refills) <= 4, len(refills)
    assert rig.device.net_statistics().rx.waits == waits  # never short of buffers


def test_a_stream_of_one_frame_size_leaves_the_descriptors_as_they_were() -> None:
    """Frames take the tx window in 2 KiB units, in the order the queue hands out its
    descriptors: after a lap of the ring descriptor i points where it pointed before,
    so handing the device a frame sends only the avail ring's bytes."""
    rig = Rig().ready()
    down = [frame(bytes(1400) + struct.pack(">I", i)) for i in range(2 * QUEUE_SIZE + 100)]
    for i, d in enumerate(down):
        if i == 2 * QUEUE_SIZE:
            rig.host_sent = []
        rig.host_port.send(d)
        assert rig.run_until(lambda: rig.board_port.delivered[-1:] == [d])  # noqa: B023
    assert rig.board_port.delivered == down
    messages = list(map(decode, rig.host_sent))
    batched = [u for m in messages if isinstance(m, WindowBatch) for u in m.updates]
    updates = [m for m in messages if isinstance(m, WindowUpdate)] + batched
    ring = [m for m in updates if all(len(span.data) < 64 for span in m.spans)]
    assert len(ring) >= 50  # one publish per frame or so
    assert not [s for m in ring for s in m.spans if s.offset < 16 * QUEUE_SIZE]  # descriptors


# -- malformed frames ---------------------------------------------------------------------

NEEDS_CSUM = int(HdrFlags.NEEDS_CSUM)
TCPV4 = int(GsoType.TCPV4)
#: frames that pass a sender's own checks (offloads agreed) and fail the receiver's
MALFORMED = [
    (Drop.BAD_GSO, frame(bytes(60), (0, TCPV4, 54, 1448, 34, 16, 0))),
    (Drop.BAD_GSO, frame(bytes(60), (NEEDS_CSUM, TCPV4, 54, 0, 34, 16, 0))),
    (Drop.BAD_HDR_LEN, frame(bytes(60), (0, 0, 200, 0, 0, 0, 0))),
    (Drop.BAD_CSUM, frame(bytes(60), (NEEDS_CSUM, 0, 0, 0, 70, 30, 0))),
]
#: frames a sender refuses to send at all
REFUSED = [
    (Drop.TRUNCATED, bytes(VNET_HDR_BYTES + 13)),
    (Drop.BAD_FLAGS, frame(bytes(60), (0x04, 0, 0, 0, 0, 0, 0))),
    (Drop.BAD_GSO_TYPE, frame(bytes(60), (NEEDS_CSUM, 3, 42, 1448, 34, 6, 0))),
]


def queue_statistics(stats: DeviceStatistics, index: int) -> DeviceRingStatistics:
    queue = stats.queues[index]
    assert queue is not None, f"queue {index} is not set up"
    return queue


def _counts(dropped: Mapping[Drop, int]) -> dict[str, int]:
    return {reason.value: n for reason, n in dropped.items() if n}


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "plain"])
def test_malformed_frames_are_dropped_counted_and_the_link_stays_up(delta: bool) -> None:
    rig = Rig(policy=None if delta else NO_DELTA).ready()
    good = frame(b"after the bad ones" + bytes(40))
    bad = [f for _, f in MALFORMED + REFUSED]
    rig.board_port.send(*bad, good)
    rig.host_port.send(*bad, good)
    assert rig.run_until(lambda: rig.host_port.delivered and rig.board_port.delivered)
    assert rig.host_port.delivered == [good] and rig.board_port.delivered == [good]
    expected_rx: dict[str, int] = {}
    for reason, _ in MALFORMED:
        expected_rx[reason.value] = expected_rx.get(reason.value, 0) + 1
    refused = {reason.value: 1 for reason, _ in REFUSED}
    # board -> host: the device refuses some, the driver drops the rest
    assert _counts(rig.device.net_statistics().rx.dropped) == refused
    assert _counts(rig.client.statistics().rx.dropped) == expected_rx
    # host -> board: the driver refuses some, the device drops the rest
    assert _counts(rig.client.statistics().tx.dropped) == refused
    assert _counts(rig.device.net_statistics().tx.dropped) == expected_rx
    assert rig.device.live and rig.client.carrier and rig.board_port.carrier


def test_offloads_not_agreed_are_refused_by_the_sender() -> None:
    """GUEST_* masked: the board's stack may not hand the driver partial checksums or GSO."""
    rig = Rig(policy=FeaturePolicy(allowed=~GUEST_OFFLOADS)).ready()
    assert rig.board_port.offloads == Offloads()
    partial = frame(bytes(60), (NEEDS_CSUM, 0, 0, 0, 34, 16, 0))
    rig.board_port.send(partial, tcp_gso_frame(3000), frame(bytes(60)))
    assert rig.run_until(lambda: len(rig.host_port.delivered) == 1)
    assert _counts(rig.device.net_statistics().rx.dropped) == {"bad_flags": 2}
    # the other direction keeps its offloads
    rig.host_port.send(tcp_gso_frame(3000))
    assert rig.run_until(lambda: len(rig.board_port.delivered) == 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=20))
def test_whatever_the_stack_hands_over_only_frames_or_counts_come_out(
    junk: list[bytes],
) -> None:
    rig = Rig().ready()
    rig.board_port.send(*junk)
    rig.host_port.send(*junk)
    rig.run_until(lambda: False, timeout_s=1.0)
    rx = rig.client.statistics().rx.frames
    tx = rig.device.net_statistics().tx.frames
    assert rx == len(rig.host_port.delivered) and tx == len(rig.board_port.delivered)
    dropped = sum(_counts(rig.device.net_statistics().rx.dropped).values()) + sum(
        _counts(rig.client.statistics().rx.dropped).values()
    )
    assert rx + dropped == len(junk)
    assert rig.device.live and rig.client.carrier


# -- carrier, status, hotswap ------------------------------------------------------------


def test_link_status_follows_the_port() -> None:
    rig = Rig().ready()
    rig.device.detach_port()  # no network behind the device: LINK_UP cleared
    assert rig.run_until(lambda: not rig.host_port.carrier)
    assert rig.client.is_ready
    rig.device.attach_port(rig.board_port)
    assert rig.run_until(lambda: bool(rig.host_port.carrier))
    rig.board_port.send(frame(bytes(50)))
    assert rig.run_until(lambda: len(rig.host_port.delivered) == 1)


def test_carrier_goes_with_the_device_and_comes_back_with_a_new_one() -> None:
    rig = Rig().ready()
    rig.board.remove_device(rig.device_id, now=rig.pair.now)
    assert rig.run_until(lambda: rig.removed == 1)
    assert rig.host_port.carrier is False
    assert rig.board_port.carrier is False  # nobody drives the device
    again = VirtioNetDevice(MAC, port=rig.board_port)
    rig.board.add_device(again, now=rig.pair.now)
    assert rig.run_until(lambda: len(rig.clients) == 2 and rig.clients[1].carrier)
    assert rig.host_port.carrier and rig.board_port.carrier
    rig.board_port.send(frame(b"hello again" + bytes(40)))
    assert rig.run_until(lambda: len(rig.host_port.delivered) == 1)


# -- resets and MTU changes ---------------------------------------------------------------


def crossing(rig: Rig, size: int = 50) -> None:
    """A frame goes each way."""
    before = len(rig.host_port.delivered), len(rig.board_port.delivered)
    rig.board_port.send(frame(b"to host" + bytes(size)))
    rig.host_port.send(frame(b"to board" + bytes(size)))
    assert rig.run_until(
        lambda: (
            (len(rig.host_port.delivered), len(rig.board_port.delivered))
            == (before[0] + 1, before[1] + 1)
        )
    )
    assert rig.host_port.delivered[-1] == frame(b"to host" + bytes(size))
    assert rig.board_port.delivered[-1] == frame(b"to board" + bytes(size))


def test_a_malformed_chain_resets_the_device_and_traffic_flows_again() -> None:
    rig = Rig().ready()
    crossing(rig)
    binding = rig.binding
    window = binding.windows["tx"]
    # a frame that ends past its window: the device must refuse the chain
    binding.queues[TX_QUEUE].add([Buffer.at(window.window_id, window.size_bytes - 8, 64)], [], 0)
    binding.kick(TX_QUEUE)
    assert rig.run_until(lambda: binding.state is BindingState.NEEDS_RESET)
    assert rig.host_port.carrier is False
    assert rig.run_until(lambda: binding.state is BindingState.READY)
    assert (binding.failures, binding.resets) == (1, 1)
    assert rig.host_port.carriers == [True, False, True]
    assert rig.board_port.carriers == [False, True, False, True]  # (off until the first host)
    stats = rig.device.statistics()
    assert stats.queue_broken[Fault.OUT_OF_WINDOW] == 1 and stats.resets == 1
    assert len(rig.clients) == 1 and rig.client.statistics().device_resets == 1
    crossing(rig)
    crossing(rig, 1400)


def test_an_mtu_change_reaches_the_host_through_a_reset() -> None:
    rig = Rig().ready()
    assert rig.host_port.mtu == 1500
    rig.device.set_mtu(9000)  # e.g. the board's interface was given a new MTU
    assert rig.run_until(lambda: rig.binding.resets == 1 and rig.client.carrier)
    assert [s.mtu for s in rig.opened] == [1500, 9000]
    assert rig.host_port.mtu == 9000 and rig.binding.failures == 0
    # the new generation is seen first (the DEVICE_NEEDS_RESET just after it): no failure
    assert rig.binding.reason == "the device's MTU changed from 1500 to 9000"
    assert rig.device.statistics().needs_reset == 1
    crossing(rig, 8900)  # frames of the new MTU cross both ways
    rig.device.set_mtu(9000)  # no change: nothing happens
    rig.run_until(lambda: False, timeout_s=2.0)
    assert rig.binding.resets == 1


def test_an_mtu_changed_under_the_driver_is_taken_up_by_a_reset() -> None:
    """A device that changes ``mtu`` without asking for a reset (which §5.1.4.1 forbids):
    the driver sees the generation move and resets the device itself."""
    rig = Rig().ready()
    rig.device.set_config(10, (4000).to_bytes(2, "little"))
    assert rig.run_until(lambda: rig.binding.resets == 1 and rig.client.carrier)
    assert rig.opened[-1].mtu == 4000 and rig.host_port.mtu == 4000
    assert rig.binding.failures == 0
    assert rig.binding.reason == "the device's MTU changed from 1500 to 4000"


def test_the_generated_mac_is_stable_unicast_and_local() -> None:
    mac = generated_mac("bb-1", "net0")
    assert mac == generated_mac("bb-1", "net0") != generated_mac("bb-2", "net0")
    assert mac[0] & 0x03 == 0x02


# -- the tx window ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 70000), st.integers(0, 64)), max_size=200),
    st.sampled_from([1, 2048]),
)
def test_the_tx_fifo_never_overlaps(ops: list[tuple[bool, int, int]], unit: int) -> None:
    fifo = TxFifo(256 * 1024, unit)
    live: dict[int, int] = {}
    for alloc, length, pick in ops:
        if alloc or not live:
            start = fifo.alloc(length)
            if start is None:
                assert live or length > fifo.size_bytes
                continue
            assert start >= 0 and start + length <= fifo.size_bytes and start % unit == 0
            for other, size in live.items():
                units, others = (start, start + length - 1), (other, other + size - 1)
                assert units[1] // unit < others[0] // unit or others[1] // unit < units[0] // unit
            live[start] = length
        else:
            start = sorted(live)[pick % len(live)]
            fifo.free(start)
            del live[start]
        assert fifo.used_bytes == sum(live.values())
    for start in list(live):
        fifo.free(start)
    assert fifo.used_bytes == 0 and fifo.alloc(fifo.size_bytes) == 0
