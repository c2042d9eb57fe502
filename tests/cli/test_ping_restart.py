"""`ira ping` across a board restart: the lost calls are counted, ping goes on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ira.runtime import BoardService
from ira.tools.nullmodem import NullModem

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
REPLY = re.compile(r"^\d+ bytes from .*: seq=(\d+) time=")


@pytest.fixture
def cable() -> Iterator[NullModem]:
    with NullModem() as nm:
        yield nm


def _lines_until(ping: subprocess.Popen[str], done: re.Pattern[str], seen: list[str]) -> None:
    assert ping.stdout is not None
    for line in ping.stdout:
        seen.append(line.rstrip("\n"))
        if done.search(line):
            return
    raise AssertionError(f"ping ended before {done.pattern!r}: {seen}")


def test_ping_counts_the_calls_a_restart_cost_and_goes_on(cable: NullModem) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    count = 30
    lines: list[str] = []
    with BoardService(cable.path_a) as board:
        ping = subprocess.Popen(
            [sys.executable, "-m", "ira", "ping", cable.path_b, "-c", str(count),
             "-i", "0", "-W", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            _lines_until(ping, re.compile(r"seq=3 "), lines)
            board.stop()
            # calls go unanswered while no board is there
            _lines_until(ping, re.compile(r"^seq=\d+: "), lines)
            # a new board on the same line: the call pending then is reset, the next
            # ones must reopen echo in the new session
            with BoardService(cable.path_a):
                _lines_until(ping, re.compile(r"ping statistics"), lines)
                assert ping.stdout is not None and ping.stderr is not None
                out, err = ping.stdout.read(), ping.stderr.read()
                ping.wait(30)
        finally:
            ping.kill()
            ping.wait()
    lines += out.splitlines()
    assert "Traceback" not in err and "is not open" not in err, err
    replies = [int(m.group(1)) for ln in lines if (m := REPLY.match(ln))]
    stats = next(ln for ln in lines if " calls, " in ln)
    calls, answered = map(int, re.findall(r"(\d+) (?:calls|replies)", stats))
    assert calls == count and answered == len(replies)
    assert answered < count  # the calls no board answered are lost
    assert replies[-1] == count  # and ping went on to the end in the new session
    assert re.search(r"^rtt min/avg/max/mdev = ", "\n".join(lines), re.M)
    assert ping.returncode == 1
