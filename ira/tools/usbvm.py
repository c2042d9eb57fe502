"""A small QEMU guest with a real Linux USB stack (dummy_hcd), for USB links in tests.

This machine's kernel may have no USB host controller, no ``dummy_hcd`` and no
gadget configfs; Debian's generic amd64 kernel has them all as modules.  This
module builds, once, a guest that runs both ends of a USB cable:

* ``apt-get download linux-image-<ver>-amd64`` (the version ``linux-image-amd64``
  depends on), unpacked with ``dpkg-deb``; ``depmod`` and ``modprobe
  --show-depends`` pick the modules (dummy_hcd, libcomposite, FunctionFS, ACM on
  both sides, 9p over virtio) in dependency order;
* a busybox initramfs (``busybox-static``, ``cpio``) whose ``/init`` loads them,
  mounts this machine's root read-only over 9p at ``/host`` (``cache=loose``:
  imports in the guest are slow enough without round trips), mounts proc, sys,
  devtmpfs, configfs and tmpfs inside it, and a writable *work* directory shared
  at the same path on both sides;
* QEMU with software emulation (``-accel tcg``; this machine's KVM cannot boot a
  stock kernel), the console on QEMU's stdin/stdout.

Everything lands in ``~/.cache/ira/usbvm/<kernel version>/`` and is reused.
``GuestVM`` boots the guest once and runs shell scripts in it, each in a
``chroot`` of this machine's root (so the project's own virtualenv runs there),
its output in a file of the work directory and its exit status on the console::

    with GuestVM() as vm:
        result = vm.run("ira host list usb://1d6b:0104", timeout_s=60)

``python -m ira.tools.usbvm -- COMMAND`` runs one command in a fresh guest.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ira.errors import ConfigError, TransportError
from ira.tools import vm

__all__ = ["GuestImage", "GuestResult", "GuestVM", "build_image", "unavailable_reason"]

#: kernel modules the guest loads (with their dependencies, in order)
MODULES = (
    "crc32c_generic",
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "configfs",
    "dummy_hcd",
    "libcomposite",
    "usb_f_fs",
    "usb_f_acm",
    "usb_f_serial",
    "cdc_acm",
    "tun",
)
#: module parameters: two UDCs, so two gadgets can be plugged in at once
_PARAMS = {"dummy_hcd.ko": "num=2"}
#: Debian packages the guest is built with (installed by the Makefile and .ci/run)
PACKAGES = ("qemu-system-x86", "busybox-static", "kmod", "cpio")
QEMU = vm.QEMU
BUSYBOX = vm.BUSYBOX
_RO_SHARE = "security_model=none,readonly=on,multidevs=remap"
#: printed by the guest's init once it takes commands
READY = "__IRA_GUEST_READY__"
_RC = re.compile(r"__IRA_RC_(\d+)=(\d+)__")

_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m args; do insmod /modules/$m $args || echo "insmod $m failed"; done < /modules.list
work=$(sed -n 's/.*ira\.work=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
mount -t configfs configfs /host/sys/kernel/config
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work /host$work
here=$(sed -n 's/.*ira\.here=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$here" ]; then
  mkdir -p /host$here
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 here /host$here
fi
ip link set lo up
chroot /host /bin/sh -c 'ip link set lo up' 2>/dev/null
stty -F /dev/ttyS0 raw -echo
echo __IRA_GUEST_READY__ > /dev/ttyS0
while read -r n; do
  case "$n" in
    q) break ;;
    [0-9]*) chroot /host /bin/sh "$work/$n.sh" > "/host$work/$n.out" 2>&1
            echo "__IRA_RC_$n=$?__" ;;
  esac
done < /dev/ttyS0 > /dev/ttyS0
sync
poweroff -f
"""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ira/usbvm`` (``~/.cache/ira/usbvm``)."""
    return vm.cache_root() / "usbvm"


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A kernel and the initramfs built for it."""

    kernel: Path
    initrd: Path
    version: str


@dataclass(frozen=True, slots=True)
class GuestResult:
    """What one script run in the guest did."""

    returncode: int
    output: str
    elapsed_s: float


def kernel_package() -> str:
    """The generic amd64 kernel package Debian's ``linux-image-amd64`` points at."""
    return vm.kernel_package(PACKAGES)


def unavailable_reason() -> str | None:
    """Why no guest can be built here (a missing program), or None."""
    programs = (QEMU, "apt-get", "dpkg-deb", "depmod", "modprobe", "cpio")
    return vm.missing_program(programs, PACKAGES, "the USB guest")


def build_image(directory: Path | None = None) -> GuestImage:
    """Fetch the kernel and build the initramfs, or reuse what an earlier call built."""
    reason = unavailable_reason()
    if reason is not None:
        raise TransportError(reason)
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    # a change of the recipe builds a new image next to the old one
    recipe = hashlib.sha256(repr((_INIT, MODULES, _PARAMS)).encode()).hexdigest()[:8]
    where = (directory or cache_dir()) / f"{version}-{recipe}"
    kernel, initrd = where / "vmlinuz", where / "initrd.gz"
    if kernel.exists() and initrd.exists():
        return GuestImage(kernel, initrd, version)
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        work = Path(tmp)
        tree = vm.unpack_kernel(package, work, packages=PACKAGES)
        ordered = vm.module_order(tree, version, MODULES, packages=PACKAGES)
        root = work / "initramfs"
        for sub in ("bin", "dev", "proc", "sys", "modules", "host"):
            (root / sub).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        names = []
        for path in ordered:
            name = os.path.basename(path)
            shutil.copy2(path, root / "modules" / name)
            names.append(f"{name} {_PARAMS.get(name, '')}".strip())
        (root / "modules.list").write_text("\n".join(names) + "\n")
        init = root / "init"
        init.write_text(_INIT)
        init.chmod(0o755)
        partial = where / "initrd.gz.part"
        partial.write_bytes(vm.initramfs(root))
        shutil.copy2(tree / "boot" / f"vmlinuz-{version}", kernel)
        partial.rename(initrd)
    return GuestImage(kernel, initrd, version)


class GuestVM:
    """One booted guest; ``run`` executes shell scripts in it (see the module docstring)."""

    def __init__(
        self,
        image: GuestImage | None = None,
        *,
        memory_mb: int = 1024,
        cpus: int = 1,
        boot_timeout_s: float = 90,
    ) -> None:
        if not 1 <= cpus <= 8:
            raise ConfigError(f"a USB guest of {cpus} vCPUs: give 1 to 8")
        self._image = image
        self._cpus = cpus
        self._memory_mb = memory_mb
        self._boot_timeout_s = boot_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._console = bytearray()
        self._seen = threading.Condition()
        self._reader: threading.Thread | None = None
        self._counter = 0
        self._lock = threading.Lock()
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        """A directory this machine and the guest both write, at the same path."""
        if self._workdir is None:
            raise TransportError("the guest is not running")
        return self._workdir

    def console(self) -> str:
        """Everything the guest printed on its console so far."""
        with self._seen:
            return self._console.decode(errors="replace")

    def start(self) -> None:
        image = self._image or build_image()
        base = cache_dir()
        base.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        append = f"console=ttyS0 panic=-1 loglevel=3 ira.work={self._workdir}"
        # the guest mounts tmpfs on /tmp and /run: a project there is shared on its own
        project = Path(__file__).resolve().parents[2]
        shares = []
        if project.parts[1:2] in (("tmp",), ("run",)) and " " not in str(project):
            append += f" ira.here={project}"
            shares = ["-virtfs", f"local,path={project},mount_tag=here,{_RO_SHARE}"]
        argv = [
            QEMU,
            "-accel", "tcg", "-cpu", "max", "-m", str(self._memory_mb),
            "-smp", str(self._cpus),
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", append,
            "-virtfs", f"local,path=/,mount_tag=hostroot,{_RO_SHARE}",
            "-virtfs", f"local,path={self._workdir},mount_tag=work,security_model=none",
            *shares,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read_console, name="ira-guest-console")
        self._reader.daemon = True
        self._reader.start()
        deadline = time.monotonic() + self._boot_timeout_s
        with self._seen:
            while READY.encode() not in self._console:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    tail = self._console[-2000:].decode(errors="replace")
                    self.stop()
                    raise TransportError(f"the USB guest did not come up; its console:\n{tail}")
                self._seen.wait(min(left, 0.5))

    def _read_console(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            data = os.read(fd, 4096)
            with self._seen:
                if not data:
                    self._seen.notify_all()
                    return
                self._console += data
                self._seen.notify_all()

    def run(
        self, script: str, *, timeout_s: float = 120.0, env: dict[str, str] | None = None
    ) -> GuestResult:
        """Run a shell script in the guest (in the chroot); its status and output."""
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise TransportError("the USB guest is not running")
        with self._lock:
            self._counter += 1
            n = self._counter
        exports = "".join(
            f"export {key}={shlex.quote(value)}\n" for key, value in _guest_env(env).items()
        )
        path = self.workdir / f"{n}.sh"
        path.write_text(f"cd {shlex.quote(os.getcwd())}\n{exports}{script}\n")
        started = time.monotonic()
        with self._lock:
            proc.stdin.write(f"{n}\n".encode())
            proc.stdin.flush()
        deadline = started + timeout_s
        with self._seen:
            while True:
                found = [m for m in _RC.finditer(self._console.decode(errors="replace"))]
                match = next((m for m in found if int(m.group(1)) == n), None)
                if match is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    output = self._output(n)
                    raise TransportError(
                        f"guest script {n} did not finish within {timeout_s:.0f} s; "
                        f"its output so far:\n{output}"
                    )
                self._seen.wait(min(left, 0.5))
        return GuestResult(int(match.group(2)), self._output(n), time.monotonic() - started)

    def _output(self, n: int) -> str:
        try:
            return (self.workdir / f"{n}.out").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Power the guest off (kill it if it does not go), remove the work directory."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write(b"q\n")
                    proc.stdin.flush()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdin is not None:
                proc.stdin.close()
            if self._reader is not None:
                self._reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
            self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> GuestVM:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _guest_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of a script in the guest: this one's PATH and virtualenv."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "IRA_NATIVE": os.environ.get("IRA_NATIVE", ""),
    }
    if extra:
        env.update(extra)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ira.tools.usbvm", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--build", action="store_true", help="only build the image")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the command")
    parser.add_argument("command", nargs="*", help="shell command to run in the guest")
    args = parser.parse_args(argv)
    try:
        image = build_image()
        if args.build:
            print(f"kernel {image.kernel}\ninitrd {image.initrd}")
            return 0
        if not args.command:
            raise ConfigError("give a command to run in the guest, or --build")
        started = time.monotonic()
        with GuestVM(image) as vm:
            booted = time.monotonic() - started
            result = vm.run(" ".join(args.command), timeout_s=args.timeout)
    except (ConfigError, TransportError) as exc:
        print(f"usbvm: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.output)
    print(
        f"[guest booted in {booted:.1f} s; command took {result.elapsed_s:.1f} s]", file=sys.stderr
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
