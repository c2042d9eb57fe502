"""The queue of encoded bus messages a core hands to the link.

Which channel a message takes is decided here, in one place (see the
"Channels" section of docs/PROTOCOL.md): window traffic and everything that
must stay ordered with it goes BULK, the rest CONTROL, and a reply goes on
the channel its request came on.

With bus v4 (``batch_windows``) ``take()`` joins consecutive WINDOW messages on BULK into
WINDOWS messages (``ira.wire.bus.windows_of``: the encoded bodies one after another, nothing
decoded again): a WINDOW of any size followed by at most ``MAX_BATCH_UPDATES - 1`` small ones
(``JOIN_BYTES`` each at most: ring entries and indexes, small frames).  So a frame's buffer
and the ring update that exposes it cross as one message, but two frames' buffers never share
one: the peer can use the first as soon as it and its ring update are there, not only once a
second frame has crossed too (on a slow line that would be the second frame's whole time).
"""

from __future__ import annotations

from collections import Counter

from ira.link.events import Channel
from ira.wire.bus import (
    MAX_BATCH_UPDATES,
    DevClose,
    Message,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    SignalNotify,
    SignalState,
    Tag,
    WindowBatch,
    WindowUpdate,
    encode,
    windows_of,
)

#: messages that always travel on BULK, behind window updates
BULK_MESSAGES = (
    WindowUpdate,
    SignalNotify,
    SignalState,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    DevClose,
)


#: the longest WINDOW message ``take()`` joins to the one before it (see above)
JOIN_BYTES = 256
_WINDOW_TAG = int(Tag.WINDOW)


def channel_for(msg: Message) -> Channel:
    """The channel a message takes when nothing else decides it."""
    return Channel.BULK if isinstance(msg, BULK_MESSAGES) else Channel.CONTROL


class Outbox:
    """Encoded messages waiting for ``messages_to_send()``, with per-kind counters."""

    def __init__(self) -> None:
        self._queue: list[tuple[Channel, bytes]] = []
        #: messages sent, by wire message class (a WINDOW joined into a WINDOWS counts as a
        #: WINDOW; each WINDOWS made counts as a ``WindowBatch`` too)
        self.sent: Counter[type] = Counter()
        #: join consecutive WINDOW messages into WINDOWS (the session's bus version is 4+)
        self.batch_windows = False

    def send(self, msg: Message, channel: Channel | None = None) -> None:
        """Encode and queue ``msg`` on ``channel`` (default: ``channel_for(msg)``)."""
        self._queue.append((channel_for(msg) if channel is None else channel, encode(msg)))
        self.sent[type(msg)] += 1

    def send_bulk(self, msg: Message) -> None:
        self.send(msg, Channel.BULK)

    def send_encoded(self, channel: Channel, data: bytes, kind: type) -> None:
        """Queue a message already encoded (by a fast codec of ``ira.wire.bus``);
        ``kind`` is its message class, for the counters."""
        self._queue.append((channel, data))
        self.sent[kind] += 1

    def take(self) -> list[tuple[Channel, bytes]]:
        queue, self._queue = self._queue, []
        if self.batch_windows and len(queue) > 1:
            return self._batched(queue)
        return queue

    def _batched(self, queue: list[tuple[Channel, bytes]]) -> list[tuple[Channel, bytes]]:
        out: list[tuple[Channel, bytes]] = []
        run: list[bytes] = []
        for channel, data in queue:
            if channel is Channel.BULK and data[0] == _WINDOW_TAG:
                if run and (len(run) == MAX_BATCH_UPDATES or len(data) > JOIN_BYTES):
                    self._close(run, out)
                    run = []
                run.append(data)
                continue
            if run:
                self._close(run, out)
                run = []
            out.append((channel, data))
        if run:
            self._close(run, out)
        return out

    def _close(self, run: list[bytes], out: list[tuple[Channel, bytes]]) -> None:
        if len(run) == 1:
            out.append((Channel.BULK, run[0]))
            return
        out.append((Channel.BULK, windows_of(run)))
        self.sent[WindowBatch] += 1

    def clear(self) -> None:
        """Forget what the old session had not handed over yet."""
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
