"""Ports that come and go, as the commands show them: ``ira board serve`` waiting for a
port that does not exist yet, ``ira host serve`` serving one link while another's port
is pulled, and the errors a reopen cannot cure staying one-line failures."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ira.cli.main import main
from ira.runtime import BoardService, HostClient
from ira.tools.nullmodem import NullModem

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """An ``ira`` subprocess whose output lines are read as they come."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ira", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout_s: float = 10.0) -> str:
        """The next line matching ``pattern`` (lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line like {pattern!r}; saw {self.seen}") from None
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def finish(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        time.sleep(0.1)  # the reader thread takes the last lines
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def test_board_serve_waits_for_a_port_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = str(tmp_path / "does-not-exist-yet")
    board = Child("board", "serve", path)
    try:
        board.expect(f"^board ira-board serving on {re.escape(path)}")
        board.expect(f"^waiting for {re.escape(path)} to appear \\(no such serial port")
        with NullModem() as cable:
            time.sleep(0.5)  # still waiting, and saying so only once
            cable.symlink("A", path)  # the port appears
            with HostClient(cable.path_b) as host:
                assert [d.type for d in host.wait_ready()][:2] == ["board-info", "echo"]
                assert host.ping(b"hi").payload == b"hi"
            board.expect(r"^port back after \d+\.\d s$")
            assert board.finish() == 0
        assert sum("waiting for" in line for line in board.seen) == 1
    finally:
        board.kill()


def test_host_serve_goes_on_with_the_other_link_while_a_port_is_pulled(tmp_path: Path) -> None:
    with NullModem() as one, NullModem() as two:
        link_one, link_two = str(tmp_path / "one"), str(tmp_path / "two")
        one.symlink("B", link_one)
        two.symlink("B", link_two)
        host = Child("host", "serve", link_one, link_two)
        try:
            with BoardService(one.path_a), BoardService(two.path_a):
                waiting = {link_one, link_two}  # both boards discovered, in either order
                while waiting:
                    waiting.discard(host.expect(r": ready: 4 devices$").split(": ")[0])
                one.pull("B", 1.0)
                host.expect(f"^{re.escape(link_one)}: port gone \\(.*hung up.*\\); reopening it$")
                host.expect(f"^{re.escape(link_one)}: port back after 1\\.\\d s$")
                host.expect(f"^{re.escape(link_one)}: link up after \\d+\\.\\d s; session resumed$")
                assert host.proc.poll() is None  # still serving
            assert host.finish() == 0
            transitions = [line for line in host.seen if "port" in line or "link " in line]
            # one line per transition: no "link down" besides "port gone", none for link two
            assert [line.split(": ", 1)[1].split(" ")[:2] for line in transitions] == [
                ["port", "gone"],
                ["port", "back"],
                ["link", "up"],
            ], host.seen
        finally:
            host.kill()


def test_a_port_that_cannot_be_cured_by_reopening_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_tty = tmp_path / "plain-file"
    not_a_tty.write_text("", encoding="utf-8")
    start = time.monotonic()
    assert main(["board", "serve", str(not_a_tty)]) == 1
    assert time.monotonic() - start < 5.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a serial port" in err


def test_give_up_after_ends_a_wait_for_a_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "never")
    start = time.monotonic()
    assert main(["host", "serve", missing, "--give-up-after", "0.5"]) == 1
    assert 0.5 <= time.monotonic() - start < 5.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stayed away for 0.5 s; giving up" in err
    assert main(["board", "serve", missing, "--give-up-after", "0"]) == 2
    assert "--give-up-after 0: give a positive number of seconds" in capsys.readouterr().err


def test_host_list_says_a_port_is_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "absent")
    assert main(["host", "list", missing, "--timeout", "0.3"]) == 1
    out = capsys.readouterr().out
    waiting = rf"link {re.escape(missing)}: waiting for its port since 0\.\d s"
    assert re.fullmatch(rf"{waiting} \(no such serial port .*\)\n", out)
