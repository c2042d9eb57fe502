"""The virtual null-modem: integrity, throttling, faults, unplug, board off, and the CLI."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ira.errors import ConfigError
from ira.tools.nullmodem import NullModem, NullModemConfig, NullModemStatistics
from ira.transports.serial import SerialTransport, open_serial


def recv_all(port: SerialTransport, size: int, timeout_s: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    while len(data) < size:
        assert time.monotonic() < deadline, f"only {len(data)} of {size} bytes arrived"
        data += port.recv(0.05)
    return bytes(data)


def recv_until_quiet(port: SerialTransport, quiet_s: float = 0.2) -> bytes:
    data = bytearray()
    while chunk := port.recv(quiet_s):
        data += chunk
    return bytes(data)


def send_all(port: SerialTransport, data: bytes, timeout_s: float = 20.0) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + timeout_s
    while view:
        assert time.monotonic() < deadline, f"{len(view)} bytes could not be sent"
        view = view[port.send(bytes(view[:65536]), 0.1) :]


def sender(port: SerialTransport, data: bytes) -> threading.Thread:
    thread = threading.Thread(target=send_all, args=(port, data))
    thread.start()
    return thread


Cable = tuple[NullModem, SerialTransport, SerialTransport]


@pytest.fixture
def cable() -> Iterator[Cable]:
    """An unthrottled, fault-free null-modem with a serial port open on each end."""
    with NullModem() as modem:
        a, b = open_serial(modem.path_a), open_serial(modem.path_b)
        modem.wait_until_open()
        yield modem, a, b
        a.close()
        b.close()


def test_unthrottled_carries_every_byte_both_ways_at_once(cable: Cable) -> None:
    modem, a, b = cable
    rng = random.Random(1)
    ab, ba = rng.randbytes(4 << 20), rng.randbytes(3 << 20)
    threads = [sender(a, ab), sender(b, ba)]
    got_ba = bytearray()

    def reader() -> None:
        got_ba.extend(recv_all(a, len(ba)))

    reading = threading.Thread(target=reader)
    reading.start()
    assert recv_all(b, len(ab)) == ab
    reading.join()
    for thread in threads:
        thread.join()
    assert bytes(got_ba) == ba
    stats = modem.statistics()
    assert stats.a_to_b.bytes_in == stats.a_to_b.bytes_out == len(ab)
    assert stats.b_to_a.bytes_in == stats.b_to_a.bytes_out == len(ba)
    assert stats.a_to_b.bits_flipped == stats.a_to_b.bytes_dropped == 0


@pytest.mark.parametrize("baud", [19200, 115200])
def test_throttled_rate_stays_under_baud_over_10(baud: int) -> None:
    rate = baud / 10
    with NullModem(NullModemConfig(baud=baud)) as modem:
        a, b = open_serial(modem.path_a), open_serial(modem.path_b)
        modem.wait_until_open()
        thread = sender(a, bytes(int(rate * 0.8)))
        first = b.recv(5.0)
        started = time.monotonic()
        received = 0
        while time.monotonic() - started < 0.6:
            received += len(b.recv(0.05))
        elapsed = time.monotonic() - started
        # upper bound only: the bucket holds 10 ms of line time
        assert first and received <= rate * elapsed * 1.02 + rate * 0.01 + 16
        recv_until_quiet(b)
        thread.join()
        a.close()
        b.close()


def test_backpressure_never_drops(cable: Cable) -> None:
    modem, a, b = cable
    rng = random.Random(2)
    sent = bytearray()
    while True:  # nobody reads B: the cable must stall the sender, not lose bytes
        chunk = rng.randbytes(8192)
        count = a.send(chunk, 0) or a.send(chunk, 0.1)
        if count == 0:
            break
        sent += chunk[:count]
    assert len(sent) < 1 << 20, "no backpressure: the null-modem kept taking bytes"
    assert recv_all(b, len(sent)) == sent
    stats = modem.statistics().a_to_b
    assert stats.bytes_lost_board_off == stats.bytes_lost_unplugged == 0


FAULTS = NullModemConfig(ber=1e-3, drop=0.01, dup=0.01, burst_rate=1e-3, burst_bytes=4, seed=7)


def run_faulty(config: NullModemConfig, data: bytes) -> tuple[bytes, NullModemStatistics]:
    with NullModem(config) as modem:
        a, b = open_serial(modem.path_a), open_serial(modem.path_b)
        modem.wait_until_open()
        thread = sender(a, data)
        received = recv_until_quiet(b, 0.3)
        thread.join()
        stats = modem.statistics()
        a.close()
        b.close()
    return received, stats


def test_fault_counters_follow_the_probabilities() -> None:
    size = 256 * 1024
    received, stats = run_faulty(FAULTS, random.Random(3).randbytes(size))
    ab = stats.a_to_b
    assert ab.bytes_in == size
    assert ab.bytes_out == len(received) == size - ab.bytes_dropped + ab.bytes_duplicated
    assert 0.7 * size * 0.01 < ab.bytes_dropped < 1.3 * size * 0.01
    assert 0.7 * size * 0.01 < ab.bytes_duplicated < 1.3 * size * 0.01
    assert 0.7 * size * 1e-3 < ab.bursts < 1.3 * size * 1e-3
    ber_flips = 8 * size * 1e-3
    burst_flips = ab.bursts * 4 * 4  # 4 bytes of about 4 flipped bits each
    assert 0.7 * (ber_flips + burst_flips) < ab.bits_flipped < 1.3 * (ber_flips + burst_flips)
    assert stats.b_to_a.bytes_in == 0


def test_same_seed_same_faults() -> None:
    data = random.Random(4).randbytes(64 * 1024)
    first = run_faulty(FAULTS, data)
    second = run_faulty(FAULTS, data)
    assert first == second
    other = run_faulty(NullModemConfig(ber=1e-3, drop=0.01, dup=0.01, seed=8), data)
    assert other[0] != first[0]


def test_unplug_loses_bytes_for_its_duration_then_carries_again(cable: Cable) -> None:
    modem, a, b = cable
    assert a.send(b"before", 1.0) == 6
    assert recv_all(b, 6) == b"before"
    modem.unplug(0.3)
    started = time.monotonic()
    assert a.send(b"lost in the air", 1.0) == 15
    assert b.recv(0.1) == b""
    time.sleep(max(0.0, 0.35 - (time.monotonic() - started)))
    assert a.send(b"after", 1.0) == 5
    assert recv_all(b, 5) == b"after"
    stats = modem.statistics()
    assert stats.unplugs == 1
    assert stats.a_to_b.bytes_lost_unplugged == 15


def test_scheduled_unplugs() -> None:
    config = NullModemConfig(unplug_every_s=0.1, unplug_for_s=0.05)
    with NullModem(config) as modem:
        time.sleep(0.35)
        assert 2 <= modem.statistics().unplugs <= 4


def test_an_end_closed_and_reopened_keeps_working(cable: Cable) -> None:
    modem, a, b = cable
    b.close()
    deadline = time.monotonic() + 2.0
    # the board is off: what A sends toward it is discarded, not queued
    while modem.statistics().a_to_b.bytes_lost_board_off == 0:
        assert time.monotonic() < deadline, "bytes toward a closed end were never discarded"
        a.send(b"into the void", 0.1)
        time.sleep(0.01)
    b2 = open_serial(modem.path_b)
    modem.wait_until_open()
    assert b2.recv(0.05) == b""  # nothing stale from the time it was off
    assert a.send(b"welcome back", 1.0) == 12
    assert recv_all(b2, 12) == b"welcome back"
    assert b2.send(b"hello A", 1.0) == 7
    assert recv_all(a, 7) == b"hello A"
    b2.close()


def test_bytes_left_by_a_closing_end_are_delivered(cable: Cable) -> None:
    _, a, b = cable
    assert a.send(b"last words", 1.0) == 10
    a.close()
    assert recv_all(b, 10) == b"last words"


def test_stop_is_prompt_with_traffic_pending() -> None:
    modem = NullModem(NullModemConfig(baud=1200))
    with modem:
        a = open_serial(modem.path_a)
        a.send(bytes(2000), 0.1)
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    a.close()


@pytest.mark.parametrize(
    "config",
    [
        {"baud": 0},
        {"ber": 1.5},
        {"drop": -0.1},
        {"dup": float("nan")},
        {"burst_rate": 0.1, "burst_bytes": 0},
        {"unplug_every_s": 0.0},
        {"unplug_for_s": -1.0},
    ],
)
def test_bad_config_is_config_error(config: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        NullModemConfig(**config)  # type: ignore[arg-type]


# -- the command ------------------------------------------------------------------

_DRIVER = """
import argparse, sys
from ira.cli import nullmodem
from ira.errors import ConfigError, IraError
parser = argparse.ArgumentParser(prog="ira")
nullmodem.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(args.func(args))
except ConfigError as exc:
    print(f"ira {args.command}: {exc}", file=sys.stderr)
    sys.exit(2)
except IraError as exc:
    print(f"ira {args.command}: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def ira_command(*args: str) -> list[str]:
    """``python -m ira …``, or the nullmodem module alone while other subcommands are missing."""
    try:
        complete = all(
            importlib.util.find_spec(name) is not None
            for name in ("ira.cli.nullmodem", "ira.cli.linktest")
        )
    except ModuleNotFoundError:
        complete = False
    if complete:
        return [sys.executable, "-m", "ira", *args]
    return [sys.executable, "-c", _DRIVER, *args]


@pytest.fixture
def command(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        ira_command(
            "nullmodem",
            "--seed",
            "5",
            "--link-a",
            str(tmp_path / "a"),
            "--link-b",
            str(tmp_path / "b"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


def test_command_prints_paths_carries_bytes_and_stops_on_sigterm(
    command: subprocess.Popen[str], tmp_path: Path
) -> None:
    assert command.stdout is not None and command.stderr is not None
    line_a, line_b = command.stdout.readline().split(), command.stdout.readline().split()
    assert line_a[0] == "A" and line_b[0] == "B"
    assert os.path.realpath(tmp_path / "a") == line_a[1]
    assert os.path.realpath(tmp_path / "b") == line_b[1]
    a, b = open_serial(str(tmp_path / "a")), open_serial(line_b[1])
    deadline = time.monotonic() + 5.0
    received = b""
    while not received:  # until the null-modem has seen B opened
        assert time.monotonic() < deadline
        a.send(b"x", 0.1)
        received = b.recv(0.05)
    command.send_signal(signal.SIGUSR1)
    time.sleep(0.1)
    a.close()
    b.close()
    command.send_signal(signal.SIGTERM)
    assert command.wait(5) == 0
    stderr = command.stderr.read()
    assert "A->B:" in stderr and "B->A:" in stderr
    assert "unplugs: 1, seed: 5" in stderr
    assert not os.path.lexists(tmp_path / "a") and not os.path.lexists(tmp_path / "b")


def test_command_stops_on_sigint(command: subprocess.Popen[str]) -> None:
    assert command.stdout is not None
    assert command.stdout.readline().startswith("A ")
    command.send_signal(signal.SIGINT)
    assert command.wait(5) == 0


@pytest.mark.parametrize(
    "option", [["--ber", "2"], ["--baud", "fast"], ["--burst", "0.1:0"], ["--unplug-for", "0"]]
)
def test_command_bad_option_is_one_line_and_exit_2(option: list[str]) -> None:
    done = subprocess.run(
        ira_command("nullmodem", *option), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ira nullmodem: ")
