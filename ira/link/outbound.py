"""A session's frames out that carry data (sans-I/O): DATA (version 1) and DATA2.

Each frame carries one segment of the sender's and, piggy-backed, this end's
acknowledgement: the receiver's next expected byte, its window and the echo of
the latest transmission received (``ira.link.inbound`` keeps what is owed).  The
core decides when they go (``Link.data_to_send``); these functions encode them.
"""

from __future__ import annotations

from ira.link.header2 import Header2
from ira.link.inbound import Inbound
from ira.link.receiver import Receiver
from ira.link.sender import Segment, Sender
from ira.wire.link import WINDOW_UNIT_BYTES, encode_data_frame, full_numbers
from ira.wire.link2 import encode_data2_frame, truncated_bytes


def data_frames(
    segments: list[Segment], tag: int, receiver: Receiver, inbound: Inbound, frames: list[bytes]
) -> None:
    """Version 1: the segments as DATA frames appended to ``frames``."""
    ack = receiver.rcv_nxt & 0xFFFFFFFF
    window = inbound.window_field(receiver)
    echo = inbound.last_rx_tx
    for seg in segments:
        frames.append(
            encode_data_frame(
                seg.channel,
                tag,
                seg.seq & 0xFFFFFFFF,
                ack,
                window,
                seg.tx_order & 0xFFFF,
                echo,
                seg.payload,
            )
        )


def data2_frames(
    segments: list[Segment],
    sender: Sender,
    receiver: Receiver,
    books: Header2,
    inbound: Inbound,
    tag: int,
    keyed: bool,
    frames: list[bytes],
    numbers: dict[int, bytes],
) -> None:
    """Version 2: the segments as DATA2 frames appended to ``frames``, their headers
    as lean as the peer allows (``ira.link.header2``); with a key (``keyed``) the whole
    seq and ack each frame's MAC covers go to ``numbers``, by index in ``frames``."""
    ack = receiver.rcv_nxt
    ack_bytes = books.ack_bytes(ack)
    units = receiver.available // WINDOW_UNIT_BYTES
    if units > 0xFFFF:
        units = 0xFFFF
    edge = ack + units * WINDOW_UNIT_BYTES
    window: int | None = None
    if books.window_due(edge):
        window = units
        inbound.advertised_edge = edge
    else:
        edge = books.edge_known
    echo: int | None = None
    if not inbound.echo_sent and inbound.rx_seen:
        # the first echo of that frame: a round-trip sample that includes how
        # long its acknowledgement waited here (what the peer's timers must allow)
        inbound.echo_sent = True
        echo = inbound.last_rx_tx
    lowest = sender.snd_una
    for seg in segments:
        start = seg.seq if seg.seq < lowest else lowest
        tx = seg.tx_order
        if keyed:
            numbers[len(frames)] = full_numbers(seg.seq, ack)
        frames.append(
            encode_data2_frame(
                seg.channel,
                tag,
                seg.seq,
                truncated_bytes(sender.snd_nxt - start),
                ack,
                ack_bytes,
                window,
                tx & 0xFFFF,
                echo,
                seg.payload,
            )
        )
        books.sent(tx, ack, edge)
