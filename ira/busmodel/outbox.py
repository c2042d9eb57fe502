"""The queue of encoded bus messages a core hands to the link.

Which channel a message takes is decided here, in one place (see the
"Channels" section of docs/PROTOCOL.md): window traffic and everything that
must stay ordered with it goes BULK, the rest CONTROL, and a reply goes on
the channel its request came on.
"""

from __future__ import annotations

from collections import Counter

from ira.link.events import Channel
from ira.wire.bus import (
    DevClose,
    Message,
    ShmAttach,
    ShmAttachReply,
    ShmDetach,
    ShmDetachReply,
    SignalNotify,
    SignalState,
    WindowUpdate,
    encode,
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


def channel_for(msg: Message) -> Channel:
    """The channel a message takes when nothing else decides it."""
    return Channel.BULK if isinstance(msg, BULK_MESSAGES) else Channel.CONTROL


class Outbox:
    """Encoded messages waiting for ``messages_to_send()``, with per-kind counters."""

    def __init__(self) -> None:
        self._queue: list[tuple[Channel, bytes]] = []
        #: messages sent, by wire message class
        self.sent: Counter[type] = Counter()

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
        return queue

    def clear(self) -> None:
        """Forget what the old session had not handed over yet."""
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
