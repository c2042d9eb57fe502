"""The pre-shared key over a real pty pair: a keyed board, and on the other end
the test itself, speaking the link through a keyed core and writing forged,
replayed and wrong-key frames into the port."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator

import pytest

from ira.errors import LinkClosed
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.framing import StreamDeframer, encode_frames
from ira.link.states import LinkState
from ira.runtime import BoardService
from ira.tools.nullmodem import NullModem
from ira.transports import Transport, open_transport
from ira.wire.link import CRC_BYTES, FrameType, check_crc, seal

pytestmark = pytest.mark.timeout(30)

KEY = b"sixteen byte key and then some"
OTHER_KEY = b"another key, just as long as it"


class Peer:
    """A keyed link core on the test's end of the cable, pumped by hand."""

    def __init__(self, transport: Transport, psk: bytes, seed: int) -> None:
        self.transport = transport
        self.link = Link(LinkConfig(psk=psk), rng=random.Random(seed), now=time.monotonic())
        #: every chunk this end wrote, as an eavesdropper on the line sees them
        self.written: list[bytes] = []

    def pump(self, until: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        limit = time.monotonic() + timeout_s
        while not until():
            now = time.monotonic()
            if now > limit:
                return False
            for chunk in self.link.data_to_send(now=now):
                self.written.append(chunk)
                write(self.transport, chunk)
            data = self.transport.recv(0.01)
            now = time.monotonic()
            if data:
                self.link.receive_data(data, now=now)
            deadline = self.link.next_deadline()
            if deadline is not None and deadline <= now:
                self.link.handle_timeout(now=now)
            while self.link.next_event() is not None:
                pass
        return True

    def up(self) -> bool:
        return self.link.state is LinkState.UP


def write(transport: Transport, data: bytes) -> None:
    while data:
        n = transport.send(data, 1.0)
        data = data[n:]


def frames_of(chunks: list[bytes]) -> list[bytes]:
    deframer = StreamDeframer(1 << 17)
    return [bytes(f) for chunk in chunks for f in deframer.feed(chunk)]


@pytest.fixture
def rig() -> Iterator[tuple[BoardService, Transport]]:
    with NullModem() as nm, BoardService(nm.path_a, link_config=LinkConfig(psk=KEY)) as board:
        transport = open_transport(nm.path_b)
        try:
            yield board, transport
        finally:
            transport.close()


def board_link(board: BoardService) -> tuple[int, int, int, str]:
    """The board's link: refused frames, sessions, peer restarts, state."""
    st = board.runtime.call(board.runtime.core.statistics)
    return st.drop_unauthenticated, st.sessions, st.peer_restarts, st.state


def test_forged_replayed_and_wrong_key_frames_are_dropped_and_counted(
    rig: tuple[BoardService, Transport],
) -> None:
    board, transport = rig
    first = Peer(transport, KEY, seed=1)
    assert first.pump(first.up)
    assert first.pump(lambda: False, timeout_s=1.0) is False  # a few keepalives each way
    old = frames_of(first.written)
    assert {FrameType.HELLO, FrameType.HELLO_ACK, FrameType.ACK} <= {f[0] for f in old}

    # the test's end restarts: a second session
    second = Peer(transport, KEY, seed=2)
    assert second.pump(second.up)
    assert second.pump(lambda: board_link(board)[2] == 1)
    refused, sessions, restarts, state = board_link(board)
    assert (sessions, restarts, state) == (2, 1, "up")

    # everything of the first session, written again
    write(transport, encode_frames(old))
    stale = [f for f in old if f[0] in (FrameType.DATA, FrameType.ACK)]
    assert second.pump(lambda: board_link(board)[0] >= refused + len(stale))

    # frames of this session with a byte changed and the CRC fixed up
    assert second.pump(lambda: False, timeout_s=1.0) is False  # keepalives: ACK frames
    current = [f for f in frames_of(second.written) if f[0] == FrameType.ACK]
    assert current
    forged = [seal(f[:5] + bytes([f[5] ^ 1]) + f[6:-CRC_BYTES]) for f in current]
    refused = board_link(board)[0]
    write(transport, encode_frames(forged))
    assert second.pump(lambda: board_link(board)[0] == refused + len(forged))
    check_crc(forged[0])  # the CRC was right: only the MAC told them apart

    # a peer with another key: its HELLOs are refused
    refused = board_link(board)[0]
    stranger = Peer(transport, OTHER_KEY, seed=3)
    assert stranger.pump(lambda: board_link(board)[0] >= refused + 2)
    assert not stranger.up()

    # none of it reset or ended the session with the second peer
    assert second.pump(lambda: False, timeout_s=0.3) is False
    _, sessions, restarts, state = board_link(board)
    assert (sessions, restarts, state) == (2, 1, "up")


def test_a_key_alone_takes_the_framing_of_a_packet_transport() -> None:
    """``--psk-file`` makes a config that says nothing of framing: it follows the link's."""
    from ira.runtime import HostClient
    from ira.transports.mem import mem_pair

    a, b = mem_pair()
    config = LinkConfig(psk=KEY)
    assert not config.packet and a.packet
    answered = refused = None
    # a mem pair ends the board's link with LinkClosed when the host's end closes first
    with (
        contextlib.suppress(LinkClosed),
        BoardService(a, link_config=config),
        HostClient(b, link_config=config) as host,
    ):
        answered = host.ping(b"over packets", timeout_s=5.0).payload
        refused = host.runtime.call(host.runtime.core.statistics).drop_unauthenticated
    assert (answered, refused) == (b"over packets", 0)
