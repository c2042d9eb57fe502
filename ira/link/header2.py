"""What the lean DATA2 header of link protocol version 2 may leave out (sans-I/O).

Theory of operation
-------------------
A DATA2 frame (``ira.wire.link2``) truncates ``seq`` and ``ack`` and leaves out
``window`` and ``echo`` when the peer does not need them.  This end's books for
that, one per session:

* ``seq``: the peer expects a byte between our oldest unacknowledged one and
  the next unsent one (it cannot have acknowledged more than we sent, nor we
  heard less than it acknowledged); a frame's ``seq`` keeps enough bytes to be
  unambiguous across that span.
* ``ack`` and ``window``: every DATA2 frame sent is remembered (its ``tx``,
  ack and window edge) until the peer echoes it or a later one.  An echoed
  frame arrived, so the peer holds at least its ack and edge (*known*): the
  ack keeps enough bytes to span from the known ack to ours, and the window
  goes only when our edge moved by ``window_bytes / 8`` past the known one.
  The peer takes the largest edge it heard, so an edge left out only leaves
  its window a little smaller, never wrong; a window that opens by a quarter
  goes at once in an ACK frame, as in version 1.
* ``echo``: only in the first of our frames that echoes a received frame; a
  repeated echo is no round-trip sample (the core keeps that flag, as it
  marks an ACK frame that repeats one ``STALE_ECHO``).

Links never reorder frames, which is what makes "the peer holds at least what
it echoed" and "the peer expects no more than we sent" true.
"""

from __future__ import annotations

from collections import deque

from ira.wire.link2 import truncated_bytes

#: sent DATA2 frames remembered until echoed; past this the oldest are forgotten
#: (which only makes the known ack and edge older: more bytes, never a wrong value)
MAX_REMEMBERED = 1024
#: the window goes when the edge moved by this share of the window past the known one
WINDOW_SLACK_SHARE = 8


class Header2:
    """One session's books for DATA2 headers (see the module docstring)."""

    __slots__ = ("_sent", "ack_known", "echoed_tx", "edge_known", "window_slack")

    def __init__(self, window_bytes: int, announced_edge: int) -> None:
        #: (tx, ack, edge) of DATA2 frames sent and not yet echoed, oldest first
        self._sent: deque[tuple[int, int, int]] = deque()
        #: the peer holds at least this ack and this window edge of ours
        self.ack_known = 0
        self.edge_known = announced_edge
        #: the largest of our transmissions the peer echoed
        self.echoed_tx = 0
        self.window_slack = max(1, window_bytes // WINDOW_SLACK_SHARE)

    def ack_bytes(self, ack: int) -> int:
        return truncated_bytes(ack - self.ack_known)

    def window_due(self, edge: int) -> bool:
        return edge - self.edge_known >= self.window_slack

    def sent(self, tx: int, ack: int, edge: int) -> None:
        sent = self._sent
        sent.append((tx, ack, edge))
        if len(sent) > MAX_REMEMBERED:
            sent.popleft()

    def echoed(self, tx: int) -> None:
        """The peer echoed our transmission ``tx`` (absolute): it holds that frame."""
        if tx <= self.echoed_tx:
            return
        self.echoed_tx = tx
        sent = self._sent
        while sent and sent[0][0] <= tx:
            sent_tx, ack, edge = sent.popleft()
            if sent_tx == tx:
                if ack > self.ack_known:
                    self.ack_known = ack
                if edge > self.edge_known:
                    self.edge_known = edge
