"""Run in the USB guest (or on a machine with dummy_hcd): the acceptance scenario of USB links.

One process for the host's side (Python starts slowly in the guest), the
boards as separate ``ira board serve`` processes.  Prints one JSON object of
what happened; the tests in this folder assert on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

from ira.cli.main import main

IRA = os.path.join(os.path.dirname(sys.executable), "ira")
USB = "usb://1d6b:0104/b1"


def ira(*argv: str) -> dict[str, object]:
    out = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


def wait_for(path: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.1)
    return False


def board(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([IRA, "board", "serve", *argv], stdout=subprocess.PIPE)


def wait_serving(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().decode()


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def scenario() -> dict[str, object]:
    facts: dict[str, object] = {}
    ffs_board = board("ffs://b1?acm=1&udc=dummy_udc.0")
    facts["ffs_board_banner"] = wait_serving(ffs_board)
    facts["acm_tty_made"] = wait_for("/dev/ttyGS0", 10)
    acm_board = board("/dev/ttyGS0")
    facts["ffs_list"] = ira("host", "list", USB + "?wait=120")
    facts["ffs_ping"] = ira("ping", "-c", "100", "-i", "0", USB)
    facts["acm_board_banner"] = wait_serving(acm_board)
    facts["acm_device"] = wait_for("/dev/ttyACM0", 10)
    facts["acm_list"] = ira("host", "list", "/dev/ttyACM0")
    facts["acm_ping"] = ira("ping", "-c", "100", "-i", "0", "/dev/ttyACM0")
    facts["acm_board_rc"] = stop(acm_board)
    facts["acm_linktest"] = ira("linktest", "--json", "/dev/ttyGS0", "/dev/ttyACM0")
    facts["ffs_board_rc"] = stop(ffs_board)
    facts["gadgets_left"] = os.listdir("/sys/kernel/config/usb_gadget")
    facts["ffs_linktest"] = ira(
        "linktest", "--json", "ffs://lt?udc=dummy_udc.1", "usb://1d6b:0104/lt?wait=60"
    )
    facts["gadgets_left_after_linktest"] = os.listdir("/sys/kernel/config/usb_gadget")
    return facts


if __name__ == "__main__":
    print(json.dumps(scenario()))
