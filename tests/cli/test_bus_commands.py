"""`ira board serve`, `host list`, `host serve` and `ping` over the null-modem."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ira.cli.main import main
from ira.runtime import BoardService, HostClient
from ira.tools.nullmodem import NullModem

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cable() -> Iterator[NullModem]:
    with NullModem() as nm:
        yield nm


def test_host_list_prints_one_row_per_device(
    cable: NullModem, capsys: pytest.CaptureFixture[str]
) -> None:
    with BoardService(cable.path_a):
        assert main(["host", "list", cable.path_b]) == 0
        table = capsys.readouterr().out.splitlines()
        assert main(["host", "list", cable.path_b, "--json"]) == 0
        listing = json.loads(capsys.readouterr().out)
    rows = listing["devices"]
    assert listing["link"]["spec"] == cable.path_b and listing["link"]["state"] == "up"
    assert re.fullmatch(rf"link {cable.path_b}: up since \d+\.\d s", table[-1])
    assert table[0].split() == ["ID", "TYPE", "VERSION", "ATTRIBUTES"]
    assert table[1].split() == ["1", "board-info", "1", "board=ira-board", "ira_version=0.1.0"]
    assert [r["type"] for r in rows] == ["board-info", "echo", "counter", "ring-loopback"]
    assert rows[1] == {"id": 2, "type": "echo", "version": 1, "attributes": {}}


def test_ping_twenty_loses_none(cable: NullModem, capsys: pytest.CaptureFixture[str]) -> None:
    with BoardService(cable.path_a):
        assert main(["ping", cable.path_b, "-c", "20", "-i", "0", "-s", "100"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^100 bytes from .*: seq=\d+ time=[\d.]+ ms$", out, re.M)) == 20
    assert "20 calls, 20 replies, 0% lost" in out
    assert re.search(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", out, re.M)


def test_no_board_is_one_line_and_exit_1(
    cable: NullModem, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["host", "list", cable.path_b, "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no board answered within 0.3 s" in err


def test_bad_profile_and_bad_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[device]]\ntype = 'toaster'\n", encoding="utf-8")
    assert main(["board", "serve", "/dev/null", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device[0].type" in err
    assert main(["ping", "/dev/null", "-c", "0"]) == 2


def _ira(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "ira", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_board_serve_reloads_its_profile_on_sighup(cable: NullModem, tmp_path: Path) -> None:
    profile = tmp_path / "board.toml"
    profile.write_text("board = 'bb-1'\n[[device]]\ntype = 'echo'\n", encoding="utf-8")
    board = _ira("board", "serve", cable.path_a, "--profile", str(profile))
    try:
        assert board.stdout is not None
        assert "board bb-1 serving on" in board.stdout.readline()
        with HostClient(cable.path_b) as host:
            assert [d.type for d in host.wait_ready()] == ["echo"]
            profile.write_text("board = 'bb-1'\n[[device]]\ntype = 'counter'\n", encoding="utf-8")
            board.send_signal(signal.SIGHUP)
            assert host.wait_for(lambda ds: [d.type for d in ds] == ["counter"], timeout_s=1.0)
            assert board.stdout.readline().strip() == "profile reloaded: +counter -echo"
            profile.write_text("[[device]]\ntype = 'nope'\n", encoding="utf-8")
            board.send_signal(signal.SIGHUP)
            assert board.stderr is not None
            assert "reload refused" in board.stderr.readline()
            assert [d.type for d in host.devices()] == ["counter"]
        board.send_signal(signal.SIGTERM)
        assert board.wait(5) == 0
    finally:
        board.kill()
        board.wait()


def test_host_serve_logs_devices_of_several_links(tmp_path: Path) -> None:
    with NullModem() as one, NullModem() as two:
        host = _ira("host", "serve", one.path_b, two.path_b)
        try:
            with BoardService(one.path_a), BoardService(two.path_a):
                assert host.stdout is not None
                lines = [host.stdout.readline().strip() for _ in range(10)]
            host.send_signal(signal.SIGTERM)
            assert host.wait(5) == 0
        finally:
            host.kill()
            host.wait()
    for link in (one.path_b, two.path_b):
        assert f"{link}: + device 2 echo v1" in lines
        assert f"{link}: ready: 4 devices" in lines


def _wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(
        f"no line starting {prefix!r}; stderr: {proc.stderr and proc.stderr.read()}"
    )


def test_a_profile_with_its_link_runs_a_board_with_no_other_argument(
    cable: NullModem, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.toml"
    text = (
        "board = 'bb-2'\n\n[link]\nspec = '{spec}'\nbaud = {baud}\nflow_control = 'none'\n\n"
        "[[device]]\ntype = 'echo'\n"
    )
    profile.write_text(text.format(spec=cable.path_a, baud=115200), encoding="utf-8")
    board = _ira("board", "serve", "--profile", str(profile))
    try:
        line = _wait_line(board, "board bb-2 serving on")
        assert f"serial://{cable.path_a}?baud=115200&rtscts=0" in line
        with HostClient(cable.path_b) as host:
            assert [d.type for d in host.wait_ready()] == ["echo"]
            assert host.ping(b"x" * 16).payload == b"x" * 16
            # a reload applies the devices; the link it runs on stays until a restart
            text += "[[device]]\ntype = 'counter'\n"
            profile.write_text(text.format(spec=cable.path_a, baud=9600), encoding="utf-8")
            board.send_signal(signal.SIGHUP)
            assert host.wait_for(lambda ds: len(ds) == 2, timeout_s=2.0)
            line = _wait_line(board, "profile reloaded:")
            assert line == "profile reloaded: +counter ([link] kept until a restart)"
        board.send_signal(signal.SIGTERM)
        assert board.wait(5) == 0
    finally:
        board.kill()
        board.wait()


def test_the_command_line_overrides_the_profiles_link(cable: NullModem, tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text("board = 'bb-3'\n[link]\nspec = '/dev/ira-no-such-port'\n", encoding="utf-8")
    board = _ira("board", "serve", cable.path_a, "--profile", str(profile))
    try:
        assert f"serving on {cable.path_a} " in _wait_line(board, "board bb-3 serving on")
        with HostClient(cable.path_b) as host:
            assert [d.type for d in host.wait_ready()] == []
        board.send_signal(signal.SIGTERM)
        assert board.wait(5) == 0
    finally:
        board.kill()
        board.wait()


@pytest.mark.parametrize(
    ("text", "argv", "message"),
    [
        ("board = 'b'\n", [], "no link: give LINK on the command line or spec in"),
        ("[link]\nspec = 'socket://localhost:1'\nbaud = 9600\n", [], "PROFILE:3: link.baud: baud"),
        (
            "[link]\nspec = 'x'\n\n[net]\ntap = 'ira0'\nmtu = 9\n",
            [],
            "PROFILE:6: net.mtu: 9 is out",
        ),
        ("[link]\nspec = 'x'\n", ["--ip", "10.0.0.1/24"], "give --tap too"),
        ("[link]\nspec = 'x'\n", ["--baud", "7"], "--baud 7 is out of range"),
    ],
)
def test_a_profile_or_flag_that_cannot_work_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    argv: list[str],
    message: str,
) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text(text, encoding="utf-8")
    assert main(["board", "serve", "--profile", str(profile), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("PROFILE", str(profile)) in err, err
