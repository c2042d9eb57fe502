"""A USB gadget made through configfs (libcomposite): the board's side of a USB cable.

``Gadget`` builds ``/sys/kernel/config/usb_gadget/ira-NAME`` with one
configuration holding a FunctionFS function ``ffs.NAME`` (mounted at
``/dev/ffs-NAME``) and, with ``acm``, a CDC-ACM function (``/dev/ttyGS<N>``
on the board, ``/dev/ttyACM<N>`` on the host).  The caller writes the
FunctionFS descriptors, then ``bind()``s the gadget to a UDC.  ``remove()``
unbinds and removes everything it made, in reverse order, and is idempotent.

The default identity is 1d6b:0104, the Linux Foundation's "Multifunction
Composite Gadget" -- what the kernel's own configfs examples and most board
images use for a composite gadget, so a host treats it as a generic gadget
and no vendor driver claims it.  A product sets its own VID/PID.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ira.errors import ConfigError, TransportError

__all__ = ["DEFAULT_PID", "DEFAULT_VID", "Gadget", "GadgetOptions", "udc_names"]

log = logging.getLogger(__name__)

DEFAULT_VID = 0x1D6B
DEFAULT_PID = 0x0104
CONFIGFS = Path("/sys/kernel/config/usb_gadget")
UDC_CLASS = Path("/sys/class/udc")


@dataclass(frozen=True, slots=True)
class GadgetOptions:
    """What ``ffs://NAME?...`` asks for."""

    #: the function's name: ``/dev/ffs-NAME``, gadget ``ira-NAME``
    name: str
    vid: int = DEFAULT_VID
    pid: int = DEFAULT_PID
    #: iSerialNumber; the name when empty
    serial: str = ""
    #: also offer a CDC-ACM serial function
    acm: bool = False
    #: the UDC to bind; the first one in /sys/class/udc when empty
    udc: str = ""
    manufacturer: str = "ira"
    product: str = "ira board"


def udc_names() -> list[str]:
    """The USB device controllers of this machine."""
    try:
        return sorted(os.listdir(UDC_CLASS))
    except OSError:
        return []


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(source: str, target: str, fstype: str) -> None:
    if _libc().mount(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        code = ctypes.get_errno()
        raise TransportError(f"cannot mount {fstype} at {target}: {os.strerror(code)}")


def _umount(target: str) -> None:
    libc = _libc()
    for _ in range(50):
        if libc.umount2(target.encode(), 0) == 0:
            return
        code = ctypes.get_errno()
        if code != errno.EBUSY:
            return
        time.sleep(0.02)


class Gadget:
    """One configfs gadget with a FunctionFS function (see the module docstring)."""

    def __init__(self, options: GadgetOptions) -> None:
        self.options = options
        self.root = CONFIGFS / f"ira-{options.name}"
        self.ffs_dir = Path(f"/dev/ffs-{options.name}")
        self.udc = ""
        self._made: list[Path] = []  # directories and links, in creation order
        self._mounted = False

    @property
    def acm_tty(self) -> str | None:
        """The board's end of the ACM function (``/dev/ttyGS<N>``), if there is one."""
        try:
            port = (self.root / "functions" / f"acm.{self.options.name}" / "port_num").read_text()
        except OSError:
            return None
        return f"/dev/ttyGS{port.strip()}"

    def create(self) -> None:
        """Make the gadget and mount its FunctionFS; descriptors are written next."""
        if not CONFIGFS.is_dir():
            raise TransportError(
                "no USB gadget configfs at /sys/kernel/config/usb_gadget: this kernel needs "
                "libcomposite (`modprobe libcomposite`) and configfs mounted, and a UDC"
            )
        if self.root.exists():
            self._remove_stale()
        self._choose_udc()  # checked before anything is made
        o = self.options
        try:
            self._mkdir(self.root)
            self._write("idVendor", f"{o.vid:#06x}")
            self._write("idProduct", f"{o.pid:#06x}")
            self._write("bcdUSB", "0x0200")
            self._write("bcdDevice", "0x0100")
            self._mkdir(self.root / "strings" / "0x409")
            self._write("strings/0x409/serialnumber", o.serial or o.name)
            self._write("strings/0x409/manufacturer", o.manufacturer)
            self._write("strings/0x409/product", o.product)
            config = self.root / "configs" / "c.1"
            self._mkdir(config)
            self._mkdir(config / "strings" / "0x409")
            self._write("configs/c.1/strings/0x409/configuration", "ira")
            self._write("configs/c.1/MaxPower", "100")
            functions = [f"ffs.{o.name}"] + ([f"acm.{o.name}"] if o.acm else [])
            for function in functions:
                self._mkdir(self.root / "functions" / function)
                link = config / function
                link.symlink_to(self.root / "functions" / function)
                self._made.append(link)
            self.ffs_dir.mkdir(exist_ok=True)
            self._made.append(self.ffs_dir)
            _mount(o.name, str(self.ffs_dir), "functionfs")
            self._mounted = True
        except OSError as exc:
            self.remove()
            raise TransportError(f"cannot make USB gadget {self.root}: {exc}") from exc
        except TransportError:
            self.remove()
            raise

    def _choose_udc(self) -> str:
        udcs = udc_names()
        udc = self.options.udc or (udcs[0] if udcs else "")
        if not udc:
            raise TransportError(
                "no USB device controller in /sys/class/udc: this machine has no UDC (load "
                "dummy_hcd for a virtual one) or its driver is not loaded"
            )
        if udc not in udcs:
            raise ConfigError(f"no UDC {udc!r}; this machine has: {', '.join(udcs) or 'none'}")
        return udc

    def bind(self) -> None:
        """Attach the gadget to its UDC: the host sees the device plugged in."""
        udc = self._choose_udc()
        try:
            (self.root / "UDC").write_text(udc)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise TransportError(
                    f"UDC {udc} is busy: another gadget is bound to it "
                    f"(`grep -l {udc} /sys/kernel/config/usb_gadget/*/UDC`)"
                ) from exc
            raise TransportError(f"cannot bind gadget to UDC {udc}: {exc}") from exc
        self.udc = udc

    def unbind(self) -> None:
        """Detach from the UDC: the host sees the device unplugged."""
        try:
            if (self.root / "UDC").read_text().strip():
                (self.root / "UDC").write_text("\n")
        except OSError:
            pass

    def speed(self) -> str:
        """The UDC's current speed (``high-speed``…), ``UNKNOWN`` when not connected."""
        try:
            return (UDC_CLASS / self.udc / "current_speed").read_text().strip()
        except OSError:
            return "UNKNOWN"

    def remove(self) -> None:
        """Unbind and remove what ``create`` made.  Idempotent."""
        if self.root.exists():
            self.unbind()
        if self._mounted:
            _umount(str(self.ffs_dir))
            self._mounted = False
        for path in reversed(self._made):
            try:
                if path.is_symlink():
                    path.unlink()
                else:
                    path.rmdir()
            except OSError:
                pass
        self._made.clear()

    def _remove_stale(self) -> None:
        """Remove the gadget a killed board left (FunctionFS unbinds it when its ep0 closes);
        one still bound to a UDC belongs to a running board."""
        try:
            bound = (self.root / "UDC").read_text().strip()
        except OSError:
            bound = ""
        if bound:
            raise TransportError(
                f"gadget {self.root} exists and is bound to {bound}: another `ira board serve "
                f"ffs://{self.options.name}` runs (stop it, or choose another name)"
            )
        with open("/proc/mounts") as mounts:
            if any(line.split()[1] == str(self.ffs_dir) for line in mounts if line.strip()):
                _umount(str(self.ffs_dir))
        leftovers = [
            *(p for p in self.root.glob("configs/*/*") if p.is_symlink()),
            *self.root.glob("configs/*/strings/*"),
            *self.root.glob("configs/*"),
            *self.root.glob("functions/*"),
            *self.root.glob("strings/*"),
            self.root,
        ]
        try:
            for path in leftovers:
                if path.is_symlink():
                    path.unlink()
                else:
                    path.rmdir()
        except OSError as exc:
            raise TransportError(f"cannot remove the stale gadget {self.root}: {exc}") from exc
        log.info("removed the gadget a stopped board left at %s", self.root)

    def _mkdir(self, path: Path) -> None:
        # configfs creates the parents it owns (strings/, configs/...) itself
        path.mkdir()
        self._made.append(path)

    def _write(self, attribute: str, value: str) -> None:
        (self.root / attribute).write_text(value)
