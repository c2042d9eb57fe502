"""ira runs every conformance vector (conformance/*.json) against its own cores, and the cases
marked ``process`` against a running ``ira board serve`` over a pty."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import serial
from vectors import RUNNER_EPOCH, load, run_bus_case, run_link_case, seal

from ira.busmodel.connector import Connector
from ira.busmodel.devices import BoardInfo, CountingDevice, Echo, RingLoopback
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import Channel, MessageReceived, SessionStarted
from ira.link.framing import StreamDeframer, encode_frames
from ira.tools.nullmodem import NullModem
from ira.wire.link import BadCrc, check_crc

ROOT = Path(__file__).resolve().parents[2]
BUS = load("bus.json")
LINK = load("link.json")


def _board_connector(now: float) -> Connector:
    connector = Connector()
    for device in (
        BoardInfo("ira-board", started_at=now),
        Echo(),
        CountingDevice(),
        RingLoopback(),
    ):
        connector.add_device(device, now=now)
    return connector


class ConnectorBus:
    """The board's bus core alone, in a link session that has started."""

    def __init__(self) -> None:
        self.connector = _board_connector(0.0)
        self.connector.handle_link_event(SessionStarted(1, 2, 1, 65536, 1), now=0.0)

    def send(self, channel: int, message: bytes) -> None:
        self.connector.handle_link_event(MessageReceived(Channel(channel), message), now=0.0)

    def replies(self) -> list[bytes]:
        return [data for _, data in self.connector.messages_to_send()]

    def counters(self) -> Mapping[str, int]:
        return self.connector.statistics().as_dict()


class BoardCore:
    """A board's link core and bus core joined as the runtime joins them, in simulated time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.link = Link(LinkConfig(), rng=random.Random(7), now=self.now)
        self.connector = _board_connector(self.now)
        self.deframer = StreamDeframer(1 << 20)
        self.out: list[bytes] = []

    def _pump(self) -> None:
        while (ev := self.link.next_event()) is not None:
            self.connector.handle_link_event(ev, now=self.now)
            for channel, data in self.connector.messages_to_send():
                self.link.send_message(data, channel)
        for chunk in self.link.data_to_send(now=self.now):
            self.out += self.deframer.feed(chunk)

    def send_bytes(self, data: bytes) -> None:
        self.link.receive_data(data, now=self.now)
        self._pump()

    def send_frame(self, body: bytes) -> None:
        self.send_bytes(encode_frames([seal(body)]))

    def frames(self, seconds: float) -> list[bytes]:
        end = self.now + seconds
        while True:
            self._pump()
            deadline = self.link.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.link.handle_timeout(now=self.now)
        self.now = end
        self._pump()
        frames, self.out = self.out, []
        return [bytes(check_crc(f)) for f in frames if _crc_ok(f)]

    def counters(self) -> Mapping[str, int]:
        stats = self.link.statistics()
        numbers = {
            k: v
            for k, v in dataclasses.asdict(stats).items()
            if type(v) is int  # not bool
        }
        drops = {f"drop_{k}": v for k, v in stats.drops.items()}
        return {**self.connector.statistics().as_dict(), **numbers, **drops}


def _crc_ok(frame: bytes) -> bool:
    try:
        check_crc(frame)
    except BadCrc:  # spoiled on the line: not one of the board's frames
        return False
    return True


@pytest.mark.parametrize("case", BUS, ids=lambda c: c["name"])
def test_bus_vector_against_the_connector(case: dict[str, Any]) -> None:
    run_bus_case(case, ConnectorBus())


@pytest.mark.parametrize("case", LINK, ids=lambda c: c["name"])
def test_link_vector_against_the_link_and_bus_cores(case: dict[str, Any]) -> None:
    run_link_case(case, BoardCore())


# --- a running process over a pty ------------------------------------------------------


class PortFrames:
    """Raw frames over a serial port to a running board."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.deframer = StreamDeframer(1 << 20)

    def send_bytes(self, data: bytes) -> None:
        self.port.write(data)

    def send_frame(self, body: bytes) -> None:
        self.send_bytes(encode_frames([seal(body)]))

    def frames(self, seconds: float) -> list[bytes]:
        end = time.monotonic() + seconds
        frames: list[bytes] = []
        while (left := end - time.monotonic()) > 0:
            self.port.timeout = left
            data = self.port.read(max(1, self.port.in_waiting))
            if data:
                frames += [bytes(check_crc(f)) for f in self.deframer.feed(data) if _crc_ok(f)]
        return frames

    def counters(self) -> None:
        return None


class PortBus:
    """Bus messages to a running board, carried by a link core of the runner's."""

    QUIET_S = 0.5

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.link = Link(LinkConfig(), rng=random.Random(RUNNER_EPOCH), now=time.monotonic())
        self.received: list[bytes] = []
        self._turn(until=lambda: self.link.state.value == "up", limit_s=5.0)

    def _turn(self, until: Any, limit_s: float) -> None:
        end = time.monotonic() + limit_s
        while time.monotonic() < end and not until():
            now = time.monotonic()
            self.link.handle_timeout(now=now)
            for chunk in self.link.data_to_send(now=now):
                self.port.write(chunk)
            deadline = self.link.next_deadline()
            self.port.timeout = max(0.0, min(0.01, (deadline or now + 0.01) - now))
            data = self.port.read(max(1, self.port.in_waiting))
            if data:
                self.link.receive_data(data, now=time.monotonic())
            while (ev := self.link.next_event()) is not None:
                if isinstance(ev, MessageReceived):
                    self.received.append(ev.payload)
        assert until() or limit_s == self.QUIET_S, "the board did not answer in time"

    def send(self, channel: int, message: bytes) -> None:
        self.link.send_message(message, Channel(channel))
        self._turn(until=lambda: not self.link.busy, limit_s=5.0)

    def replies(self) -> list[bytes]:
        # quiet: nothing new for QUIET_S
        while True:
            seen = len(self.received)
            self._turn(until=lambda n=seen: len(self.received) > n, limit_s=self.QUIET_S)
            if len(self.received) == seen:
                break
        out, self.received = self.received, []
        return out

    def counters(self) -> None:
        return None


@pytest.fixture
def board() -> Iterator[str]:
    """A running ``ira board serve`` on one end of a null-modem; yields the other end."""
    with NullModem() as cable:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "ira", "board", "serve", cable.path_a],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            assert "serving on" in process.stdout.readline()
            yield cable.path_b
            assert process.poll() is None, "the board exited"
        finally:
            process.kill()
            process.wait()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", [c for c in LINK if c["process"]], ids=lambda c: c["name"])
def test_link_vector_against_a_running_board(case: dict[str, Any], board: str) -> None:
    with serial.Serial(board, timeout=0.01) as port:
        run_link_case(case, PortFrames(port), slack=4.0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", [c for c in BUS if c["process"]], ids=lambda c: c["name"])
def test_bus_vector_against_a_running_board(case: dict[str, Any], board: str) -> None:
    with serial.Serial(board, timeout=0.01) as port:
        run_bus_case(case, PortBus(port))
