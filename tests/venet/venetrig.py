"""What the venet tests share: the root requirements, a frame pump, a TCP transfer.

Tests that need root (TAP interfaces, network namespaces) skip with the
reason when it is missing; with ``IRA_REQUIRE_ROOT_TESTS=1`` (set by
``.ci/run`` when it runs as root) they fail instead, so CI cannot pass by
skipping them.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest

from ira.runtime.netns import NetNs
from ira.venet.port import FramePort


def missing_root_support() -> str | None:
    """Why TAP/namespace tests cannot run here, or ``None``."""
    if os.geteuid() != 0:
        return "needs root for TAP interfaces and network namespaces"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun (a kernel with CONFIG_TUN, or the device passed in)"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian: iproute2)"
    return None


def require_root_support(*, ping: bool = False) -> None:
    """Skip (or fail under ``IRA_REQUIRE_ROOT_TESTS=1``) when a requirement is missing."""
    reason = missing_root_support()
    if reason is None and ping and shutil.which("ping") is None:
        reason = "needs ping (Debian: iputils-ping)"
    if reason is None:
        return
    if os.environ.get("IRA_REQUIRE_ROOT_TESTS") == "1":
        pytest.fail(f"IRA_REQUIRE_ROOT_TESTS=1 but {reason}")
    pytest.skip(reason)


class Pump:
    """Copies frames both ways between two ports on one thread, as a link would.

    A context manager: the thread starts on entry and is joined on exit, and an
    exception on the thread is raised to the caller there.
    """

    def __init__(self, a: FramePort, b: FramePort) -> None:
        self._ports = (a, b)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="venet-pump", daemon=True)
        self._failure: BaseException | None = None
        #: the longest frame copied, header included
        self.longest_frame = 0
        self.frames = 0

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        os.close(self._stop_r)
        os.close(self._stop_w)
        assert not self._thread.is_alive(), "the pump did not stop"
        if self._failure is not None and exc is None:
            raise self._failure

    def _run(self) -> None:
        a, b = self._ports
        peer = {a.fileno(): (a, b), b.fileno(): (b, a)}
        try:
            while True:
                ready, _, _ = select.select([self._stop_r, *peer], [], [], 1.0)
                if self._stop_r in ready:
                    return
                for fd in ready:
                    src, dst = peer[fd]
                    for _ in range(64):
                        frame = src.read_frame()
                        if frame is None:
                            break
                        self.frames += 1
                        self.longest_frame = max(self.longest_frame, len(frame))
                        dst.write_frame(frame)
        except BaseException as exc:  # re-raised by __exit__
            self._failure = exc


def ping(ns: NetNs, address: str, *, count: int = 5, size: int | None = None) -> str:
    """``ping`` from ``ns``, 5 Hz, don't fragment; the output (``AssertionError`` on loss)."""
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-M", "do", address]
    if size is not None:
        argv[1:1] = ["-s", str(size)]
    done = ns.run(argv, check=False, timeout_s=count * 0.2 + 10)
    out = done.stdout.decode()
    assert done.returncode == 0, f"ping failed ({done.returncode}):\n{out}{done.stderr.decode()}"
    assert f"{count} received" in out and " 0% packet loss" in out, out
    return out


_SERVER = """\
import hashlib, socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(20)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(20)
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""


def tcp_transfer(
    client_ns: NetNs, server_ns: NetNs, address: str, payload: bytes, *, port: int = 5201
) -> tuple[int, str]:
    """Send ``payload`` over TCP from ``client_ns`` to a server process in ``server_ns``.

    Returns what the server received: (byte count, SHA-256 hex).
    """
    server = server_ns.popen(
        [sys.executable, "-c", _SERVER, address, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        assert _readline(server, 10.0) == "ready"
        # the socket belongs to the client's namespace; it is used from this thread
        conn = client_ns.call(lambda: socket.create_connection((address, port), timeout=10))
        with conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        count, digest = _readline(server, 20.0).split()
        server.wait(timeout=10)
        return int(count), digest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
        if server.stderr is not None:
            server.stderr.close()


def _readline(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"no answer from the server in {timeout_s} s")
        chunk = os.read(fd, 1)
        if not chunk:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"the server ended early: {err}")
        line += chunk
    return line.decode().strip()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
