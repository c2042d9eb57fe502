"""The sending half's retransmission timer, driven through its own verbs with a fake clock."""

from __future__ import annotations

from ira.link.config import LinkConfig
from ira.link.events import Channel
from ira.link.sender import UNKNOWN_RATE_BYTES_PER_S, Sender


def test_a_sparse_flow_s_slow_delivery_rate_does_not_stretch_the_timer() -> None:
    """A lone reply acknowledged five seconds late (a loss) measures a delivery rate of
    20 bytes a second; the next lone request's timer still fires after the RTO and at
    most the time a 9600-baud line takes for it, not five seconds later."""
    config = LinkConfig()
    sender = Sender(config, 1000, 1 << 20)
    sender.seed_rtt(0.02)
    sender.enqueue(Channel.CONTROL, bytes(100))
    (first,) = sender.segments_to_send(0.0)
    sender.on_ack(first.end, 1 << 20, [], first.tx_order, None, 5.0)
    assert sender.bandwidth is not None and sender.bandwidth < 25
    sender.enqueue(Channel.CONTROL, bytes(100))
    (second,) = sender.segments_to_send(6.0)
    rto = sender.rto
    now = 6.0
    while sender.stats.timeouts == 0:
        deadline = sender.deadline
        assert deadline is not None and deadline >= now
        now = deadline
        sender.on_timeout(now)
    assert now <= 6.0 + rto + len(second.payload) / UNKNOWN_RATE_BYTES_PER_S + 1e-6
    assert sender.segments_to_send(now) == [second]
