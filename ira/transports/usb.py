"""The host's side of a USB link: ``usb://VID:PID[/SERIAL]`` or ``usb://BUS-PORT.PORT``.

A board in USB gadget mode (``ffs://`` on its side) offers a vendor-specific
interface with one bulk OUT and one bulk IN endpoint (``ira.wire.usb``).
This transport finds the device with pyusb, claims that interface and moves
one link frame per bulk transfer (a *packet* transport), with a zero-length
packet after a frame that fills its last packet.  libusb comes from the
``libusb-package`` wheel, so ``pip install`` alone gives a working backend;
a system libusb is used when the wheel's is missing.

``fileno()`` is None: the runtime's reader thread calls ``recv`` with a short
timeout, and ``send`` is a bulk write bounded by its timeout.  libusb errors
become one line naming the fix:

* NO_DEVICE or IO (the board unplugged or re-enumerating), and no device matching
  the spec at open: ``PortGone``; the link runtime reopens the spec with a
  backoff, keeping the session;
* ACCESS: the udev rule that grants access;
* BUSY: the processes that hold the device;
* a stalled endpoint is cleared; one that keeps stalling, or a transfer
  longer than any frame (babble), is the device's fault: stalls raise,
  babble is counted and dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import usb.core
import usb.util

from ira.errors import ConfigError, LinkClosed, PortGone, TransportError
from ira.wire.usb import BULK, DIR_IN, MAX_TRANSFER_BYTES, VENDOR_CLASS

__all__ = [
    "UsbSpec",
    "UsbTransport",
    "find_devices",
    "open_usb",
    "parse_usb_spec",
    "sysfs_present",
]

log = logging.getLogger(__name__)

_ID = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?:/(.+))?$")
_PORT = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")
#: stalls in a row before the device is declared not speaking ira's link
_MAX_STALLS = 3


@dataclass(frozen=True, slots=True)
class UsbSpec:
    """A device by identity (vid, pid, serial) or by where it is plugged in (bus, ports)."""

    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    bus: int | None = None
    ports: tuple[int, ...] = ()
    #: seconds ``open_usb`` waits for the device to appear (``?wait=S``)
    wait_s: float = 0.0


def parse_usb_spec(spec: str) -> UsbSpec:
    """``usb://1d6b:0104/board1``, ``usb://1d6b:0104`` or ``usb://1-1.2``, ``?wait=S``."""
    if not spec.lower().startswith("usb://"):
        raise ConfigError(f"bad USB spec {spec!r}: write usb://VID:PID[/SERIAL] or usb://BUS-PORT")
    rest, _, query = spec[len("usb://") :].partition("?")
    wait_s = 0.0
    if query:
        key, _, value = query.partition("=")
        try:
            wait_s = float(value) if key == "wait" else -1.0
        except ValueError:
            wait_s = -1.0
        if not 0 <= wait_s <= 3600:
            raise ConfigError(f"bad option {query!r} in {spec!r}: the one option is wait=SECONDS")
    if match := _ID.match(rest):
        return UsbSpec(int(match[1], 16), int(match[2], 16), match[3], wait_s=wait_s)
    if match := _PORT.match(rest):
        ports = tuple(int(p) for p in match[2].split("."))
        return UsbSpec(bus=int(match[1]), ports=ports, wait_s=wait_s)
    raise ConfigError(
        f"bad USB spec {spec!r}: write usb://VID:PID[/SERIAL] (hex, e.g. usb://1d6b:0104/board1) "
        "or usb://BUS-PORT[.PORT...] (e.g. usb://1-1.2)"
    )


def _backend() -> Any:
    try:
        import libusb_package
    except ImportError:
        return None  # pyusb looks for a system libusb
    return libusb_package.get_libusb1_backend()


def _where(dev: Any) -> str:
    ports = ".".join(str(p) for p in (dev.port_numbers or ()))
    return f"{dev.bus}-{ports}" if ports else f"bus {dev.bus} device {dev.address}"


def _node(dev: Any) -> str:
    return f"/dev/bus/usb/{dev.bus:03d}/{dev.address:03d}"


def _holders(node: str) -> str:
    """The processes that have ``node`` open, as ``pid (command)``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") == node for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        # programs and scripts by their names, not their paths: short, and what a user knows
        command = " ".join(os.path.basename(a) if "/" in a else a for a in argv if a)
        found.append(f"{pid} ({command[:80]})")
    return ", ".join(found) or "another process"


def _access_error(dev: Any) -> TransportError:
    vid, pid = f"{dev.idVendor:04x}", f"{dev.idProduct:04x}"
    return TransportError(
        f"permission denied on USB device {vid}:{pid} at {_node(dev)}: install ira's udev rule "
        f'(`sudo ira udev install`: ATTR{{idVendor}}=="{vid}", ATTR{{idProduct}}=="{pid}" '
        "gets MODE 0660, GROUP plugdev) and join plugdev (`sudo usermod -aG plugdev $USER`, "
        "then log in again)"
    )


def find_devices(spec: UsbSpec) -> list[Any]:
    """The devices that match ``spec`` (the serial is read only when one is asked for)."""
    criteria: dict[str, int] = {}
    if spec.vid is not None and spec.pid is not None:
        criteria = {"idVendor": spec.vid, "idProduct": spec.pid}
    try:
        devices = list(usb.core.find(find_all=True, backend=_backend(), **criteria))
    except usb.core.NoBackendError as exc:
        raise TransportError(
            "no libusb found: `pip install libusb-package` (or apt-get install libusb-1.0-0)"
        ) from exc
    if spec.bus is not None:
        devices = [
            d for d in devices if d.bus == spec.bus and tuple(d.port_numbers or ()) == spec.ports
        ]
    if spec.serial is not None:
        matching = []
        for dev in devices:
            try:
                serial = usb.util.get_string(dev, dev.iSerialNumber) if dev.iSerialNumber else None
            except (usb.core.USBError, ValueError) as exc:
                # pyusb says "no langid" (ValueError) when it may not open the device
                denied = getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM)
                if denied or not os.access(_node(dev), os.R_OK | os.W_OK):
                    raise _access_error(dev) from exc
                continue  # gone meanwhile, or no string: not ours
            if serial == spec.serial:
                matching.append(dev)
        devices = matching
    return devices


def _attribute(device: Path, name: str) -> str:
    try:
        return (device / name).read_text().strip()
    except OSError:
        return ""


def sysfs_present(spec: UsbSpec, sysfs: Path = Path("/sys"), dev: Path = Path("/dev")) -> bool:
    """True when a device matching ``spec`` is enumerated, configured by the kernel and
    its node is open to this process: from sysfs, cheaply, without opening it."""
    root = sysfs / "bus" / "usb" / "devices"
    try:
        names = os.listdir(root)
    except OSError:
        return False
    for name in names:
        if ":" in name:
            continue  # an interface, not a device
        device = root / name
        if spec.bus is not None:
            if name != f"{spec.bus}-{'.'.join(str(p) for p in spec.ports)}":
                continue
        elif (
            _attribute(device, "idVendor") != f"{spec.vid:04x}"
            or _attribute(device, "idProduct") != f"{spec.pid:04x}"
            or (spec.serial is not None and _attribute(device, "serial") != spec.serial)
        ):
            continue
        busnum, devnum = _attribute(device, "busnum"), _attribute(device, "devnum")
        if not _attribute(device, "bConfigurationValue") or not busnum or not devnum:
            continue  # still being enumerated
        node = dev / "bus" / "usb" / f"{int(busnum):03d}" / f"{int(devnum):03d}"
        if os.access(node, os.R_OK | os.W_OK):
            return True
    return False


def _endpoints(dev: Any, name: str) -> tuple[Any, Any, Any]:
    """ira's interface and its bulk OUT and IN endpoints, or one line saying what is wrong."""
    try:
        config = dev.get_active_configuration()
    except usb.core.USBError:
        config = None
    if config is None:
        try:
            dev.set_configuration()
            config = dev.get_active_configuration()
        except usb.core.USBError as exc:
            raise _usb_error(name, exc, dev) from exc
    for intf in config:
        if intf.bInterfaceClass != VENDOR_CLASS:
            continue
        eps = list(intf)
        out = [e for e in eps if e.bmAttributes & 3 == BULK and not e.bEndpointAddress & DIR_IN]
        inn = [e for e in eps if e.bmAttributes & 3 == BULK and e.bEndpointAddress & DIR_IN]
        if out and inn:
            return intf, out[0], inn[0]
    raise TransportError(
        f"{name}: the device has no vendor-specific interface with a bulk IN and a bulk OUT "
        "endpoint: it is not an ira board, or its gadget was set up with wrong descriptors"
    )


def _usb_error(name: str, exc: usb.core.USBError, dev: Any | None = None) -> TransportError:
    code = exc.errno
    if code in (errno.ENODEV, errno.EIO):
        # a transfer in flight when the device vanishes fails with IO, the next with
        # NO_DEVICE; either way reopening tells whether it is still there
        return PortGone(f"{name}: the device went away (unplugged or re-enumerating)")
    if code in (errno.EACCES, errno.EPERM) and dev is not None:
        return _access_error(dev)
    if code == errno.EBUSY and dev is not None:
        return TransportError(
            f"{name}: the USB interface is busy: claimed by {_holders(_node(dev))}"
        )
    return TransportError(f"{name}: {' '.join(str(exc).split())}")


class UsbTransport:
    """A claimed vendor interface of an ira board, as a packet ``Transport``."""

    packet = True

    def __init__(self, name: str, dev: Any, intf: Any, ep_out: Any, ep_in: Any) -> None:
        self.name = name
        self._dev = dev
        self._intf = intf
        self._out = ep_out
        self._in = ep_in
        self._packet_bytes = int(ep_out.wMaxPacketSize) or 64
        self._buffer = usb.util.create_buffer(MAX_TRANSFER_BYTES)
        self._stalls = 0
        self._babbling = False
        self._closed = False
        #: babble (a transfer longer than any frame), cleared stalls
        self.counters: Counter[str] = Counter()

    def fileno(self) -> int | None:
        """None: libusb is driven through timed transfers."""
        self._check()
        return None

    def recv(self, timeout_s: float | None) -> bytes:
        """One frame from the board; ``b""`` when none came within ``timeout_s``."""
        self._check()
        timeout_ms = 0 if timeout_s is None else max(1, int(timeout_s * 1000))
        try:
            size = self._in.read(self._buffer, timeout_ms)
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            self._check()
            return self._on_error(exc, self._in)
        self._stalls = 0
        if size == len(self._buffer) or self._babbling:
            # a transfer longer than any frame: dropped up to its end (a short packet)
            if not self._babbling:
                self.counters["babble"] += 1
            self._babbling = size == len(self._buffer)
            return b""
        return memoryview(self._buffer)[:size].tobytes()  # one copy, not two

    def send(self, data: bytes, timeout_s: float | None) -> int:
        """Send one frame as one transfer; 0 when it did not go within ``timeout_s``."""
        self._check()
        if not data:
            return 0
        timeout_ms = 0 if timeout_s is None else max(1, int(timeout_s * 1000))
        try:
            self._out.write(data, timeout_ms)
            if len(data) % self._packet_bytes == 0:
                self._out.write(b"", timeout_ms)  # a zero-length packet ends the transfer
        except usb.core.USBTimeoutError:
            return 0
        except usb.core.USBError as exc:
            self._check()
            self._on_error(exc, self._out)
            return 0
        return len(data)

    def close(self) -> None:
        """Release the interface and the device.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            usb.util.release_interface(self._dev, self._intf)
        except usb.core.USBError as exc:
            log.debug("releasing %s: %s", self.name, exc)
        usb.util.dispose_resources(self._dev)

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return f"<UsbTransport {self.name!r} at {_where(self._dev)}{closed}>"

    def _check(self) -> None:
        if self._closed:
            raise LinkClosed(f"{self.name} is closed")

    def _on_error(self, exc: usb.core.USBError, ep: Any) -> bytes:
        if exc.errno == errno.EOVERFLOW:
            self.counters["babble"] += 1  # longer than any frame: the device's fault
            return b""
        if exc.errno == errno.EPIPE:
            self._stalls += 1
            self.counters["stalls"] += 1
            if self._stalls > _MAX_STALLS:
                raise TransportError(
                    f"{self.name}: endpoint {ep.bEndpointAddress:#04x} stalls every transfer: "
                    "the device does not speak ira's USB link"
                ) from exc
            try:
                ep.clear_halt()
            except usb.core.USBError as clear_exc:
                raise _usb_error(self.name, clear_exc, self._dev) from clear_exc
            return b""
        raise _usb_error(self.name, exc, self._dev) from exc


def open_usb(spec: str) -> UsbTransport:
    """Find, claim and open the board named by ``spec`` (see the module docstring)."""
    wanted = parse_usb_spec(spec)
    deadline = time.monotonic() + wanted.wait_s
    devices = find_devices(wanted)
    while not devices and time.monotonic() < deadline:
        time.sleep(0.1)
        devices = find_devices(wanted)
    if not devices:
        raise PortGone(
            f"no USB device matches {spec}: is the board plugged in and its gadget bound? "
            "(`lsusb` lists what this machine sees)"
        )
    if len(devices) > 1:
        where = ", ".join(_where(d) for d in devices)
        raise ConfigError(
            f"{len(devices)} USB devices match {spec} (at {where}): add the serial number "
            "(usb://VID:PID/SERIAL) or name the port (usb://BUS-PORT)"
        )
    dev = devices[0]
    intf, ep_out, ep_in = _endpoints(dev, spec)
    try:
        if dev.is_kernel_driver_active(intf.bInterfaceNumber):
            dev.detach_kernel_driver(intf.bInterfaceNumber)
    except (usb.core.USBError, NotImplementedError) as exc:
        log.debug("%s: no kernel driver to detach: %s", spec, exc)
    try:
        usb.util.claim_interface(dev, intf)
    except usb.core.USBError as exc:
        usb.util.dispose_resources(dev)
        raise _usb_error(spec, exc, dev) from exc
    return UsbTransport(spec, dev, intf, ep_out, ep_in)
