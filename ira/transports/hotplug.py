"""Hints that a port that went away is back: kernel hotplug events and new directory entries.

A link runtime reopens a port that went away with a backoff (up to 2 s between
tries).  A ``HotplugWatch`` lets it try at once when the port appears instead:
its descriptor becomes readable on

* a kernel uevent (the netlink socket udev itself listens on: a USB device
  enumerated, a tty made), which needs no udev daemon and no privilege, and
* a change in the directory where a serial port's path appears (inotify:
  ``/dev`` for ``/dev/ttyUSB0``, ``/dev/serial/by-id`` for udev's names, the
  directory of a null-modem's symlinks), the nearest one that exists.

Both feed one ``epoll`` descriptor.  ``present()`` then answers cheaply
(a path that exists, a USB device in sysfs) whether to open the port now.
udev makes names and grants permissions a little after the kernel's event, so
the runtime keeps asking for a short while after an event (``ira.runtime.link``).

``watch_for(spec)`` builds the watch of a link spec: a serial path or a
``usb://`` device; other specs (pyserial URLs) have none and are reopened by
the backoff alone.  The FunctionFS side has its own watch (``FfsWatch``: the
host configured the device).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import socket
from collections.abc import Callable
from pathlib import Path

from ira.transports import scheme_of
from ira.transports.base import PortWatch

__all__ = ["HotplugWatch", "nearest_directory", "watch_for"]

#: netlink protocol of kernel uevents, and the multicast group the kernel sends them to
NETLINK_KOBJECT_UEVENT = 15
_KERNEL_GROUP = 1
#: inotify: an entry made, moved in, or its attributes (permissions) changed
_IN_ATTRIB, _IN_MOVED_TO, _IN_CREATE = 0x4, 0x80, 0x100
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


def _uevent_socket() -> socket.socket | None:
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_KOBJECT_UEVENT,
        )
    except OSError:
        return None
    try:
        sock.bind((0, _KERNEL_GROUP))
    except OSError:
        sock.close()
        return None
    return sock


def _inotify(directories: list[Path]) -> int | None:
    """An inotify descriptor watching ``directories`` for new entries, or None."""
    if not directories:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    mask = _IN_CREATE | _IN_MOVED_TO | _IN_ATTRIB
    watched = sum(
        libc.inotify_add_watch(fd, os.fsencode(d), mask) >= 0 for d in directories if d.is_dir()
    )
    if not watched:
        os.close(fd)
        return None
    return fd


def nearest_directory(path: Path) -> Path:
    """The directory a path appears in, or its nearest ancestor that exists."""
    directory = path.parent
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    return directory


class HotplugWatch:
    """A ``PortWatch`` on kernel uevents and directories, answered by ``present``."""

    def __init__(
        self,
        present: Callable[[], bool],
        *,
        directories: list[Path] | None = None,
        uevents: bool = True,
    ) -> None:
        self._present = present
        self._socket = _uevent_socket() if uevents else None
        self._inotify = _inotify(directories or [])
        self._epoll: select.epoll | None = None
        sources = [fd for fd in (self._inotify,) if fd is not None]
        if self._socket is not None:
            sources.append(self._socket.fileno())
        if sources:
            self._epoll = select.epoll()
            for fd in sources:
                self._epoll.register(fd, select.EPOLLIN)

    def fileno(self) -> int | None:
        """Readable after a hotplug event or a new entry; None: no source (poll)."""
        return None if self._epoll is None else self._epoll.fileno()

    def present(self) -> bool:
        self._drain()
        return self._present()

    def _drain(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                while self._socket.recv(1 << 16):
                    pass
        if self._inotify is not None:
            with contextlib.suppress(OSError):
                while os.read(self._inotify, 1 << 16):
                    pass

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._inotify is not None:
            with contextlib.suppress(OSError):
                os.close(self._inotify)
            self._inotify = None


def _usable(path: Path) -> bool:
    return os.access(path, os.R_OK | os.W_OK)


def watch_for(spec: str) -> PortWatch | None:
    """The hotplug watch of a link spec, or None when the backoff alone reopens it."""
    scheme = scheme_of(spec)
    if scheme == "usb":
        from ira.transports.usb import parse_usb_spec, sysfs_present

        wanted = parse_usb_spec(spec)
        return HotplugWatch(lambda: sysfs_present(wanted))
    if scheme != "serial":
        return None
    from ira.transports.serial import parse_serial_spec

    url = parse_serial_spec(spec).url
    if not url.startswith("/"):
        return None  # a pyserial URL: nothing to watch
    path = Path(url)
    return HotplugWatch(lambda: _usable(path), directories=[nearest_directory(path)])
