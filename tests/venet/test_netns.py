"""Named network namespaces: created, used, and gone afterwards whatever happens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from venetrig import require_root_support

from ira.errors import ConfigError, TransportError
from ira.runtime.netns import NetNs, list_netns, remove_stale, run_in_netns

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _root() -> None:
    require_root_support()


def test_a_namespace_exists_inside_the_block_only() -> None:
    with NetNs() as ns:
        name = ns.name
        assert name in list_netns()
        assert name.startswith("ira-")
        assert ns.exists()
        links = ns.run(["ip", "-o", "link", "show"]).stdout.decode()
        assert links.count(": ") >= 1 and "lo:" in links and "UP" in links.split("lo:")[1]
    assert name not in list_netns()
    assert not ns.exists()
    with pytest.raises(TransportError, match="with block"):
        _ = ns.name


def test_names_are_unique_and_fixed_names_are_kept() -> None:
    fixed = f"ira-fixed-{os.getpid()}"
    with NetNs() as a, NetNs() as b, NetNs(fixed) as c:
        names = {a.name, b.name, c.name}
        assert len(names) == 3
        assert c.name == fixed
        with pytest.raises(TransportError, match="cannot create network namespace"):
            NetNs(fixed).create()
    assert not names & set(list_netns())


def test_bad_names_are_refused() -> None:
    for bad in ("", "a/b", "x" * 65, "sp ace"):
        with pytest.raises(ConfigError):
            NetNs(bad)


def test_an_exception_in_the_block_still_cleans_up() -> None:
    with pytest.raises(RuntimeError, match="boom"), NetNs() as ns:
        name = ns.name
        proc = ns.popen(["sleep", "60"])
        raise RuntimeError("boom")
    assert name not in list_netns()
    assert proc.poll() is not None


def inside(ns: NetNs, pids: set[int], timeout_s: float = 10.0) -> bool:
    """Whether every one of ``pids`` is (or soon is) a process inside ``ns``."""
    deadline = time.monotonic() + timeout_s
    while not pids <= set(ns.pids()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_processes_inside_are_stopped_on_exit() -> None:
    with NetNs() as ns:
        tracked = ns.popen(["sleep", "60"])
        # a process the namespace did not start itself, left running inside
        stray = subprocess.Popen(ns.command(["sleep", "60"]))
        # Popen returns once the child exists, not once `ip netns exec` has entered
        # the namespace: wait until both are inside before leaving the block
        assert inside(ns, {tracked.pid, stray.pid})
    assert tracked.poll() is not None
    assert stray.wait(timeout=5) != 0


def test_commands_and_python_run_inside() -> None:
    with NetNs() as ns:
        done = ns.run(["ip", "-o", "link", "show"])
        assert b"lo:" in done.stdout and b"eth" not in done.stdout
        failed = ns.run(["false"], check=False)
        assert failed.returncode == 1
        with pytest.raises(TransportError, match="failed with status 1"):
            ns.run([sys.executable, "-c", "import sys; sys.exit(1)"])

        # a socket made inside belongs to the namespace, whichever thread uses it
        def listen() -> socket.socket:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            return s

        server = ns.call(listen)
        with server:
            port = server.getsockname()[1]
            with pytest.raises(OSError):  # not reachable from this namespace
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            client = ns.call(lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
            with client:
                conn, _ = server.accept()
                conn.close()


def test_call_hands_exceptions_back() -> None:
    def fail() -> None:
        raise ValueError("inside")

    with NetNs() as ns, pytest.raises(ValueError, match="inside"):
        ns.call(fail)


def test_unknown_namespace_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="ip netns add ira-no-such"):
        run_in_netns("ira-no-such", lambda: None)


def test_stale_namespaces_of_dead_processes_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"ira-{dead.pid}-0"
    with NetNs() as live:
        subprocess.run(["ip", "netns", "add", stale], check=True)
        try:
            removed = remove_stale()
            assert stale in removed
            assert live.name not in removed  # this process is alive
            assert live.exists()
        finally:
            subprocess.run(["ip", "netns", "del", stale], check=False, capture_output=True)
    assert stale not in list_netns()
