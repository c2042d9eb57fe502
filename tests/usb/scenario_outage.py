"""Run on the USB stack: a USB cable pulled and plugged back, and a board that restarts.

A board (``ira board serve ffs://b3``, its own process) and a host in this
process (``HostClient`` on ``usb://1d6b:0104/b3``):

1. the UDC is unbound for 3 s (the cable pulled) while a DEVCALL is in flight
   and more are issued; then bound again: the host must report the port and
   the link down, and every call must complete once the cable is back, in the
   same session; the board must log its port gone (ep0 UNBIND/DISABLE: the
   carrier) and its link down at once, and both back once the host is;
2. the board process is killed (FunctionFS unbinds its gadget) and started
   again: the host must see the restart and find the board's devices again in a
   new session (the restart is PeerRestarted when the board is back within the
   session timeout, else SessionLost; a slow guest may take either path); the
   time from the new gadget's bind to the host's rediscovery is recorded.

Prints one JSON object of what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ira.busmodel.devices.echo import EchoFunc
from ira.busmodel.events import BusReady
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.runtime import HostClient
from ira.runtime.port import PortBack, PortLost

IRA = os.path.join(os.path.dirname(sys.executable), "ira")
GADGET = Path("/sys/kernel/config/usb_gadget/ira-b3")
UDC = "dummy_udc.0"


BOARD_LOG = Path("/tmp/ira-b3-board.log")
#: what the board logs of its port and link (``ira -v``)
BOARD_LINES = ("port gone", "port back", "link down", "link up", "session up", "peer restarted")


def board() -> subprocess.Popen[bytes]:
    with BOARD_LOG.open("ab") as log:
        proc = subprocess.Popen(
            [IRA, "-v", "board", "serve", f"ffs://b3?udc={UDC}"],
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert proc.stdout is not None
    proc.stdout.readline()  # the banner: serving
    return proc


def board_log(since: float) -> list[tuple[float, str]]:
    """What the board logged of its port and link after ``since`` (wall clock), as
    (seconds after ``since``, the message)."""
    seen = []
    for line in BOARD_LOG.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ira.")
        message = rest.split(" INFO ", 1)[-1]
        if not any(what in message for what in BOARD_LINES):
            continue
        with contextlib.suppress(ValueError):
            at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            at += int(stamp[20:23]) / 1000
            if at >= since:
                seen.append((round(at - since, 2), message))
    return seen


def enumerated(serial: str) -> bool:
    for dev in os.listdir("/sys/bus/usb/devices"):
        with contextlib.suppress(OSError), open(f"/sys/bus/usb/devices/{dev}/serial") as f:
            if f.read().strip() == serial:
                return True
    return False


def bound() -> bool:
    """The board's gadget is bound to its UDC (configfs)."""
    try:
        return bool((GADGET / "UDC").read_text().strip())
    except OSError:
        return False


def wait(condition: object, timeout_s: float) -> float | None:
    """Monotonic time when ``condition()`` became true, None if it did not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.01)
    return None


def scenario() -> dict[str, object]:
    facts: dict[str, object] = {}
    BOARD_LOG.unlink(missing_ok=True)
    seen: list[tuple[float, str]] = []

    def on_event(client: HostClient, event: object) -> None:
        if isinstance(event, LinkDown | LinkUp | PeerRestarted | SessionLost | BusReady):
            seen.append((time.monotonic(), type(event).__name__))

    def on_port_event(client: HostClient, event: object) -> None:
        if isinstance(event, PortLost | PortBack):
            seen.append((time.monotonic(), type(event).__name__))

    proc = board()
    try:
        facts["enumerated"] = wait(lambda: enumerated("b3"), 30) is not None
        with HostClient(
            "usb://1d6b:0104/b3", on_event=on_event, on_port_event=on_port_event
        ) as host:
            host.wait_ready(timeout_s=60)
            echo = host.open("echo")
            msgs = [os.urandom(64) for _ in range(5)]
            facts["before"] = host.call(echo, EchoFunc.ECHO, msgs[0]).payload == msgs[0]

            # 1. the cable pulled for 3 s, calls in flight
            results: list[bool] = []

            def calls() -> None:
                for msg in msgs[1:]:
                    results.append(host.call(echo, EchoFunc.ECHO, msg, timeout_s=60).payload == msg)

            unplugged_wall = time.time()
            (GADGET / "UDC").write_text("\n")
            unplugged = time.monotonic()
            worker = threading.Thread(target=calls)
            worker.start()
            time.sleep(3.0)
            facts["calls_done_while_unplugged"] = len(results)
            (GADGET / "UDC").write_text(UDC)
            plugged = time.monotonic()
            worker.join(90)
            facts["calls_after_replug"] = results
            facts["events_outage"] = [(round(t - unplugged, 2), name) for t, name in seen]
            facts["replug_s"] = plugged - unplugged
            facts["board_outage"] = board_log(unplugged_wall)
            seen.clear()

            # 2. the board killed and started again
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            gone = wait(lambda: not enumerated("b3"), 30)
            facts["unplugged_when_killed"] = gone is not None
            bound_at: list[float | None] = []
            watcher = threading.Thread(target=lambda: bound_at.append(wait(bound, 60)))
            watcher.start()  # the new gadget's bind, seen as it happens
            proc = board()
            watcher.join(60)
            back = wait(lambda: enumerated("b3"), 60)
            found = wait(
                lambda: (
                    any(name in ("PeerRestarted", "SessionLost") for _, name in seen)
                    and host.ready
                    and any(d.type == "echo" for d in host.devices())
                ),
                60,
            )
            facts["events_restart"] = [name for _, name in seen]
            bind = bound_at[0] if bound_at else None
            facts["rediscovered_s"] = None if bind is None or found is None else found - bind
            if bind is not None and back is not None:
                facts["enumerated_after_bind_s"] = back - bind
                facts["restart_timeline"] = [(round(t - bind, 3), name) for t, name in seen]
            echo = host.open("echo")
            facts["after_restart"] = host.call(echo, EchoFunc.ECHO, msgs[0]).payload == msgs[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        facts["board_rc"] = proc.wait(30)
    facts["gadgets_left"] = os.listdir("/sys/kernel/config/usb_gadget")
    return facts


if __name__ == "__main__":
    print(json.dumps(scenario()))
