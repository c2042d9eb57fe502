"""virtio-net, the host's side: the driver of a network device (virtio 1.2 §5.1.5-§5.1.6).

Sans-I/O: ``VirtioNetClient`` is a ``VirtioClient`` (``ira.virtio.host``); it
runs on the thread that owns the host's bus and moves frames between the
device's queues and a ``NetPort`` that it asks for once the device is ready.

Theory of operation
-------------------

*Initialisation*: the binding negotiates features (offloads only when the
port will carry virtio-net headers) and reads the configuration space.  At
DRIVER_OK the client opens its port with the device's MAC and MTU
(``open_port(InterfaceSettings)``: the host's interface appears when the
device is discovered), tells it which offloads it may hand over (what the
device accepted: CSUM, HOST_TSO4/6, HOST_ECN), offers receive buffers and
starts taking frames.

*Memory*: two data windows.  ``rx`` is the device's to write, cut into
fixed slots: 4 KiB pages with MRG_RXBUF (a frame takes as many as it needs,
``num_buffers`` says how many), else slots that hold the largest frame the
device may send.  ``tx`` is the driver's, used as a FIFO of 2 KiB units:
each frame is written whole at the next free unit, one descriptor per
frame, and the space comes back when the device returns the chain (in units,
a stream of like frames lands where the same descriptor put it a lap
before, so the descriptor's bytes need not cross again).

*transmitq*: the port is read as frames come, into a queue per flow
(``ira.venet.flowqueue``: fq_codel, its CoDel times scaled to the rate the
device returns frames at); frames go to the device, the flows taking turns,
while the bytes in flight stay under a limit in the line's time: one full frame
and 0.05 s of that rate, at least two full frames, at most ``tx_inflight_bytes``.
So on a slow link the backlog waits here, where a ping or a keystroke can pass
it, not in the link's queue (a TAP never holds it back: it takes each packet off
its queue discipline at once).  Used tx buffers are
reclaimed at each pull and, while frames are out, at each of the device's
flushes of its used ring (bus v2 announces them, ``ring_updated``: no
notification, no link bytes); with a v1 board the device's notifications are
asked for while a frame waits for room (like Linux's virtio-net, which frees
old transmit buffers on the next transmit).  Frames still queued when the
device is reset are dropped and counted (``tx_dropped_reset``), as are those a
full queue drops from its fattest flow (``tx_dropped_queue_full``) and those
CoDel drops (``tx_dropped_codel``).

*receiveq*: a frame is reassembled from its buffers (``num_buffers`` is
checked against what is outstanding), checked whole (``check_received``:
the wire's checks under the negotiated offloads and MTU; malformed frames
are dropped and counted by reason, ``rx_dropped_<reason>``) and handed to
the port.  The buffers are offered again once half of them have come back
(as Linux's virtio-net refills): the device always has at least half, and a
ring update per received frame would cost bytes toward the board each time.

*Header compression* (IRA_HDR_DELTA, ira's own feature, accepted unless
``NetDriverConfig.header_delta`` is off): frames go into the tx window
encoded against the previous frame of their flow (``ira.venet.delta``), at
the moment they take their place in the queue, and every frame from the
receiveq is decoded before it is checked; one that cannot be is dropped and
counted (``rx_dropped_bad_delta``).  ``num_buffers`` then travels in the
compressed frame's own head.

*Carrier*: the interface has carrier while the device is ready and its
STATUS says LINK_UP (the port also drops it while the link is down,
``ira.runtime.network``); it loses it when the device is removed (DEVDROP,
board restart) or needs a reset, and regains it when the device is ready
again (the host resets it by itself, ``ira.virtio.host.RecoveryPolicy``) or
a new binding becomes ready on the same interface.

*MTU*: the device's MTU (VIRTIO_NET_F_MTU) is the interface's, given to
``open_port`` at every DRIVER_OK.  A device may not change it while a driver
uses it (virtio 1.2 §5.1.4.1): ira's device asks for a reset instead, and the
new MTU comes with the re-initialisation.  A device that changes it anyway
(the configuration generation moves with a new ``mtu``) is reset by the
driver, since the receive buffers and the frame checks follow the MTU.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ira.errors import ConfigError, RemoteProtocolError
from ira.venet.counters import NetDriverStatistics
from ira.venet.delta import DeltaDecoder, DeltaEncoder
from ira.venet.flowqueue import FlowQueue, InflightLimit
from ira.venet.netspec import (
    BASE_FEATURES,
    CONFIG_BYTES,
    DEFAULT_MTU,
    HDR_DELTA,
    OFFLOADS,
    RX_QUEUE,
    TX_QUEUE,
    F,
    NetConfig,
    NetPort,
    Offloads,
    check_received,
    deliver_to_port,
    full_frame,
    next_outgoing_frame,
    with_num_buffers,
)
from ira.venet.vnethdr import Drop
from ira.virtio.driver import Buffer, UsedBuffer
from ira.virtio.features import TRANSPORT_FEATURES
from ira.virtio.host import BindingState, VirtioBinding, VirtioClient, WindowSpec
from ira.wire.framedelta import MAX_OVERHEAD, num_buffers
from ira.wire.venet import HEADER, VNET_HDR_BYTES

log = logging.getLogger(__name__)

#: the receive buffer size with MRG_RXBUF
PAGE_BYTES = 4096
#: the size of each queue asked for
QUEUE_SIZE = 256
#: frames take the tx window in units of this many bytes (a whole MTU-1500 frame each)
TX_UNIT = 2048


@dataclass(frozen=True, slots=True)
class NetDriverConfig:
    """How the host's driver sizes its memory and its queue."""

    #: the device-written window that receive buffers live in
    rx_window_bytes: int = 512 * 1024
    #: the driver-written window that frames to send are copied into
    tx_window_bytes: int = 512 * 1024
    #: frames sent and not yet returned by the device, at most this many bytes (the
    #: limit itself follows the link's rate below this; ``ira.venet.flowqueue``)
    tx_inflight_bytes: int = 256 * 1024
    #: accept checksum/GSO offloads (only ever when the port carries headers)
    offloads: bool = True
    #: accept header compression (IRA_HDR_DELTA, ``ira.venet.delta``)
    header_delta: bool = True

    def __post_init__(self) -> None:
        if self.rx_window_bytes < 2 * 65536 or self.tx_window_bytes < 2 * 65536:
            raise ConfigError("the rx and tx windows need at least 128 KiB each")
        if self.tx_inflight_bytes < 65536 + 64:
            raise ConfigError("tx_inflight_bytes must hold at least one 64 KiB frame")


@dataclass(frozen=True, slots=True)
class InterfaceSettings:
    """What the host's interface is set up with once the device is known."""

    #: the MAC the device gave (VIRTIO_NET_F_MAC), or None: keep the interface's own
    mac: bytes | None
    mtu: int


class TxFifo:
    """Space in the tx window, handed out in order and taken back in any order.

    Space goes in whole ``unit``s: a stream of frames of one size then takes the
    same offsets lap after lap, as the queue hands out its descriptors, so a
    descriptor's address stays what it was and its update sends no bytes.
    ``used_bytes`` counts the frames' own bytes.
    """

    def __init__(self, size_bytes: int, unit: int = 1) -> None:
        self.size_bytes = size_bytes
        self.unit = unit
        self._live: deque[list[int]] = deque()  # [start, end, done, length] oldest first
        self._by_start: dict[int, list[int]] = {}
        self.used_bytes = 0

    def alloc(self, length: int) -> int | None:
        """The offset of ``length`` free contiguous bytes, or None."""
        span = -(-length // self.unit) * self.unit
        start = self._place(span)
        if start is None:
            return None
        entry = [start, start + span, 0, length]
        self._live.append(entry)
        self._by_start[start] = entry
        self.used_bytes += length
        return start

    def _place(self, length: int) -> int | None:
        live = self._live
        if not live:
            return 0 if length <= self.size_bytes else None
        tail, head = live[0][0], live[-1][1]
        if head <= tail:  # wrapped: free between the newest end and the oldest start
            return head if tail - head >= length else None
        if self.size_bytes - head >= length:  # free at the end, then before the oldest
            return head
        return 0 if length <= tail else None

    def free(self, start: int) -> None:
        entry = self._by_start.pop(start)
        entry[2] = 1
        self.used_bytes -= entry[3]
        while self._live and self._live[0][2]:
            self._live.popleft()


class VirtioNetClient(VirtioClient):
    """The host's driver for one network device (see the module docstring)."""

    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)
    config_bytes = CONFIG_BYTES

    def __init__(
        self,
        open_port: Callable[[InterfaceSettings], NetPort],
        *,
        vnet_hdr: bool,
        config: NetDriverConfig | None = None,
    ) -> None:
        """``open_port`` gives the interface once the device is ready; ``vnet_hdr``:
        the port it gives carries virtio-net headers (so offloads can be accepted)."""
        cfg = config or NetDriverConfig()
        self.config = cfg
        self._open_port = open_port
        offloads = OFFLOADS if cfg.offloads and vnet_hdr else 0
        delta = HDR_DELTA if cfg.header_delta else 0
        self.supported_features = TRANSPORT_FEATURES | BASE_FEATURES | offloads | delta
        self.windows = (
            WindowSpec("rx", cfg.rx_window_bytes, device_writable=True),
            WindowSpec("tx", cfg.tx_window_bytes),
        )
        self.port: NetPort | None = None
        self.settings: InterfaceSettings | None = None
        self._binding: VirtioBinding | None = None
        self._link_status = True
        self._to_device = Offloads()
        self._from_device = Offloads()
        self._mergeable = False
        self._mtu = DEFAULT_MTU
        self._slot_bytes = PAGE_BYTES
        self._free_slots: deque[int] = deque()  # FIFO, like the queue's descriptors
        self._refill_at = 1  # free slots offered again once this many have come back
        self._parts: list[bytes] = []  # buffers of a merged frame so far
        self._parts_wanted = 0
        self._fifo = TxFifo(cfg.tx_window_bytes, TX_UNIT)
        self._flows = self._new_flows(DEFAULT_MTU)
        self._inflight = self._new_inflight_limit(DEFAULT_MTU)
        self._waiting: bytes | None = None  # taken from the flows, waiting for room
        self._tx_interrupts = True  # a queue's notifications start enabled
        self._counts = NetDriverStatistics()
        #: header compression agreed (IRA_HDR_DELTA): frames to the device are encoded,
        #: frames from it decoded, both in queue order
        self._delta = False
        self._encoder = DeltaEncoder()
        self._decoder = DeltaDecoder()

    # -- state --------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        b = self._binding
        return b is not None and b.state is BindingState.READY

    @property
    def carrier(self) -> bool:
        return self.is_ready and self._link_status

    def statistics(self) -> NetDriverStatistics:
        counts = self._counts.copy()
        counts.tx_inflight_bytes = self._fifo.used_bytes
        counts.tx_inflight_limit = self._inflight.limit
        counts.tx_queued_frames = len(self._flows)
        counts.tx.delta = self._encoder.counts.copy()
        if self._binding is not None:
            counts.device_resets = self._binding.resets
        return counts

    def _new_flows(self, mtu: int) -> FlowQueue:
        return FlowQueue(quantum=full_frame(mtu))

    def _new_inflight_limit(self, mtu: int) -> InflightLimit:
        cap = self.config.tx_inflight_bytes
        return InflightLimit(frame=min(cap, full_frame(mtu)), cap=cap)

    # -- VirtioClient hooks ---------------------------------------------------------

    def ready(self, binding: VirtioBinding, *, now: float) -> None:
        """DRIVER_OK: open the interface, offer receive buffers, start sending."""
        negotiation = binding.negotiation
        assert negotiation is not None
        features = negotiation.accepted
        config = NetConfig.decode(binding.config)
        self._binding = binding
        self._to_device = Offloads.to_device(features)
        self._from_device = Offloads.to_driver(features)
        self._mergeable = bool(features & F.MRG_RXBUF.mask)
        self._delta = bool(features & HDR_DELTA)
        self._encoder.reset()
        self._decoder.reset()
        self._mtu = config.mtu if features & F.MTU.mask else DEFAULT_MTU
        self._link_status = config.link_up if features & F.STATUS.mask else True
        self.settings = InterfaceSettings(config.mac if features & F.MAC.mask else None, self._mtu)
        # the longest frame the device may write (a compressed one may be a little longer)
        largest = self._from_device.max_frame_bytes(self._mtu) + (
            MAX_OVERHEAD if self._delta else 0
        )
        if self._mergeable:
            self._slot_bytes = PAGE_BYTES
        else:
            self._slot_bytes = -(-largest // PAGE_BYTES) * PAGE_BYTES
        slots = self.config.rx_window_bytes // self._slot_bytes
        # Slots are offered in FIFO order, as the queue hands out descriptors: with
        # buffers used in order each descriptor names the same slot lap after lap,
        # so re-offering a buffer rewrites ring bytes that need not be sent again.
        self._free_slots = deque(range(min(slots, binding.queues[RX_QUEUE].queue_size)))
        # Offered again once half are free. A device short of buffers holds at most one
        # frame's worth less one (16 pages for a 64 KiB segment), so the driver then has
        # the rest, at least half of the 32 pages of the least rx window allowed.
        self._refill_at = max(1, len(self._free_slots) // 2)
        self._parts, self._parts_wanted = [], 0
        self._fifo = TxFifo(self.config.tx_window_bytes, TX_UNIT)
        # frames queued for the device before it was (re)initialised go with its rings
        stale = len(self._flows) + (self._waiting is not None)
        if stale:
            self._counts.tx.dropped[Drop.RESET] += stale
        self._flows = self._new_flows(self._mtu)
        self._inflight = self._new_inflight_limit(self._mtu)
        self._waiting = None
        self._tx_interrupts = True
        port = self._open_port(self.settings)
        self.port = port
        if port.vnet_hdr:
            port.set_offloads(self._to_device)
        port.connect(self.pull)
        self._offer_rx(binding)
        if binding.ring_updates:
            # the device's flushes of its used ring are announced (ring_updated): its
            # receive notifications, and re-arming them per frame, would only cost bytes
            binding.interrupts(RX_QUEUE, enabled=False)
        self._update_carrier()
        self.pull()

    def config_changed(self, binding: VirtioBinding) -> None:
        if binding is not self._binding or binding.negotiation is None:
            return
        config = NetConfig.decode(binding.config)
        if binding.negotiation.accepted & F.STATUS.mask:
            self._link_status = config.link_up
        if config.mtu != self._mtu and binding.negotiation.accepted & F.MTU.mask:
            # the buffers and the checks follow the MTU: take it up from a reset
            binding.request_reset(f"the device's MTU changed from {self._mtu} to {config.mtu}")
        self._update_carrier()

    def failed(self, binding: VirtioBinding, reason: str) -> None:
        self._counts.failures += 1
        self._update_carrier()

    def removed(self, binding: VirtioBinding) -> None:
        self._binding = None
        self._waiting = None
        self._update_carrier()

    def used(self, binding: VirtioBinding, index: int, used: list[UsedBuffer[object]]) -> None:
        if index == RX_QUEUE:
            self._received(binding, used)
        elif index == TX_QUEUE and binding is self._binding and binding.state is BindingState.READY:
            self._free(binding, used)
            self._send(binding)

    # -- transmitq --------------------------------------------------------------------

    def pull(self) -> None:
        """Take what the port has into the flow queue; send from it while there is room."""
        binding = self._binding
        if binding is None or binding.state is not BindingState.READY:
            return
        flows = self._flows
        dropped = flows.dropped
        now = binding.now
        while (read := self._read()) is not None:
            flows.push(read, now=now)
        if flows.dropped != dropped:
            self._counts.tx.dropped[Drop.QUEUE_FULL] += flows.dropped - dropped
        self._send(binding)

    def _send(self, binding: VirtioBinding) -> None:
        """Take back what the device used; hand it queued frames while there is room.
        (The port is read only when it says it is readable: ``pull``.)"""
        queue = binding.queues[TX_QUEUE]
        window = binding.windows["tx"]
        self._reclaim(binding)
        flows = self._flows
        limit = self._inflight.limit
        flows.set_line_rate(self._inflight.rate)
        dropped = flows.codel_dropped
        now = binding.now
        while True:
            if self._waiting is None:
                self._waiting = flows.pop(now=now)
            frame = self._waiting
            if frame is None:
                break
            encoded = self._encoder.encode(frame) if self._delta else None
            data = frame if encoded is None else encoded.data
            inflight = self._fifo.used_bytes
            room = not inflight or inflight + len(data) <= limit
            at = self._fifo.alloc(len(data)) if room and queue.num_free else None
            if at is None:
                self._waiting = frame
                if not room and binding.ring_updates:
                    # the limit holds it: the device's next flush of used buffers
                    # arrives as a ring update (ring_updated), no notification needed —
                    # re-arming one after every frame would cost link bytes each time
                    self._counts.tx.waits += 1
                    break
                if not self._tx_interrupts:  # blocked: now the device's word is needed
                    self._tx_interrupts = True
                    if binding.interrupts(TX_QUEUE, enabled=True) and self._reclaim(binding):
                        continue
                self._counts.tx.waits += 1
                break
            self._waiting = None
            window.write(at, data)
            queue.add([Buffer.at(window.window_id, at, len(data))], [], at)
            if encoded is not None:
                self._encoder.commit(encoded)
            tx = self._counts.tx
            tx.frames += 1
            tx.frame_bytes += len(frame) - VNET_HDR_BYTES
        if flows.codel_dropped != dropped:
            self._counts.tx.dropped[Drop.CODEL] += flows.codel_dropped - dropped
        if self._waiting is None and self._tx_interrupts:
            # Not blocked: sent frames are reclaimed here, at the next pull, so the
            # device need not notify each one (nor the driver answer each SIGNAL).
            self._tx_interrupts = False
            binding.interrupts(TX_QUEUE, enabled=False)
        binding.kick(TX_QUEUE)

    def ring_updated(self, binding: VirtioBinding, index: int) -> None:
        if binding is not self._binding or binding.state is not BindingState.READY:
            return
        if index == RX_QUEUE:
            used = binding.collect(RX_QUEUE)
            if used:
                self._received(binding, used)
            return
        if self._waiting or self._fifo.used_bytes:
            # frames are out: take back what the device used as it comes (it times
            # the in-flight limit's rate) and send what waits for the limit
            self._send(binding)

    def _reclaim(self, binding: VirtioBinding) -> int:
        """Take back the tx space of the frames the device has used; how many."""
        used = binding.collect(TX_QUEUE)
        self._free(binding, used)
        return len(used)

    def _free(self, binding: VirtioBinding, used: list[UsedBuffer[object]]) -> None:
        if not used:
            return
        fifo = self._fifo
        before = fifo.used_bytes
        for u in used:
            assert isinstance(u.token, int)
            fifo.free(u.token)
        self._inflight.returned(before - fifo.used_bytes, fifo.used_bytes, now=binding.now)

    def _read(self) -> bytes | None:
        """The next frame from the port that the device may get, with its header."""
        return next_outgoing_frame(self.port, self._to_device, self._mtu, self._counts.tx.dropped)

    # -- receiveq ---------------------------------------------------------------------

    def _offer_rx(self, binding: VirtioBinding) -> None:
        """Offer the free receive slots once half of them are free (as Linux's virtio-net
        refills): the device keeps at least half, and each offer of buffers costs bytes
        toward the board, one per frame on a slow line."""
        if len(self._free_slots) < self._refill_at:
            return
        queue = binding.queues[RX_QUEUE]
        window = binding.windows["rx"]
        size = self._slot_bytes
        while self._free_slots and queue.num_free:
            slot = self._free_slots.popleft()
            queue.add([], [Buffer.at(window.window_id, slot * size, size)], slot)
        binding.kick(RX_QUEUE)

    def _received(self, binding: VirtioBinding, used: list[UsedBuffer[object]]) -> None:
        window = binding.windows["rx"]
        size = self._slot_bytes
        outstanding = binding.queues[RX_QUEUE].outstanding + len(used)
        for u in used:
            slot = u.token
            assert isinstance(slot, int)
            data = window.read(slot * size, u.written_bytes)
            self._free_slots.append(slot)
            outstanding -= 1
            if self._parts_wanted:
                self._parts.append(data)
            else:
                if len(data) < (1 if self._delta else VNET_HDR_BYTES):
                    self._counts.rx.dropped[Drop.TRUNCATED] += 1
                    continue
                wanted = 1
                if self._mergeable:
                    wanted = num_buffers(data) if self._delta else HEADER.unpack_from(data)[-1]
                if not 1 <= wanted <= outstanding + 1:
                    self._counts.rx.dropped[Drop.BAD_NUM_BUFFERS] += 1
                    continue
                self._parts, self._parts_wanted = [data], wanted
            if len(self._parts) == self._parts_wanted:
                parts, self._parts, self._parts_wanted = self._parts, [], 0
                if self._delta:
                    try:
                        frame = self._decoder.decode(b"".join(parts))
                    except RemoteProtocolError:
                        self._counts.rx.dropped[Drop.BAD_DELTA] += 1
                        continue
                else:
                    # num_buffers is the transport's business: the stack gets 0, as from a TAP
                    frame = b"".join([with_num_buffers(parts[0], 0), *parts[1:]])
                self._deliver(frame)
        self._offer_rx(binding)

    def _deliver(self, frame: bytes) -> None:
        reason = check_received(frame, self._from_device, self._mtu)
        if reason is not None:
            self._counts.rx.dropped[reason] += 1
            return
        deliver_to_port(self.port, frame, self._counts.rx)

    # -- state ------------------------------------------------------------------------

    def _update_carrier(self) -> None:
        if self.port is not None:
            self.port.set_carrier(self.carrier)
