"""The board's device paces itself by the link (``LinkPacing``, ``ira.runtime.backlog``):
frames from its port wait in its flow queue, not in the link's first-in-first-out queue,
so a sparse flow's frame passes a bulk flow's backlog toward the host."""

from __future__ import annotations

from test_virtio_net import Rig, _tcp_frame

from ira.link.simulate import LineFaults
from ira.venet.vnethdr import Drop
from ira.wire.venet import VNET_HDR_BYTES

FULL = VNET_HDR_BYTES + 18 + 1500
#: 115200 baud
LINE = LineFaults(bytes_per_s=11_520.0, latency_s=0.002)


BULK = [_tcp_frame(40000, i) for i in range(46)]
SPARSE = _tcp_frame(40001, 0, size=60)


def _sparse_frame_behind_a_backlog(rig: Rig) -> int:
    """A bulk flow from the board's stack, two frames for each delivered (TCP's ACK clock
    in slow start), then a frame of another flow: how many bulk frames reached the
    host after the sparse one was sent and before it."""
    bulk = BULK
    for i in range(0, 40, 2):
        rig.board_port.send(bulk[i], bulk[i + 1])
        assert rig.run_until(lambda: len(rig.host_port.delivered) >= i // 2, timeout_s=20.0)  # noqa: B023
    rig.board_port.send(*bulk[40:])
    sent_at = len(rig.host_port.delivered)
    rig.board_port.send(SPARSE)
    assert rig.run_until(lambda: SPARSE in rig.host_port.delivered, timeout_s=60.0)
    return rig.host_port.delivered.index(SPARSE) - sent_at


def test_a_paced_device_keeps_the_backlog_in_its_flow_queue_not_in_the_link() -> None:
    rig = Rig(faults=LINE, paced=True).ready()
    ahead = _sparse_frame_behind_a_backlog(rig)
    # what was committed to the link (the frame on the line and one more) and the bulk
    # flow's turn, not the backlog
    assert ahead <= 3
    backlog = rig.backlog
    assert backlog is not None
    # the limit, measured from the link's acknowledgements: the frame on the line and one
    # more; the link holds no more than that (and the bus's own messages) from then on
    unacked = []
    while (
        rig.device.net_statistics().rx.frames
        < 47 - rig.device.net_statistics().rx.dropped[Drop.CODEL]
    ):
        assert rig.run_until(lambda: True) and rig.pair.step()
        unacked.append(backlog.unacked_bytes())
    assert max(unacked) <= 2 * FULL + 512
    # the bulk flow's backlog waited seconds in the flow queue: CoDel dropped from it;
    # the rest arrived in order, none twice
    codel = rig.device.net_statistics().rx.dropped[Drop.CODEL]
    assert codel > 0
    assert rig.run_until(lambda: len(rig.host_port.delivered) + codel == 47, timeout_s=60.0)
    got = [f for f in rig.host_port.delivered if f != SPARSE]
    assert got == [f for f in BULK if f in got]


def test_without_pacing_the_sparse_frame_waits_behind_the_whole_backlog() -> None:
    """The same, the device unpaced (as before): the backlog waits in the link."""
    assert _sparse_frame_behind_a_backlog(Rig(faults=LINE).ready()) > 10
