"""``ira loopback`` (``make run``): the network part, with and without root, and SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from venetrig import require_root_support

import ira.cli.loopback as loopback
from ira.cli.main import main
from ira.runtime.netns import list_netns

QUICK = ["loopback", "--bytes", "256K", "--tcp-bytes", "1M", "-c", "3"]


def _namespaces_of(pid: int) -> list[str]:
    """The namespaces a process named (``ira-<pid>-<n>``): other ira runs may be going on."""
    return [n for n in list_netns() if n.startswith(f"ira-{pid}-")]


def test_without_root_an_in_process_frame_exchange_stands_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(loopback, "missing_for_namespaces", lambda: "root (for this test)")
    assert main(QUICK) == 0
    out = capsys.readouterr().out
    assert "network: needs root (for this test); an in-process frame exchange stands in" in out
    assert "frames: 300/300 board -> host, 300/300 host -> board, in order" in out
    assert "virtio_device_id=1" in out  # the network device in the device table
    assert "linktest PASS" in out


@pytest.mark.root
def test_as_root_ping_and_tcp_cross_two_namespaces() -> None:
    require_root_support(ping=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ira", *QUICK],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "3 packets transmitted, 3 received, 0% packet loss" in out
    assert "SHA-256 matches" in out
    assert "summary" in out and "link (host end):" in out
    assert re.search(r"headers compressed: \d+ bytes a frame saved", out), out
    assert "IRA_HDR_DELTA" in out  # among the features agreed
    assert _namespaces_of(proc.pid) == []


@pytest.mark.root
def test_sigint_in_the_middle_leaves_nothing_behind() -> None:
    require_root_support(ping=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ira", "loopback", "--tcp-bytes", "512M"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until the TCP transfer runs
        if line.startswith("TCP:") or time.monotonic() > deadline:
            break
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 130, rest
    assert _namespaces_of(proc.pid) == []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert " ira0" not in links
