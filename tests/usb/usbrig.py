"""Where the USB tests run: a kernel with dummy_hcd here, else the QEMU guest.

Both ends of every USB cable run on a real Linux USB stack: FunctionFS and
the ACM gadget on a dummy UDC, libusb and cdc_acm on its dummy host
controller.  On a machine whose kernel has ``dummy_hcd`` (and root) the
scenarios run right here; otherwise in one guest booted for the whole test
session (``ira.tools.usbvm``).  Without either the tests skip with the
reason, or fail under ``IRA_REQUIRE_ROOT_TESTS=1`` (CI as root), which must
not pass by skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ira.errors import TransportError
from ira.tools.usbvm import GuestVM, unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@dataclass(frozen=True)
class Ran:
    returncode: int
    output: str


def local_dummy_hcd() -> bool:
    """True when this kernel offers dummy UDCs and gadget configfs to root."""
    if os.geteuid() != 0:
        return False
    if not any(n.startswith("dummy_udc") for n in _udcs()):
        subprocess.run(["modprobe", "dummy_hcd", "num=2"], capture_output=True, check=False)
        subprocess.run(["modprobe", "libcomposite"], capture_output=True, check=False)
    udcs = [n for n in _udcs() if n.startswith("dummy_udc")]
    return len(udcs) >= 2 and Path("/sys/kernel/config/usb_gadget").is_dir()


def _udcs() -> list[str]:
    try:
        return os.listdir("/sys/class/udc")
    except OSError:
        return []


class LocalStack:
    """Runs scenario scripts on this machine (its kernel has dummy_hcd)."""

    where = "this machine"

    def run(self, script: str, timeout_s: float) -> Ran:
        done = subprocess.run(
            ["sh", "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        return Ran(done.returncode, done.stdout + done.stderr)

    def close(self) -> None:
        pass


class GuestStack:
    """Runs scenario scripts in the QEMU guest."""

    where = "the QEMU guest"

    def __init__(self) -> None:
        self.vm = GuestVM()
        self.vm.start()

    def run(self, script: str, timeout_s: float) -> Ran:
        result = self.vm.run(f"cd {ROOT}\n{script}", timeout_s=timeout_s)
        return Ran(result.returncode, result.output)

    def close(self) -> None:
        self.vm.stop()


def open_stack() -> LocalStack | GuestStack:
    """This machine's dummy_hcd, else a guest; skip (or fail in CI) without either."""
    if local_dummy_hcd():
        return LocalStack()
    reason = unavailable_reason()
    if reason is None:
        try:
            return GuestStack()
        except TransportError as exc:
            reason = f"the USB guest cannot be built or booted: {exc}"
    reason = f"no dummy_hcd in this kernel, and {reason}"
    if os.environ.get("IRA_REQUIRE_ROOT_TESTS") == "1":
        pytest.fail(f"IRA_REQUIRE_ROOT_TESTS=1 but {reason}")
    pytest.skip(reason)


def run_scenario(stack: LocalStack | GuestStack, name: str, timeout_s: float) -> dict[str, object]:
    """Run ``tests/usb/<name>.py`` on the stack; the JSON object it printed last."""
    started = time.monotonic()
    ran = stack.run(f"{PYTHON} tests/usb/{name}.py", timeout_s)
    lines = [line for line in ran.output.splitlines() if line.startswith("{")]
    if ran.returncode != 0 or not lines:
        raise AssertionError(
            f"scenario {name} failed on {stack.where} (rc {ran.returncode}):\n{ran.output[-4000:]}"
        )
    facts: dict[str, object] = json.loads(lines[-1])
    facts["_elapsed_s"] = time.monotonic() - started
    return facts
