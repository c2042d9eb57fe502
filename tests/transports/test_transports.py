"""One conformance suite run against every transport, then what is particular to each.

Each ``Test…Transport`` class provides a ``pair`` fixture (two transports
joined to each other; ``loop://`` is joined to itself) and inherits every
test of ``TransportConformance``.
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
from collections.abc import Iterator

import pytest
import serial

from ira.errors import ConfigError, LinkClosed, TransportError
from ira.tools.nullmodem import NullModem
from ira.transports import open_transport
from ira.transports.base import Transport
from ira.transports.mem import mem_pair
from ira.transports.serial import DEFAULT_BAUD, SerialOptions, open_serial, parse_serial_spec

Pair = tuple[Transport, Transport]


def recv_exactly(rx: Transport, size: int, timeout_s: float = 10.0) -> bytes:
    """Read stream bytes until ``size`` arrived (fails the test on a deadline)."""
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    while len(data) < size:
        assert time.monotonic() < deadline, f"only {len(data)} of {size} bytes arrived"
        data += rx.recv(0.05)
    return bytes(data)


def transfer(
    tx: Transport, rx: Transport, data: bytes, seed: int, timeout_s: float = 20.0
) -> bytes:
    """Push ``data`` through in sends cut at random sizes, receiving meanwhile."""
    rng = random.Random(seed)
    view = memoryview(data)
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    while len(received) < len(data):
        assert time.monotonic() < deadline, f"only {len(received)} of {len(data)} bytes arrived"
        if view:
            sent = tx.send(bytes(view[: rng.randint(1, 70000)]), rng.choice((0, 0, 0.001)))
            view = view[sent:]
        received += rx.recv(0 if view else 0.05)
    return bytes(received)


def transfer_packets(tx: Transport, rx: Transport, packets: list[bytes]) -> list[bytes]:
    """Send each packet whole, receiving meanwhile; return the packets received."""
    received: list[bytes] = []
    todo = list(packets)
    deadline = time.monotonic() + 20.0
    while len(received) < len(packets):
        assert time.monotonic() < deadline, f"only {len(received)} of {len(packets)} packets"
        if todo:
            sent = tx.send(todo[0], 0)
            assert sent in (0, len(todo[0])), "a packet transport sent part of a packet"
            if sent:
                todo.pop(0)
        packet = rx.recv(0 if todo else 0.05)
        if packet:
            received.append(packet)
    return received


class TransportConformance:
    """What every transport must do (transport.py's ``Transport`` protocol)."""

    #: bytes pushed through by the large-transfer test
    transfer_bytes = 1 << 20

    @pytest.fixture
    def pair(self) -> Iterator[Pair]:
        raise NotImplementedError

    def test_implements_the_protocol(self, pair: Pair) -> None:
        for transport in pair:
            assert isinstance(transport, Transport)
            assert isinstance(transport.name, str) and transport.name
            assert isinstance(transport.packet, bool)

    def test_round_trip_both_ways(self, pair: Pair) -> None:
        a, b = pair
        assert a.send(b"ping", 1.0) == 4
        assert self._recv_message(b, 4) == b"ping"
        assert b.send(b"pong!", 1.0) == 5
        assert self._recv_message(a, 5) == b"pong!"

    def test_large_transfer_cut_at_random_sizes(self, pair: Pair) -> None:
        a, b = pair
        rng = random.Random(1)
        if a.packet:
            packets = [rng.randbytes(rng.randint(1, 65536)) for _ in range(64)]
            assert transfer_packets(a, b, packets) == packets
        else:
            data = rng.randbytes(self.transfer_bytes)
            assert transfer(a, b, data, seed=2) == data
            assert transfer(b, a, data[::-1], seed=3) == data[::-1]

    def test_recv_timeout_returns_empty(self, pair: Pair) -> None:
        _, b = pair
        started = time.monotonic()
        assert b.recv(0) == b""
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        assert b.recv(0.1) == b""
        elapsed = time.monotonic() - started
        assert 0.09 <= elapsed < 1.0

    def test_send_when_full_returns_zero_and_loses_nothing(self, pair: Pair) -> None:
        a, b = pair
        rng = random.Random(4)
        sent: list[bytes] = []
        for _ in range(10_000):
            chunk = rng.randbytes(4096)
            # full means: nothing accepted even after waiting (a relay may lag behind)
            count = a.send(chunk, 0) or a.send(chunk, 0.1)
            if count == 0:
                break
            sent.append(chunk[:count])
        else:
            pytest.fail("the transport never filled up")
        started = time.monotonic()
        assert a.send(b"x" * 4096, 0.1) == 0
        assert 0.09 <= time.monotonic() - started < 1.5
        if a.packet:
            assert [b.recv(1.0) for _ in sent] == sent
        else:
            expected = b"".join(sent)
            assert recv_exactly(b, len(expected)) == expected
        assert b.recv(0.05) == b""

    def test_close_makes_every_call_raise_link_closed(self, pair: Pair) -> None:
        a, _ = pair
        a.close()
        a.close()  # idempotent
        with pytest.raises(LinkClosed):
            a.recv(0)
        with pytest.raises(LinkClosed):
            a.send(b"x", 0)
        with pytest.raises(LinkClosed):
            a.fileno()

    def test_close_wakes_a_blocked_recv(self, pair: Pair) -> None:
        _, b = pair
        outcome: list[BaseException | bytes] = []

        def reader() -> None:
            try:
                outcome.append(b.recv(None))
            except TransportError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.1)
        b.close()
        thread.join(3.0)
        assert not thread.is_alive(), "recv(None) kept blocking after close()"
        assert len(outcome) == 1 and isinstance(outcome[0], LinkClosed)

    def test_fileno_is_selectable_when_given(self, pair: Pair) -> None:
        a, b = pair
        fd = b.fileno()
        if fd is None:
            pytest.skip(f"{b.name} is not selectable")
        assert select.select([fd], [], [], 0)[0] == []
        a.send(b"wake", 1.0)
        assert select.select([fd], [], [], 2.0)[0] == [fd]
        assert self._recv_message(b, 4) == b"wake"

    @staticmethod
    def _recv_message(rx: Transport, size: int) -> bytes:
        if rx.packet:
            return rx.recv(2.0)
        return recv_exactly(rx, size)


class TestMemPacketTransport(TransportConformance):
    @pytest.fixture
    def pair(self) -> Iterator[Pair]:
        a, b = mem_pair(packet=True)
        yield a, b
        a.close()
        b.close()

    def test_peer_close_is_link_closed(self, pair: Pair) -> None:
        a, b = pair
        a.close()
        with pytest.raises(LinkClosed):
            b.recv(1.0)

    def test_oversize_packet_is_refused_in_one_line(self) -> None:
        a, b = mem_pair(packet=True, max_packet_bytes=1024)
        with pytest.raises(TransportError, match="max_packet_bytes") as info:
            a.send(b"x" * 1025, 0)
        assert "\n" not in str(info.value)
        a.close()
        b.close()

    def test_has_no_url_form(self) -> None:
        with pytest.raises(ConfigError):
            open_transport("mem://a")


class TestMemStreamTransport(TransportConformance):
    @pytest.fixture
    def pair(self) -> Iterator[Pair]:
        a, b = mem_pair(packet=False)
        yield a, b
        a.close()
        b.close()

    def test_peer_close_is_link_closed(self, pair: Pair) -> None:
        a, b = pair
        a.close()
        with pytest.raises(LinkClosed):
            b.recv(1.0)


class TestSerialOverNullModem(TransportConformance):
    @pytest.fixture(params=["path", "serial-url"])
    def pair(self, request: pytest.FixtureRequest) -> Iterator[Pair]:
        with NullModem() as cable:
            a: Transport
            b: Transport
            if request.param == "path":
                a, b = open_serial(cable.path_a), open_serial(cable.path_b)
            else:
                a = open_transport(f"serial://{cable.path_a}?baud=921600&rtscts=0")
                b = open_transport(f"serial://{cable.path_b}?baud=921600&xonxoff=0")
            cable.wait_until_open()
            yield a, b
            a.close()
            b.close()

    def test_is_a_selectable_stream(self, pair: Pair) -> None:
        for transport in pair:
            assert not transport.packet
            assert isinstance(transport.fileno(), int)


class TestSerialLoopUrl(TransportConformance):
    """pyserial's loop:// (no descriptor: pyserial's own read/write); joined to itself."""

    transfer_bytes = 64 * 1024

    @pytest.fixture
    def pair(self) -> Iterator[Pair]:
        port = open_serial("loop://")
        yield port, port
        port.close()

    def test_is_not_selectable(self, pair: Pair) -> None:
        assert pair[0].fileno() is None


# -- serial specs and errors ---------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/dev/ttyUSB0", SerialOptions("/dev/ttyUSB0")),
        ("serial:///dev/ttyS1", SerialOptions("/dev/ttyS1")),
        (
            "serial:///dev/ttyS1?baud=921600&rtscts=1&xonxoff=0",
            SerialOptions("/dev/ttyS1", baud=921600, rtscts=True, xonxoff=False),
        ),
        ("loop://", SerialOptions("loop://")),
        ("socket://localhost:7777", SerialOptions("socket://localhost:7777")),
        ("spy:///dev/ttyUSB0?file=trace.txt", SerialOptions("spy:///dev/ttyUSB0?file=trace.txt")),
    ],
)
def test_serial_specs(spec: str, expected: SerialOptions) -> None:
    assert parse_serial_spec(spec) == expected
    assert expected.baud == DEFAULT_BAUD or "baud=" in spec


def test_unknown_serial_option_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="allowed: baud, rtscts, xonxoff"):
        parse_serial_spec("serial:///dev/ttyS1?speed=9600")


@pytest.mark.parametrize(
    "spec",
    [
        "serial:///dev/ttyS1?baud=fast",
        "serial:///dev/ttyS1?baud=0",
        "serial:///dev/ttyS1?rtscts=maybe",
        "serial:///dev/ttyS1?baud=9600&baud=115200",
        "serial://dev/ttyS1",
        "",
    ],
)
def test_bad_serial_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_serial_spec(spec)


def test_bad_pyserial_url_option_is_config_error() -> None:
    with pytest.raises(ConfigError, match="loop://"):
        open_serial("loop://?colour=red")


def test_missing_port_says_how_to_find_one() -> None:
    with pytest.raises(TransportError) as info:
        open_serial("/dev/ttyUSB-ira-missing")
    message = str(info.value)
    assert message == (
        "no such serial port /dev/ttyUSB-ira-missing: check the cable and `ls /dev/serial/by-id/`"
    )
    assert isinstance(info.value.__cause__, serial.SerialException)


def test_busy_port_is_reported_in_one_line() -> None:
    with NullModem() as cable:
        first = open_serial(cable.path_a)
        with pytest.raises(TransportError, match="is busy: another process holds it") as info:
            open_serial(cable.path_a)
        assert "\n" not in str(info.value)
        first.close()
        open_serial(cable.path_a).close()  # free again once closed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_permission_denied_suggests_dialout() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.chmod(path, 0o600)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody and try
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            open_serial(path).close()
            message = "opened"
        except TransportError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"unexpected {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    os.close(slave)
    os.close(master)
    assert message.startswith(f"permission denied on {path}: add your user to the dialout group")
    assert "udev rule" in message and "\n" not in message


def test_pty_whose_master_closed_is_link_closed() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    port = open_serial(path)
    assert port.send(b"hello", 1.0) == 5
    assert os.read(master, 100) == b"hello"
    os.close(master)
    with pytest.raises(LinkClosed, match="hung up") as info:
        port.recv(1.0)
    assert "\n" not in str(info.value)
    with pytest.raises(LinkClosed):
        port.send(b"more", 1.0)
    port.close()


def test_nullmodem_going_away_is_link_closed() -> None:
    with NullModem() as cable:
        port = open_serial(cable.path_a)
    with pytest.raises(LinkClosed):
        port.recv(1.0)
    port.close()


def test_spy_url_is_passed_through(tmp_path: os.PathLike[str]) -> None:
    trace = os.path.join(os.fspath(tmp_path), "trace.txt")
    with NullModem() as cable:
        a = open_serial(f"spy://{cable.path_a}?file={trace}")
        b = open_serial(cable.path_b)
        cable.wait_until_open()
        assert a.fileno() is None  # spy wraps the port: pyserial's read/write
        assert a.send(b"traced", 1.0) == 6
        assert recv_exactly(b, 6) == b"traced"
        a.close()
        b.close()
    with open(trace) as log:
        assert "traced" in log.read()
