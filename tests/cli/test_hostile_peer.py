"""`ira board serve` and `ira host serve` against a hostile peer on a real pty.

The peer speaks valid framing and CRCs and breaks the rules above them; the
process must answer, count and log, and go on serving a legitimate peer: never
exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ira.link.framing import StreamDeframer, encode_frames
from ira.runtime import BoardService, HostClient
from ira.tools.nullmodem import NullModem
from ira.transports import open_transport
from ira.transports.base import Transport
from ira.wire.link import (
    VERSION_MAX,
    Data,
    Hello,
    HelloRefused,
    LinkFrame,
    Refusal,
    decode,
    encode,
)

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
EPOCH = 0x0BAD_0000_0000_0001


def _ira(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "ira", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class HostilePeer:
    """A peer that builds its frames by hand."""

    def __init__(self, port: Transport) -> None:
        self.port = port
        self._deframer = StreamDeframer(1 << 20)

    def send(self, *frames: bytes) -> None:
        data = encode_frames(list(frames))
        while data:
            data = data[self.port.send(data, 1.0) :]

    def wait_for(self, kind: type[LinkFrame], timeout_s: float = 5.0) -> LinkFrame:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for raw in self._deframer.feed(self.port.recv(0.1)):
                frame = decode(raw)
                if isinstance(frame, kind):
                    return frame
        raise AssertionError(f"no {kind.__name__} within {timeout_s} s")

    def ask(self, frame: bytes, kind: type[LinkFrame], timeout_s: float = 10.0) -> LinkFrame:
        """Send ``frame`` every half second (the other end may not have opened its
        port yet) until a frame of ``kind`` comes back."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send(frame)
            with contextlib.suppress(AssertionError):
                return self.wait_for(kind, 0.5)
        raise AssertionError(f"no {kind.__name__} within {timeout_s} s")


def hello(*, ack: bool = False, peer_epoch: int = 0, **fields: int) -> bytes:
    values = {
        "version_min": 1,
        "version_max": VERSION_MAX,
        "epoch": EPOCH,
        "features": 1,
        "max_frame_bytes": 1500,
        "window_bytes": 1 << 16,
        "keepalive_ms": 250,
    }
    values.update(fields)
    return encode(Hello(ack=ack, peer_epoch=peer_epoch, **values))


@pytest.fixture
def cable() -> Iterator[NullModem]:
    with NullModem() as nm:
        yield nm


def attack(port: Transport) -> None:
    """Every kind of bad input finding 1-3 of the protocol review named, in one go."""
    peer = HostilePeer(port)
    # only versions this end does not speak: an answer with its range and a reason
    refused = peer.ask(
        hello(version_min=VERSION_MAX + 1, version_max=VERSION_MAX + 5), HelloRefused
    )
    assert isinstance(refused, HelloRefused)
    assert (refused.peer_epoch, refused.reason) == (EPOCH, Refusal.VERSION)
    assert refused.version_max == VERSION_MAX
    # fields out of range: refused with the reason, never ignored
    for fields, reason in [
        ({"window_bytes": 1023}, Refusal.WINDOW_BYTES),
        ({"max_frame_bytes": 63}, Refusal.MAX_FRAME_BYTES),
        ({"keepalive_ms": 0}, Refusal.KEEPALIVE_MS),
    ]:
        peer.send(hello(**fields))
        refused = peer.wait_for(HelloRefused)
        assert isinstance(refused, HelloRefused) and refused.reason == reason
    # a session, then a message length prefix that runs past its five bytes
    peer.send(hello())
    answer = peer.wait_for(Hello)
    assert isinstance(answer, Hello) and answer.ack
    tag = (answer.epoch ^ EPOCH) & 0xFFFF
    prefix = bytes.fromhex("80 80 80 80 80 80 01")
    peer.send(encode(Data(0, tag, 0, 0, 64, 1, 0, prefix)))
    # the session is reset: the process offers a new one with a new epoch
    offer = peer.wait_for(Hello)
    assert isinstance(offer, Hello) and offer.epoch != answer.epoch


def test_board_serve_refuses_a_hostile_host_and_serves_the_next(cable: NullModem) -> None:
    board = _ira("board", "serve", cable.path_a)
    try:
        assert board.stdout is not None
        assert "serving on" in board.stdout.readline()
        port = open_transport(cable.path_b)
        try:
            attack(port)
        finally:
            port.close()
        assert board.poll() is None
        with HostClient(cable.path_b) as host:
            assert "echo" in [d.type for d in host.wait_ready(timeout_s=5.0)]
        board.send_signal(signal.SIGTERM)
        assert board.wait(5) == 0
        err = board.communicate()[1]
    finally:
        board.kill()
        board.wait()
    # at the default log level: the refusal, and the reset, said once each
    assert "handshake refused" in err and "install matching ira releases" in err
    assert err.count("handshake refused") == 4  # one line per kind of refusal


def test_host_serve_refuses_a_hostile_board_and_serves_the_next(cable: NullModem) -> None:
    host = _ira("host", "serve", cable.path_b)
    try:
        port = open_transport(cable.path_a)
        try:
            attack(port)
        finally:
            port.close()
        assert host.poll() is None
        with BoardService(cable.path_a):
            assert host.stdout is not None
            deadline = time.monotonic() + 10
            lines: list[str] = []
            while time.monotonic() < deadline and not any("echo" in ln for ln in lines):
                lines.append(host.stdout.readline())
            assert any("echo" in ln for ln in lines), lines
        host.send_signal(signal.SIGTERM)
        assert host.wait(5) == 0
        err = host.communicate()[1]
    finally:
        host.kill()
        host.wait()
    assert "handshake refused" in err
