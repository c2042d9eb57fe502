"""The virtual board (``boards/qemu-x86_64``): a QEMU guest that ``ira flash`` can flash.

A board as this machine can have one: QEMU with software emulation (TCG),
Debian's generic amd64 kernel, and a disk image that is the board's *flash*
(ext4 on ``/dev/vda``, kept across reboots of the guest and across QEMU runs).
The flash holds a small userland built from Debian packages, without mounting
anything (``mkfs.ext4 -d``):

* busybox (``busybox-static``) as ``/sbin/init`` and every other tool; its
  ``/etc/inittab`` runs ``/etc/init.d/rcS`` at boot (which mounts the pseudo
  file systems and starts every ``/etc/init.d/S*`` script, the way ``ira
  flash`` expects of a board without systemd), a root shell on the console
  ``ttyS0``, and ``/etc/init.d/rcK`` (the scripts' ``stop``, then a sync) at
  power-off;
* Python 3.11 (``python3.11-minimal``, ``libpython3.11-minimal``,
  ``libpython3.11-stdlib`` and the libraries they load, ``apt-get download``
  and ``dpkg-deb``), compiled to bytecode once here;
* not ira: ira arrives only by ``ira flash``.

A small initramfs loads the modules the root needs (virtio, virtio_blk, ext4)
and switches to the flash.  The console ``ttyS0`` is a pty on this machine
(``-chardev pty``); the data UART ``ttyS1`` opens a path given here, one end
of an ``ira nullmodem`` (``-chardev serial,path=…``).  A reboot in the guest
resets it in the same QEMU (same ptys); ``poweroff`` ends QEMU; ``kill``
pulls the plug (unsynced writes are lost, ext4 recovers).

The kernel, initramfs and a pristine flash image are cached in
``~/.cache/ira/vboard/<kernel version>-<recipe>/``; each board copies the
pristine image to its own file::

    python -m ira.tools.vboard build
    python -m ira.tools.vboard boot FLASH.img [--data-link /dev/pts/N]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ira.errors import TransportError
from ira.tools import vm
from ira.tools.flash.console import Console, ConsoleError

__all__ = [
    "BoardImage",
    "VirtualBoard",
    "build_image",
    "fresh_flash",
    "unavailable_reason",
]

#: Debian packages the board is built and booted with (installed by the Makefile)
PACKAGES = ("qemu-system-x86", "busybox-static", "kmod", "cpio", "e2fsprogs")
#: what the initramfs loads to mount the flash (dependencies come along)
MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "tun")
#: the board's Python: Debian's packages and the libraries its standard modules load
PYTHON_DEBS = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "liblzma5",
    "libbz2-1.0",
    "libuuid1",
    "libcrypt1",
)
FLASH_MB = 256
#: what the guest's shell prints when asked ``echo __VBOARD_$((6*7))__``
_ALIVE = re.compile(rb"__VBOARD_42__")
#: what rcS prints when it has started every service (the boot is over)
_BOOTED = b"vboard: up in "
#: how long a console may stay without that line (missed under an XOFF) before ^C is sent
_BOOT_S = 60.0
_PTY = re.compile(rb"char device redirected to (/dev/pts/\d+) \(label con\)")

_INITRAMFS_INIT = r"""#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
while read -r m; do $B insmod /modules/$m || echo "insmod $m failed"; done < /modules.list
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do $B sleep 0.05; n=$((n + 1)); done
$B mkdir -p /flash
if ! $B mount -t ext4 -o rw /dev/vda /flash; then
  echo "vboard: the flash /dev/vda does not mount"
  $B poweroff -f
fi
$B umount /proc
$B mount --move /dev /flash/dev
exec $B switch_root /flash /sbin/init
"""

_INITTAB = """\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
"""

_RCS = r"""#!/bin/sh
# the board's boot: pseudo file systems, then every /etc/init.d/S* script's start;
# a ^C (or junk) on the console must not cut it short, nor stop what it starts
trap '' INT QUIT TSTP
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -o remount,rw /
hostname -F /etc/hostname
ip link set lo up
stty -F /dev/ttyS0 115200 2>/dev/null
stty -F /dev/ttyS1 115200 raw -echo 2>/dev/null
for s in /etc/init.d/S*; do
  [ -x "$s" ] && "$s" start
done
echo "vboard: up in $(cut -d' ' -f1 /proc/uptime) s"
"""

_RCK = r"""#!/bin/sh
# the board's power-off: every /etc/init.d/S* script's stop (in reverse), then sync
for s in $(ls -r /etc/init.d/S* 2>/dev/null); do
  [ -x "$s" ] && "$s" stop
done
sync
umount -a -r 2>/dev/null
"""

_PROFILE = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
PS1='vboard# '
"""


def cache_dir() -> Path:
    """``~/.cache/ira/vboard``."""
    return vm.cache_root() / "vboard"


def unavailable_reason() -> str | None:
    """Why no virtual board can be built or booted here, or None."""
    programs = (vm.QEMU, "apt-get", "dpkg-deb", "depmod", "modprobe", "cpio", "mkfs.ext4")
    return vm.missing_program(programs, PACKAGES, "the virtual board")


@dataclass(frozen=True, slots=True)
class BoardImage:
    """A kernel, its initramfs and a pristine flash image (nothing of ira on it)."""

    kernel: Path
    initrd: Path
    flash: Path
    version: str


def build_image(directory: Path | None = None) -> BoardImage:
    """Build the board (see the module docstring), or reuse what an earlier call built."""
    reason = unavailable_reason()
    if reason is not None:
        raise TransportError(reason)
    package = vm.kernel_package(PACKAGES)
    version = package.removeprefix("linux-image-")
    recipe = repr((_INITRAMFS_INIT, _INITTAB, _RCS, _RCK, _PROFILE, MODULES, PYTHON_DEBS))
    base = directory or cache_dir()
    where = base / f"{version}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"
    image = BoardImage(where / "vmlinuz", where / "initrd.gz", where / "flash.img", version)
    if image.kernel.exists() and image.initrd.exists() and image.flash.exists():
        return image
    where.mkdir(parents=True, exist_ok=True)
    debs = vm.download(PYTHON_DEBS, base / "debs", packages=PACKAGES)
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        work = Path(tmp)
        tree = vm.unpack_kernel(package, work, packages=PACKAGES)
        ordered = vm.module_order(tree, version, MODULES, packages=PACKAGES)
        root = work / "initramfs"
        for sub in ("bin", "dev", "proc", "modules"):
            (root / sub).mkdir(parents=True)
        shutil.copy2(vm.BUSYBOX, root / "bin" / "busybox")
        for path in ordered:
            shutil.copy2(path, root / "modules" / os.path.basename(path))
        (root / "modules.list").write_text("".join(os.path.basename(p) + "\n" for p in ordered))
        _script(root / "init", _INITRAMFS_INIT)
        (where / "initrd.gz.part").write_bytes(vm.initramfs(root))
        seed = work / "seed"
        _userland(seed, debs)
        flash = where / "flash.img.part"
        with open(flash, "wb") as f:
            f.truncate(FLASH_MB * 1024 * 1024)
        vm.run(
            ["mkfs.ext4", "-q", "-F", "-L", "flash", "-d", str(seed), str(flash)],
            packages=PACKAGES,
        )
        shutil.copy2(tree / "boot" / f"vmlinuz-{version}", image.kernel)
        (where / "initrd.gz.part").rename(image.initrd)
        flash.rename(image.flash)
    return image


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _userland(seed: Path, debs: list[Path]) -> None:
    """The flash's files: a merged-/usr tree with busybox and Debian's Python."""
    for sub in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
        (seed / sub).mkdir(parents=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        (seed / name).symlink_to(f"usr/{name}")
    for sub in ("dev", "proc", "sys", "run", "tmp", "root", "mnt", "var/log", "etc/init.d"):
        (seed / sub).mkdir(parents=True, exist_ok=True)
    (seed / "tmp").chmod(0o1777)
    for deb in debs:
        tarball = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        subprocess.run(
            ["tar", "-x", "--keep-directory-symlink", "-C", str(seed),
             "--exclude=./usr/share/doc*", "--exclude=./usr/share/man*",
             "--exclude=./usr/share/lintian*"],
            input=tarball, capture_output=True, check=True,
        )  # fmt: skip
    shutil.copy2(vm.BUSYBOX, seed / "usr/bin/busybox")
    listing = subprocess.run(
        [vm.BUSYBOX, "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    for applet in listing.split():
        path = seed / "usr" / applet.removeprefix("usr/")
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to("/usr/bin/busybox")
    (seed / "usr/bin/python3").symlink_to("python3.11")
    etc = seed / "etc"
    (etc / "inittab").write_text(_INITTAB)
    _script(etc / "init.d/rcS", _RCS)
    _script(etc / "init.d/rcK", _RCK)
    (etc / "profile").write_text(_PROFILE)
    (etc / "hostname").write_text("vboard\n")
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    subprocess.run(["ldconfig", "-r", str(seed)], capture_output=True, check=True)
    # bytecode now: the board's CPU is slow and its first boot should not write it
    subprocess.run(
        ["python3", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
         "unchecked-hash", "-s", str(seed), "-p", "/", str(seed / "usr/lib/python3.11")],
        capture_output=True, check=False,
    )  # fmt: skip


def fresh_flash(path: Path, image: BoardImage | None = None) -> Path:
    """A new board's flash at ``path``: a copy of the pristine image (sparse)."""
    source = (image or build_image()).flash
    subprocess.run(["cp", "--sparse=always", str(source), str(path)], check=True)
    return path


class VirtualBoard:
    """One virtual board running in QEMU: its console pty, power and plug.

    ``data_link`` is the path ttyS1 opens (an existing pty, e.g. an ``ira
    nullmodem`` end); without it ttyS1 leads nowhere.  ``console_path`` is the
    console's pty once started.  The console is free for ``ira flash``: this
    class opens it only inside ``wait_for_shell``, ``run``, ``reboot`` and
    ``poweroff``.
    """

    def __init__(
        self,
        flash: Path,
        *,
        data_link: str | None = None,
        console: tuple[str, str] | None = None,
        image: BoardImage | None = None,
        memory_mb: int = 512,
    ) -> None:
        self.flash = Path(flash)
        self.data_link = data_link
        self._console_pair = console
        self._image = image
        self._memory_mb = memory_mb
        self._proc: subprocess.Popen[bytes] | None = None
        self._output = bytearray()
        self._seen = threading.Condition()
        self._reader: threading.Thread | None = None
        self.console_path = ""
        self.started_at = 0.0

    def argv(self, image: BoardImage) -> list[str]:
        data = f"serial,id=data,path={self.data_link}" if self.data_link else "null,id=data"
        con = f"serial,id=con,path={self._console_pair[0]}" if self._console_pair else "pty,id=con"
        return [
            vm.QEMU,
            "-accel", "tcg", "-cpu", "max", "-m", str(self._memory_mb), "-smp", "1",
            "-display", "none", "-monitor", "none", "-nodefaults", "-no-user-config",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", "console=ttyS0,115200 panic=-1 loglevel=3 rootwait",
            "-drive", f"file={self.flash},format=raw,if=virtio",
            "-chardev", con, "-serial", "chardev:con",
            "-chardev", data, "-serial", "chardev:data",
        ]  # fmt: skip

    def start(self, timeout_s: float = 30.0) -> str:
        """Start QEMU; the console's pty path (the guest is still booting)."""
        if not self.flash.exists():
            raise TransportError(f"no flash image {self.flash}: make one with fresh_flash()")
        for path in (self.data_link, *(self._console_pair or ())):
            if path and not os.path.exists(path):
                raise TransportError(f"{path} does not exist: start the null-modem first")
        image = self._image or build_image()
        self._output.clear()
        self.started_at = time.monotonic()
        self._proc = subprocess.Popen(
            self.argv(image),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="ira-vboard-qemu", daemon=True)
        self._reader.start()
        if self._console_pair:
            self.console_path = self._console_pair[1]
            return self.console_path
        deadline = time.monotonic() + timeout_s
        with self._seen:
            while (m := _PTY.search(self._output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    said = self._output.decode(errors="replace")[-500:]
                    self.kill()
                    raise TransportError(f"QEMU did not start the virtual board: {said}")
                self._seen.wait(min(left, 0.2))
        self.console_path = m.group(1).decode()
        return self.console_path

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        while data := os.read(proc.stdout.fileno(), 4096):
            with self._seen:
                self._output += data
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def pid(self) -> int | None:
        """QEMU's process id (its own process group), while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def qemu_output(self) -> str:
        with self._seen:
            return self._output.decode(errors="replace")

    def _console(self) -> Console:
        if not self.running:
            raise TransportError("the virtual board is not running")
        return Console(self.console_path)

    def wait_for_shell(self, timeout_s: float = 120.0) -> float:
        """Wait until the console's shell answers; the seconds since QEMU started.  Each
        try starts with an XON: what a flash cut short left on the line may hold an XOFF
        (the console's output stops).  Once the boot is over (rcS said ``vboard: up``, or
        after ``_BOOT_S`` of trying) a ^C too: the line may hold an open quote (the shell
        waits for the rest of a string), or a command may run in the console's
        foreground.  Not before: a ^C that lands before rcS ignores it would end rcS,
        and with it the services it had yet to start."""
        console = self._console()
        try:
            started = time.monotonic()
            deadline = started + timeout_s
            while time.monotonic() < deadline:
                if not self.running:
                    raise TransportError("QEMU ended while the virtual board booted")
                if _BOOTED in console.transcript or time.monotonic() - started > _BOOT_S:
                    console.unstick()
                else:
                    console.write(b"\x11")
                console.type_line("echo __VBOARD_$((6*7))__")
                if console.expect(_ALIVE, 1.0) is not None:
                    return time.monotonic() - self.started_at
            said = bytes(console.transcript[-300:])
            raise TransportError(
                f"no shell on the virtual board's console in {timeout_s:.0f} s; it said {said!r}"
            )
        finally:
            console.close()

    def run(self, command: str, timeout_s: float = 60.0) -> tuple[int, str]:
        """Run a shell command on the console; its exit status and output."""
        console = self._console()
        try:
            return console.run(command, timeout_s=timeout_s)
        finally:
            console.close()

    def boot_id(self) -> str:
        """The kernel's id of the running boot (another after every reboot)."""
        rc, out = self.run("cat /proc/sys/kernel/random/boot_id")
        if rc != 0:
            raise TransportError(f"the virtual board gave no boot id: {out[-200:]}")
        return out.strip()

    def reboot(self, timeout_s: float = 120.0) -> float:
        """``reboot`` in the guest (its init stops the services and syncs; QEMU resets
        it, same process and ptys); returns once its shell answers again from the new
        boot: the seconds that took."""
        self.wait_for_shell(30.0)
        before = self.boot_id()
        started = time.monotonic()
        console = self._console()
        try:
            console.type_line("reboot")
        finally:
            console.close()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(TransportError, ConsoleError):
                self.wait_for_shell(max(1.0, deadline - time.monotonic()))
                if self.boot_id() != before:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise TransportError(f"the virtual board did not come back within {timeout_s:.0f} s")

    def poweroff(self, timeout_s: float = 60.0) -> None:
        """``poweroff`` in the guest and wait for QEMU to end (killed if it does not)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(TransportError):
                self.wait_for_shell(30.0)
                console = self._console()
                try:
                    console.type_line("poweroff")
                finally:
                    console.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        self.kill()

    def kill(self) -> None:
        """Pull the plug: QEMU ends at once, whatever the guest had not written is lost."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def _state(flash: Path) -> Path:
    return flash.with_name(flash.name + ".qemu")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m ira.tools.vboard", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find) the kernel, initramfs and pristine flash")
    new = sub.add_parser("new", help="a fresh board's flash image (a copy of the pristine one)")
    new.add_argument("flash", type=Path)
    boot = sub.add_parser("boot", help="boot a board; runs until it powers off or SIGINT/TERM")
    boot.add_argument("flash", type=Path)
    boot.add_argument("--data-link", metavar="PATH", help="what ttyS1 opens (a null-modem end)")
    for name, text in (("poweroff", "power a booted board off"), ("kill", "pull the plug")):
        sub.add_parser(name, help=text).add_argument("flash", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            image = build_image()
            print(f"kernel {image.kernel}\ninitrd {image.initrd}\nflash  {image.flash}")
        elif args.command == "new":
            print(fresh_flash(args.flash))
        elif args.command == "boot":
            return _boot(args.flash, args.data_link)
        else:
            state = json.loads(_state(args.flash).read_text())
            if args.command == "kill":
                os.killpg(int(state["pid"]), signal.SIGKILL)
            else:
                console = Console(state["console"])
                try:
                    console.wait_for_shell(30.0)
                    console.type_line("poweroff")
                finally:
                    console.close()
    except (OSError, ValueError, KeyError, TransportError) as exc:
        print(f"vboard: {exc}", file=sys.stderr)
        return 2
    return 0


def _boot(flash: Path, data_link: str | None) -> int:
    import json

    board = VirtualBoard(flash, data_link=data_link)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        console = board.start()
        _state(flash).write_text(json.dumps({"pid": board.pid, "console": console}))
        print(f"console {console}", flush=True)
        print(f"shell after {board.wait_for_shell():.1f} s", flush=True)
        while board.running and not stop.wait(0.5):
            pass
    finally:
        board.kill()
        _state(flash).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
