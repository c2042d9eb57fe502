"""Run on the USB stack: what a host sees when it cannot use a board, or the board misbehaves.

* a host without permission to the device, and a second host claiming a board's
  interface: ``ira host list`` fails with one line naming the fix;
* broken FunctionFS functions, made here with the same gadget code as a board
  but wrong on purpose: descriptors without a bulk OUT endpoint, endpoints that
  stall every transfer, a transfer longer than any frame (babble).  The host
  gets a clear error or counts the refusal, and never hangs.

Prints one JSON object of what happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from ira.errors import IraError
from ira.transports import open_transport
from ira.transports.gadget import Gadget, GadgetOptions
from ira.transports.usb import UsbTransport
from ira.wire.usb import (
    DIR_IN,
    EndpointDescriptor,
    FfsDescriptors,
    FfsStrings,
    InterfaceDescriptor,
    encode,
    vendor_function,
)

IRA = os.path.join(os.path.dirname(sys.executable), "ira")
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def without_dac_override() -> None:
    """In the child: drop the capabilities that let root ignore file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def host(*argv: str, unprivileged: bool = False, timeout_s: float = 120) -> dict[str, object]:
    started = time.monotonic()
    done = subprocess.run(
        [IRA, *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=without_dac_override if unprivileged else None,
    )
    return {
        "rc": done.returncode,
        "err": done.stderr,
        "elapsed_s": time.monotonic() - started,
    }


def wait_usb(serial: str, timeout_s: float = 120) -> str:
    """The device node of the USB device with ``serial``, once it is there ("" if never)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for dev in os.listdir("/sys/bus/usb/devices"):
            where = f"/sys/bus/usb/devices/{dev}"
            with contextlib.suppress(OSError), open(f"{where}/serial") as f:
                if f.read().strip() == serial:
                    with open(f"{where}/busnum") as b, open(f"{where}/devnum") as d:
                        return f"/dev/bus/usb/{int(b.read()):03d}/{int(d.read()):03d}"
        time.sleep(0.1)
    return ""


@contextlib.contextmanager
def broken_gadget(name: str, descriptors: FfsDescriptors) -> Iterator[tuple[Gadget, int, int]]:
    """A gadget with ``descriptors``, bound to dummy_udc.1; yields it, ep0 and ep1 (or -1)."""
    gadget = Gadget(GadgetOptions(name, udc="dummy_udc.1"))
    gadget.create()
    ep0 = os.open(gadget.ffs_dir / "ep0", os.O_RDWR)
    fds = [ep0]
    try:
        os.write(ep0, encode(descriptors))
        os.write(ep0, encode(FfsStrings(("ira",))))
        ep1 = ep2 = -1
        if os.path.exists(gadget.ffs_dir / "ep2"):
            ep1 = os.open(gadget.ffs_dir / "ep1", os.O_RDWR)
            ep2 = os.open(gadget.ffs_dir / "ep2", os.O_RDWR)
            fds += [ep1, ep2]
        events = threading.Thread(target=drain, args=(ep0,), daemon=True)
        events.start()
        gadget.bind()
        yield gadget, ep1, ep2
    finally:
        gadget.unbind()
        time.sleep(0.3)
        for fd in fds:
            os.close(fd)
        gadget.remove()


def drain(ep0: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(ep0, 48):
            pass


def until_unbound(fn: object, fd: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            fn(fd)  # type: ignore[operator]
        except OSError as exc:
            if exc.errno not in (errno.EBADMSG, errno.ESHUTDOWN, errno.EAGAIN, errno.EL2HLT):
                time.sleep(0.01)
        time.sleep(0.001)


def scenario() -> dict[str, object]:
    facts: dict[str, object] = {}
    board = subprocess.Popen(
        [IRA, "board", "serve", "ffs://b2?udc=dummy_udc.0"], stdout=subprocess.PIPE
    )
    try:
        node = wait_usb("b2")
        facts["board_up"] = bool(node)
        if not node:
            raise SystemExit("the board's gadget did not enumerate within 120 s")
        # as a user without access: the node closed to its owner, root's override dropped
        mode = os.stat(node).st_mode
        os.chmod(node, 0)
        try:
            facts["no_permission"] = host("host", "list", "usb://1d6b:0104/b2", unprivileged=True)
        finally:
            os.chmod(node, mode)
        holder = open_transport("usb://1d6b:0104/b2")
        try:
            facts["busy"] = host("host", "list", "usb://1d6b:0104/b2")
        finally:
            holder.close()
    finally:
        board.terminate()
        board.wait(30)

    # descriptors with a bulk IN endpoint only
    only_in = (InterfaceDescriptor(num_endpoints=1),)
    one = FfsDescriptors(
        fs=(*only_in, EndpointDescriptor(DIR_IN | 1, 64)),
        hs=(*only_in, EndpointDescriptor(DIR_IN | 1, 512)),
        ss=(),
    )
    with contextlib.suppress(IraError, OSError), broken_gadget("noout", one):
        facts["noout_up"] = bool(wait_usb("noout"))
        facts["missing_endpoint"] = host("host", "list", "usb://1d6b:0104/noout")

    # both endpoints stall whatever the host does
    with broken_gadget("stall", vendor_function()) as (_, ep1, ep2):
        stop = threading.Event()
        halting = [
            # a read of an IN endpoint, a write of an OUT endpoint: FunctionFS halts it
            threading.Thread(target=until_unbound, args=(lambda fd: os.read(fd, 1), ep2, stop)),
            threading.Thread(target=until_unbound, args=(lambda fd: os.write(fd, b"x"), ep1, stop)),
        ]
        for thread in halting:
            thread.daemon = True
            thread.start()
        facts["stall_up"] = bool(wait_usb("stall"))
        facts["stalls"] = host("host", "list", "usb://1d6b:0104/stall")
        stop.set()

    # a transfer longer than any frame, then a short one
    with broken_gadget("babble", vendor_function()) as (_, ep1, ep2):
        facts["babble_up"] = bool(wait_usb("babble"))
        transport = open_transport("usb://1d6b:0104/babble")
        assert isinstance(transport, UsbTransport)
        try:
            writer = threading.Thread(
                target=lambda: (os.write(ep2, bytes(70001)), os.write(ep2, b"0123456789")),
                daemon=True,
            )
            writer.start()
            received = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and b"0123456789" not in received:
                data = transport.recv(0.5)
                if data:
                    received.append(data)
            facts["babble_counted"] = transport.counters["babble"]
            facts["after_babble"] = [len(d) for d in received]
            facts["short_frame_intact"] = b"0123456789" in received
        finally:
            transport.close()
    facts["gadgets_left"] = os.listdir("/sys/kernel/config/usb_gadget")
    return facts


if __name__ == "__main__":
    print(json.dumps(scenario()))
