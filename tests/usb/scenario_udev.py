"""Run in the USB guest (or on a machine with dummy_hcd, as root): udev and the watching host.

udevd runs with ira's rules (``ira udev install`` into /run/udev/rules.d, which
udev reads beside /etc/udev/rules.d); a gadget board is bound and udev names it
``/dev/ira/<serial>`` with the group's permissions; an unprivileged user in the
group lists its devices; ``ira host serve --watch /dev/ira`` serves it, sees it
unbound (a cable pulled) and resumes it when it is bound again, and serves a
second board from the moment it is bound.  Prints one JSON object of what
happened; ``test_gadget_udev.py`` asserts on it.
"""

from __future__ import annotations

import contextlib
import grp
import io
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from ira.cli.main import main

IRA = os.path.join(os.path.dirname(sys.executable), "ira")
GROUP = "plugdev"
NOBODY = 65534
GADGETS = Path("/sys/kernel/config/usb_gadget")
#: the packages an unprivileged ``ira host list usb://`` imports, copied where it can read them
PACKAGES = ("ira", "usb", "libusb_package", "construct", "cobs", "crcmod", "serial")


def ira(*argv: str) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


def wait_for(check: object, timeout_s: float) -> float | None:
    """Seconds until ``check()`` is true, or None."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.02)
    return None


class Lines:
    """A process's output lines with the time each arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put((time.monotonic(), line.rstrip("\n")))

    def expect(self, text: str, timeout_s: float) -> float | None:
        """When a line containing ``text`` arrived (monotonic), or None."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                at, line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            self.seen.append(line)
            if text in line:
                return at


def unprivileged_python(tmp: Path) -> list[str] | None:
    """A command running ira as nobody in the group: this machine's python3 and copies of
    the packages (the project's virtualenv may lie where nobody can read it)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        return None
    site = tmp / "site"
    for name in PACKAGES:
        module = __import__(name)
        source = Path(module.__file__).parent  # type: ignore[arg-type]
        shutil.copytree(source, site / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        for so in source.glob("*.so"):  # C extensions of this Python ABI
            shutil.copy(so, site / name / so.name)
    for path in [tmp, *tmp.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    gid = grp.getgrnam(GROUP).gr_gid
    return [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={gid}",
        "env", "IRA_NATIVE=0", f"PYTHONPATH={site}", python, "-m", "ira",
    ]  # fmt: skip


def udc_of(serial: str) -> Path:
    return GADGETS / f"ira-{serial}" / "UDC"


def bound(serial: str) -> bool:
    try:
        return bool(udc_of(serial).read_text().strip())
    except OSError:
        return False


def scenario() -> dict[str, object]:
    facts: dict[str, object] = {}
    tmp = Path("/tmp/ira-udev")
    tmp.mkdir(parents=True, exist_ok=True)
    facts["install"] = ira(
        "udev", "install", "--group", GROUP, "--rules-dir", "/run/udev/rules.d", "--no-reload"
    )
    udevd = subprocess.Popen(["/lib/systemd/systemd-udevd"], stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[str]] = []
    try:
        facts["udevd_up_s"] = wait_for(lambda: Path("/run/udev/control").exists(), 30)
        subprocess.run(["udevadm", "trigger", "--action=add"], check=False)
        subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)

        # a board bound: its name, its permissions, an unprivileged user in the group
        board = subprocess.Popen(
            [IRA, "board", "serve", "ffs://b7?acm=1&udc=dummy_udc.0"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(board)
        name = Path("/dev/ira/b7")
        facts["name_appeared_s"] = wait_for(name.exists, 60)
        facts["acm_name"] = wait_for(Path("/dev/ira/acm/b7").exists, 30) is not None
        if name.exists():
            st = os.stat(name)
            facts["node_mode"] = oct(stat.S_IMODE(st.st_mode))
            facts["node_group"] = grp.getgrgid(st.st_gid).gr_name
        nobody = unprivileged_python(tmp)
        if nobody is not None:
            done = subprocess.run(
                [*nobody, "host", "list", "usb://1d6b:0104/b7?wait=20"],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            facts["nobody_list"] = {"rc": done.returncode, "out": done.stdout, "err": done.stderr}

        # the watching host serves it, sees it unbound, resumes it when bound again
        host = subprocess.Popen(
            [IRA, "host", "serve", "--watch", "/dev/ira"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(host)
        lines = Lines(host)
        facts["served"] = lines.expect("usb://1d6b:0104/b7: ready:", 120) is not None
        udc = udc_of("b7").read_text().strip()
        udc_of("b7").write_text("\n")  # the cable pulled
        facts["unplugged_seen"] = lines.expect("board b7 unplugged", 30) is not None
        time.sleep(3.0)
        udc_of("b7").write_text(udc)  # and put back
        bound_at = time.monotonic()
        resumed_at = lines.expect("session resumed", 60)
        facts["bind_to_resumed_s"] = None if resumed_at is None else resumed_at - bound_at

        # a second board bound while the host watches: served from the moment it is bound
        second = subprocess.Popen(
            [IRA, "board", "serve", "ffs://b8?udc=dummy_udc.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(second)
        bind_s = wait_for(lambda: bound("b8"), 120)
        bound_at = time.monotonic()
        facts["second_bound"] = bind_s is not None
        served_at = lines.expect("usb://1d6b:0104/b8: ready:", 60)
        facts["bind_to_served_s"] = None if served_at is None else served_at - bound_at
        facts["host_lines"] = lines.seen
        while True:  # whatever the host said after the last line waited for
            try:
                facts["host_lines"].append(lines.queue.get(timeout=1.0)[1])  # type: ignore[attr-defined]
            except queue.Empty:
                break
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        udevd.terminate()
        udevd.wait(10)
        for key, proc in zip(("board_out", "host_out", "second_out"), procs, strict=False):
            if proc.stdout is not None:
                facts[key] = proc.stdout.read()[-3000:]
    facts["uninstall"] = ira("udev", "uninstall", "--rules-dir", "/run/udev/rules.d", "--no-reload")
    return facts


if __name__ == "__main__":
    print(json.dumps(scenario()))
