"""The bus over the rig: a board process (``ira board serve`` on A) seen from the host (B).

``ira host list`` shows the board's devices; ``ira ping -c 100`` loses none;
a device added or removed on the running board (profile edited, SIGHUP) shows
on the host within 1 s.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from rig import BOARD_NAME, STOCK_TYPES, Child, Rig, run_ira, stock_profile, write_profile

import ira
from ira.runtime import HostClient

#: how soon a hot add or remove must show on the host (issue 3's figure)
HOTSWAP_S = 1.0


def test_host_list_shows_the_boards_devices(rig: Rig, tmp_path: Path) -> None:
    rounds = 10 if rig.variant.long else 1
    with Child.board(rig.link_a, stock_profile(tmp_path / "board.toml")) as board:
        for _ in range(rounds):  # each listing is a new host session with the same board
            done = _ira_cli(rig, "host", "list", rig.link_b, "--json", *_wait(rig))
            rows = json.loads(done.stdout)["devices"]
            assert [r["type"] for r in rows] == list(STOCK_TYPES), board.output
            assert rows[0]["attributes"] == {"board": BOARD_NAME, "ira_version": ira.__version__}
            assert len({r["id"] for r in rows}) == len(rows)
        table = _ira_cli(rig, "host", "list", rig.link_b, *_wait(rig)).stdout.splitlines()
    assert table[0].split() == ["ID", "TYPE", "VERSION", "ATTRIBUTES"]
    assert [line.split()[1] for line in table[1:-1]] == list(STOCK_TYPES)
    assert table[-1].startswith(f"link {rig.link_b}: up since ")


def test_ping_loses_none(rig: Rig, tmp_path: Path) -> None:
    count = 2000 if rig.variant.long else 100
    with Child.board(rig.link_a, stock_profile(tmp_path / "board.toml")):
        # -W: a generous per-call timeout; a late reply is slow, not lost
        done = _ira_cli(
            rig, "ping", rig.link_b, "-c", str(count), "-i", "0", "-s", "64", "-W", "10"
        )
    out = done.stdout
    assert f"{count} calls, {count} replies, 0% lost" in out, out
    assert len(re.findall(r"^64 bytes from .*: seq=\d+ time=[\d.]+ ms$", out, re.M)) == count
    assert re.search(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", out, re.M), out


def test_hot_add_and_remove_show_on_the_host_within_a_second(rig: Rig, tmp_path: Path) -> None:
    rounds = 20 if rig.variant.long else 1
    stock = [(t, t) for t in STOCK_TYPES]
    bigger = [*stock, ("counter-2", "counter")]
    smaller = [s for s in bigger if s[1] != "echo"]
    profile = write_profile(tmp_path / "board.toml", stock)
    with Child.board(rig.link_a, profile) as board, HostClient(rig.link_b) as host:
        host.wait_ready(rig.handshake_timeout_s)
        for round_ in range(rounds):
            took = _reload(board, profile, bigger, host)
            assert took <= HOTSWAP_S, f"round {round_}: hot add seen after {took:.2f} s"
            assert _types(host) == sorted([*STOCK_TYPES, "counter"])

            took = _reload(board, profile, smaller, host)
            assert took <= HOTSWAP_S, f"round {round_}: hot remove seen after {took:.2f} s"
            assert _types(host) == ["board-info", "counter", "counter", "ring-loopback"]

            # back to the start: echo returns (with a new device id), counter-2 goes
            _reload(board, profile, stock, host)
        assert "profile reloaded: +counter-2" in board.expect("profile reloaded", 5.0)


def _reload(board: Child, profile: Path, devices: list[tuple[str, str]], host: HostClient) -> float:
    """Rewrite the profile, SIGHUP the board; seconds until the host shows its devices."""
    want = sorted(dtype for _, dtype in devices)
    write_profile(profile, devices)
    started = time.monotonic()
    board.signal(signal.SIGHUP)
    host.wait_for(lambda ds: sorted(d.type for d in ds) == want, timeout_s=10.0)
    return time.monotonic() - started


def _types(host: HostClient) -> list[str]:
    return sorted(d.type for d in host.devices())


def _wait(rig: Rig) -> tuple[str, str]:
    return ("--timeout", f"{rig.handshake_timeout_s:g}")


def _ira_cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_ira(*args, timeout_s=rig.transfer_timeout_s(1 << 20) + 60.0)
    assert done.returncode == 0, f"ira {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done
