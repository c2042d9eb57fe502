"""virtio-net, the board's side: a network device on the virtio transport (virtio 1.2 §5.1).

Sans-I/O: the device moves frames between its two virtqueues and a
``NetPort`` (``ira.venet.netspec``) it is given, on the thread that owns the
board's connector; the port does the I/O.

Theory of operation
-------------------

*Configuration* (§5.1.4): ``mac`` is the MAC the driver gives its interface
(the board's own interface, behind the port, has another), ``mtu`` the
port's MTU (VIRTIO_NET_F_MTU, 68..65535), ``status`` LINK_UP while a port is
attached (VIRTIO_NET_F_STATUS).  Changes move the configuration generation and
the driver re-reads it.  The MTU may not change under a driver that has read
it (§5.1.4.1): ``set_mtu`` then also sets DEVICE_NEEDS_RESET, and the driver
takes the new MTU up as it initialises the device again.

*Features*: MAC, MTU, STATUS and MRG_RXBUF always; the checksum and GSO
offloads (CSUM, HOST_TSO4/6, HOST_ECN; GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN)
only when the port carries virtio-net headers, since only then can the
board's stack take or make such frames.  A feature set that breaks §5.1.3.1
(TSO without its checksum feature, ECN without TSO) is refused at
FEATURES_OK.  At DRIVER_OK the port is told which offloads it may hand the
device (``set_offloads``: what the driver accepted of GUEST_*).

*receiveq* (device -> driver): the port is read as frames come
(``pull()``, the port's ``on_readable``) into a queue per flow
(``ira.venet.flowqueue``: fq_codel, as the host's driver does), and frames go
into the driver's receive buffers from it, the flows taking turns, while the
driver has buffers and — given a ``LinkPacing``, the link's count of bytes not
yet acknowledged — while that count stays under a limit in the line's time:
the frame on the line and one more, or 0.05 s of the line on a fast one
(``InflightLimit``, its rate that of the acknowledgements; CoDel's times follow
it).  Frames placed in buffers are committed to the link, whose queue is first
in, first out: without the limit TCP's whole window (1.3-2.2 s of a 115200-baud
line) waited there, and a ping behind it.  The signal of what the line took has
to come from the link: the driver's refills of buffers come in batches of half
the ring, on purpose.  A frame held back by the limit waits for the link's next
acknowledgement (``when_acknowledged``); one that finds no buffer, for the
driver's notification of queue 0.  The port is read ahead as far as the flow
queue holds frames (1,024); the rest stays in the kernel until it drains.

With MRG_RXBUF a frame fills as many buffers as it needs and
``num_buffers`` says how many (§5.1.6.4); without it, one chain per frame and
``num_buffers`` is 1; a frame bigger than the chain is dropped.  What the
board's stack hands over is checked only for what the driver agreed to: its
length, and no offload that was not negotiated.

*transmitq* (driver -> device): each chain is one frame with its header,
checked whole (``check_received``: the wire's checks under the negotiated
offloads and MTU) and handed to the port; every chain goes back used, with
zero bytes written.  A malformed frame is dropped and counted by reason
(``tx_dropped_<reason>``); the device and its interface stay up.

*Header compression* (IRA_HDR_DELTA, offered unless ``header_delta`` is
off): frames are written to receive buffers encoded against the previous
frame of their flow (``ira.venet.delta``) once they have their buffers, and
every transmit chain is decoded, in order, before any other check; a chain
that cannot be is dropped and counted (``tx_dropped_bad_delta``).

*Carrier*: the board's interface has carrier while a driver has the device
live, so the board's stack sends nothing into a device nobody reads (the
port may also drop it while the link is down, ``ira.runtime.network``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ira.busmodel.device import Device
from ira.busmodel.registry import (
    DeviceContext,
    DeviceSpec,
    DeviceType,
    DeviceTypes,
    Option,
    bool_option,
    int_option,
    str_option,
)
from ira.errors import RemoteProtocolError
from ira.venet.counters import NetDeviceStatistics
from ira.venet.delta import DeltaDecoder, DeltaEncoder, with_buffers
from ira.venet.flowqueue import FlowQueue, InflightLimit
from ira.venet.netspec import (
    BASE_FEATURES,
    DEFAULT_MTU,
    HDR_DELTA,
    LINK_UP,
    NET_ID,
    OFFLOADS,
    RX_QUEUE,
    TX_QUEUE,
    F,
    LinkPacing,
    NetConfig,
    NetPort,
    Offloads,
    check_mtu,
    check_received,
    deliver_to_port,
    features_consistent,
    full_frame,
    generated_mac,
    next_outgoing_frame,
    parse_mac,
    with_num_buffers,
)
from ira.venet.vnethdr import Drop
from ira.virtio.device import Chain, VirtqueueDevice
from ira.virtio.features import TRANSPORT_FEATURES, DeviceStatus
from ira.virtio.ring import QueueBroken
from ira.virtio.transport import VirtioDevice
from ira.wire.framedelta import MAX_OVERHEAD
from ira.wire.venet import MAX_MTU, MIN_MTU, VNET_HDR_BYTES

log = logging.getLogger(__name__)

S = DeviceStatus

#: byte offset of ``status`` and of ``mtu`` in the configuration space
_STATUS_AT, _MTU_AT = 6, 10
#: the largest size of each queue
QUEUE_SIZE = 256
#: bytes committed to the link and not yet acknowledged, at most (the limit follows
#: the line's rate below this; ``InflightLimit``)
INFLIGHT_CAP = 256 * 1024


class VirtioNetDevice(VirtioDevice):
    """The board's network device (see the module docstring)."""

    virtio_id = NET_ID
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(
        self,
        mac: bytes,
        *,
        mtu: int = DEFAULT_MTU,
        port: NetPort | None = None,
        offloads: bool = True,
        header_delta: bool = True,
        pacing: LinkPacing | None = None,
    ) -> None:
        """``mac``: the driver's MAC; ``mtu``: used until a port gives its own;
        ``offloads``: offer checksum/GSO offloads when the port carries headers;
        ``header_delta``: offer header compression (IRA_HDR_DELTA); ``pacing``: the
        link's backlog, to commit frames to it no faster than the line takes them
        (none: as fast as the driver offers buffers)."""
        if len(mac) != 6:
            raise ValueError("a MAC is 6 bytes")
        super().__init__(NetConfig(mac, 0, check_mtu(mtu)).encode())
        self._offer_offloads = offloads
        self._base_features = (
            TRANSPORT_FEATURES | BASE_FEATURES | (HDR_DELTA if header_delta else 0)
        )
        self.device_features = self._base_features
        self._port: NetPort | None = None
        self._mtu = mtu
        self._to_driver = Offloads()
        self._from_driver = Offloads()
        self._mergeable = False
        self._pacing = pacing
        #: frames read from the port, by flow, until they go into receive buffers
        self._flows = FlowQueue(quantum=full_frame(mtu))
        self._inflight = InflightLimit(frame=full_frame(mtu), cap=INFLIGHT_CAP)
        self._acked = 0 if pacing is None else pacing.acked_bytes()
        #: a frame taken from the flows that waits for receive buffers or the limit
        self._waiting: bytes | None = None
        #: it waits for buffers (not for the link)
        self._starved = False
        #: receive chains popped and not yet pushed: the start of a merged frame, or a spare
        self._held: list[Chain] = []
        #: whether the driver's receive buffer notifications are asked for
        self._rx_kicks = True
        self._net = NetDeviceStatistics()
        #: header compression agreed: frames to the driver encoded, from it decoded
        self._delta = False
        self._encoder = DeltaEncoder()
        self._decoder = DeltaDecoder()
        if port is not None:
            self.attach_port(port)

    # -- the port -------------------------------------------------------------

    @property
    def port(self) -> NetPort | None:
        return self._port

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def mac(self) -> bytes:
        return NetConfig.decode(self.config).mac

    def attach_port(self, port: NetPort) -> None:
        """Bridge to ``port``: its MTU becomes the device's, LINK_UP is set."""
        self._port = port
        self._drop_queued()
        offloads = OFFLOADS if self._offer_offloads and port.vnet_hdr else 0
        self.device_features = self._base_features | offloads
        port.connect(self.pull)
        self.set_mtu(port.mtu)
        self._set_link_status(LINK_UP)
        self._update_carrier()
        if self.live and self.features & OFFLOADS and not port.vnet_hdr:
            self.needs_reset(f"{port.name} carries no virtio-net headers for the offloads agreed")
        elif self.live:
            self.pull()

    def set_mtu(self, mtu: int) -> None:
        """Offer ``mtu`` (68..65535) from now on; a driver past FEATURES_OK gets it after a
        reset (DEVICE_NEEDS_RESET: §5.1.4.1 forbids changing it under the driver)."""
        mtu = check_mtu(mtu)
        if mtu == self._mtu:
            return
        old, self._mtu = self._mtu, mtu
        self.set_config(_MTU_AT, mtu.to_bytes(2, "little"))
        if self.status & S.FEATURES_OK and self.features & F.MTU.mask:
            self.needs_reset(f"the MTU changed from {old} to {mtu}")

    def detach_port(self) -> None:
        """No network behind the device any more: LINK_UP is cleared."""
        if self._port is not None:
            self._port.set_carrier(False)
        self._port = None
        self._drop_queued()
        self._set_link_status(0)

    def pull(self) -> None:
        """Frames wait in the port: take them into the flow queue, and move frames to the
        driver while it has buffers and the link is not too far behind."""
        ring = self.queue(RX_QUEUE)
        if ring is None:
            return
        try:
            self._fill_and_ask(ring)
        except QueueBroken as exc:
            self.queue_failed(RX_QUEUE, exc)
            return
        self.interrupt(RX_QUEUE)

    def net_statistics(self) -> NetDeviceStatistics:
        """The frames of each direction (``statistics()`` has the virtio device's counters)."""
        counts = self._net.copy()
        counts.rx.delta = self._encoder.counts.copy()
        return counts

    # -- VirtioDevice hooks -----------------------------------------------------

    def accept_features(self, features: int) -> bool:
        if not features_consistent(features):
            return False
        port = self._port
        return not features & OFFLOADS or (port is not None and port.vnet_hdr)

    def driver_ok(self) -> None:
        features = self.features
        self._to_driver = Offloads.to_driver(features)
        self._from_driver = Offloads.to_device(features)
        self._mergeable = bool(features & F.MRG_RXBUF.mask)
        self._delta = bool(features & HDR_DELTA)
        self._encoder.reset()
        self._decoder.reset()
        self._held = []
        self._drop_queued()
        self._rx_kicks = True
        if self._port is not None and self._port.vnet_hdr:
            self._port.set_offloads(self._to_driver)
        log.info("virtio-net %s live (mtu %d)", self.mac.hex(":"), self.mtu)
        self._update_carrier()

    def device_reset(self) -> None:
        self._held = []
        self._drop_queued()
        self._rx_kicks = True
        self._to_driver = self._from_driver = Offloads()
        self._delta = False
        self._update_carrier()

    def needs_reset(self, reason: str) -> None:
        super().needs_reset(reason)
        self._update_carrier()

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        if index == RX_QUEUE:
            self._fill_and_ask(queue)
        elif index == TX_QUEUE:
            self._transmit(queue)

    # -- receiveq: frames to the driver --------------------------------------------

    def _fill_and_ask(self, ring: VirtqueueDevice, *, read: bool = True) -> None:
        """Fill, and ask for the driver's notifications only while a frame waits for buffers.

        Like the transmit side of the driver: while the device has buffers the
        driver's refills need no SIGNAL each (nor an answer each); the device
        reads the ring when a frame comes.
        """
        while True:
            self._fill(ring, read=read)
            starved = self._starved
            if starved == self._rx_kicks:
                return
            self._rx_kicks = starved
            if not self.notifications(RX_QUEUE, enabled=starved):
                return

    def _fill(self, ring: VirtqueueDevice, *, read: bool = True) -> None:
        pacing = self._pacing
        now = 0.0 if pacing is None else pacing.now()
        flows = self._flows
        dropped, codel = flows.dropped, flows.codel_dropped
        # the port is read ahead as far as the flow queue holds (never to its drops):
        # beyond that the backlog stays in the kernel, read as the queue drains
        while read and len(flows) < flows.limit_frames and (got := self._read()) is not None:
            flows.push(got, now=now)
        self._starved = False
        if pacing is not None:
            unacked = self._acknowledged(pacing, now)
            limit = self._inflight.limit
            flows.set_line_rate(self._inflight.rate)
        while True:
            if self._waiting is None:
                self._waiting = flows.pop(now=now)
            frame = self._waiting
            if frame is None:
                break
            if pacing is not None and unacked and unacked + len(frame) > limit:
                # held back: the next acknowledgement lets it go
                pacing.when_acknowledged(self._link_acknowledged)
                self._net.rx.waits += 1
                break
            if not self._place(ring, frame):
                self._starved = True
                self._net.rx.waits += 1
                break
            self._waiting = None
            if pacing is not None:
                unacked += len(frame)  # committed: the link gets it at the end of the turn
        if pacing is not None and unacked and self._waiting is None:
            # frames are out: each acknowledgement of them times the limit's rate (and
            # tells the limit when nothing is out: idle time is not a slow line)
            pacing.when_acknowledged(self._link_acknowledged)
        drops = self._net.rx.dropped
        if flows.dropped != dropped:
            drops[Drop.QUEUE_FULL] += flows.dropped - dropped
        if flows.codel_dropped != codel:
            drops[Drop.CODEL] += flows.codel_dropped - codel

    def _link_acknowledged(self) -> None:
        """The link's peer acknowledged bytes while frames were out: measure, and send
        from the flow queue what the limit held back (the port is read when it says it
        is readable)."""
        ring = self.queue(RX_QUEUE)
        if ring is None:
            return
        try:
            self._fill_and_ask(ring, read=False)
        except QueueBroken as exc:
            self.queue_failed(RX_QUEUE, exc)
            return
        self.interrupt(RX_QUEUE)

    def _acknowledged(self, pacing: LinkPacing, now: float) -> int:
        """Take what the link says was acknowledged since the last look (the limit's
        rate); the bytes still out."""
        unacked = pacing.unacked_bytes()
        acked = pacing.acked_bytes()
        if acked != self._acked:
            self._inflight.returned(acked - self._acked, unacked, now=now)
            self._acked = acked
        return unacked

    def _drop_queued(self) -> None:
        """Frames queued toward the driver go with its rings (and a new MTU's quantum)."""
        stale = len(self._flows) + (self._waiting is not None)
        if stale:
            self._net.rx.dropped[Drop.RESET] += stale
        self._flows = FlowQueue(quantum=full_frame(self._mtu))
        self._inflight = InflightLimit(frame=full_frame(self._mtu), cap=INFLIGHT_CAP)
        self._waiting = None
        self._starved = False

    def _read(self) -> bytes | None:
        """The next frame from the port that the driver may get, with its header."""
        return next_outgoing_frame(self._port, self._to_driver, self._mtu, self._net.rx.dropped)

    def _place(self, ring: VirtqueueDevice, frame: bytes) -> bool:
        """Write ``frame`` into receive buffers; False if there are not enough yet."""
        encoded = self._encoder.encode(frame) if self._delta else None
        size = len(frame) if encoded is None else len(encoded.data)
        if self._mergeable:
            room = sum(c.writable_bytes for c in self._held)
            # a compressed frame over several buffers says how many in one more byte
            while room < size + (encoded is not None and len(self._held) > 1):
                chain = ring.pop()
                if chain is None:
                    return False
                if chain.writable_bytes < VNET_HDR_BYTES:
                    self._net.rx.bad_buffers += 1
                    ring.push(chain, 0)  # §5.1.6.3: every buffer holds at least a header
                    continue
                self._held.append(chain)
                room += chain.writable_bytes
            chains, self._held = self._held, []
        else:
            chain = self._held.pop() if self._held else ring.pop()
            if chain is None:
                return False
            if chain.writable_bytes < size:
                self._held = [chain]  # kept for the next frame
                self._net.rx.dropped[Drop.BUFFER_TOO_SMALL] += 1
                return True
            chains = [chain]
        if encoded is None:
            data = with_num_buffers(frame, len(chains))
        else:
            data = with_buffers(encoded.data, len(chains))
            self._encoder.commit(encoded)
        at = 0
        for chain in chains:
            size = min(chain.writable_bytes, len(data) - at)
            ring.write(chain, data[at : at + size])
            ring.push(chain, size)
            at += size
        rx = self._net.rx
        rx.frames += 1
        rx.frame_bytes += len(frame) - VNET_HDR_BYTES
        return True

    # -- transmitq: frames from the driver ---------------------------------------

    def _transmit(self, ring: VirtqueueDevice) -> None:
        limit = self._from_driver.max_frame_bytes(self.mtu)
        if self._delta:
            limit += MAX_OVERHEAD
        while (chain := ring.pop()) is not None:
            data = ring.read(chain) if chain.readable_bytes <= limit else None
            ring.push(chain, 0)
            frame, reason = (b"", Drop.OVERSIZE) if data is None else self._frame(data)
            if reason is not None:
                self._net.tx.dropped[reason] += 1
                continue
            self._deliver(frame)

    def _frame(self, data: bytes) -> tuple[bytes, Drop | None]:
        """The frame a chain holds (decoded, with compression) and why it must be dropped."""
        if self._delta:
            try:
                data = self._decoder.decode(data)
            except RemoteProtocolError:
                return data, Drop.BAD_DELTA
        return data, check_received(data, self._from_driver, self.mtu)

    def _deliver(self, frame: bytes) -> None:
        deliver_to_port(self._port, frame, self._net.tx)

    # -- state ------------------------------------------------------------------

    def _set_link_status(self, status: int) -> None:
        if NetConfig.decode(self.config).status != status:
            self.set_config(_STATUS_AT, status.to_bytes(2, "little"))

    def _update_carrier(self) -> None:
        if self._port is not None:
            self._port.set_carrier(self.live)


#: the network interface a ``virtio-net`` device of a profile bridges to, by its spec
NetPortFor = Callable[[DeviceSpec], NetPort | None]
#: the link's backlog a ``virtio-net`` device paces itself by (asked as it is built)
PacingFor = Callable[[], LinkPacing]


def register_device_types(
    types: DeviceTypes, net_port: NetPortFor | None = None, pacing: PacingFor | None = None
) -> None:
    """Add ``virtio-net``; its devices bridge to ``net_port(spec)`` (none: no interface)
    and pace themselves by ``pacing()`` (none: they do not)."""

    def virtio_net(spec: DeviceSpec, ctx: DeviceContext) -> Device:
        mac = str_option(spec, "mac")
        return VirtioNetDevice(
            generated_mac(ctx.board, spec.name) if mac is None else parse_mac(mac),
            mtu=int_option(spec, "mtu", DEFAULT_MTU),
            port=None if net_port is None else net_port(spec),
            offloads=bool_option(spec, "offloads", True),
            header_delta=bool_option(spec, "header_delta", True),
            pacing=None if pacing is None else pacing(),
        )

    types.register(
        DeviceType(
            "virtio-net",
            virtio_net,
            "a network interface on each end (virtio 1.2 §5.1)",
            (
                Option(
                    "mac",
                    str,
                    "the host interface's MAC, e.g. 02:00:00:00:00:01; "
                    "default: derived from the board's and the device's names",
                    parse=parse_mac,
                ),
                Option(
                    "mtu",
                    int,
                    "the MTU both interfaces get",
                    default=DEFAULT_MTU,
                    minimum=MIN_MTU,
                    maximum=MAX_MTU,
                ),
                Option("offloads", bool, "offer checksum and GSO offloads", default=True),
                Option(
                    "header_delta", bool, "offer header compression (IRA_HDR_DELTA)", default=True
                ),
            ),
        )
    )
