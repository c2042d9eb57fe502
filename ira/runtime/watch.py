"""Which boards are plugged in: the stable names in a directory (``/dev/ira`` by default).

udev gives every ira board a name under ``/dev/ira`` (``ira udev install``): a
symlink to the board's tty, or to the USB device node of a gadget board.  The
host service follows that directory rather than udev's event socket, so the
same service works where no udevd runs (containers, mdev systems, a test that
makes the symlinks itself) and a name made by hand is served like one made by
udev.  A scan every quarter second costs a ``listdir`` of a handful of names.

An entry becomes a link spec:

* a tty (a character device that is not a USB device node): the entry's own
  path, so the link reopens through the name, whatever tty it points at next;
* a USB device node (``/dev/bus/usb/BBB/DDD``, what libusb opens for a gadget
  board): ``usb://VID:PID/SERIAL``, read from the device's sysfs attributes,
  so the link follows the board's serial number across re-enumerations.

An entry whose target is gone (a dangling symlink) is a board unplugged.

``BoardFollower`` turns the directory's changes into a host service's links: a
board that appears gets a link; one that goes keeps its link, which waits for
its port and resumes the session when the board is back within the session
timeout; a board gone for ``forget_after_s`` has its link removed (and gets a
new one, a new session, when it comes back), so a host that sees boards come
and go for months holds links only for those present or recently gone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from ira.errors import IraError

#: where udev puts ira's stable names
DEFAULT_DIRECTORY = Path("/dev/ira")
#: how often the directory is scanned
POLL_S = 0.25
#: the major number of USB device nodes (Linux's usb_device, /dev/bus/usb)
USB_DEVICE_MAJOR = 189


@dataclass(frozen=True, slots=True)
class BoardSeen:
    """A name in the directory and the link spec it stands for."""

    name: str
    spec: str


@dataclass(frozen=True, slots=True)
class Changes:
    added: tuple[BoardSeen, ...]
    removed: tuple[BoardSeen, ...]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def link_spec(entry: Path, sysfs: Path = Path("/sys")) -> str | None:
    """The link spec of a directory entry, or None when it is not (or no longer) a board."""
    try:
        st = entry.stat()  # follows the symlink: a dangling one is an unplugged board
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if major != USB_DEVICE_MAJOR:
        return str(entry)
    device = sysfs / "dev" / "char" / f"{major}:{minor}"
    vid, pid = _read(device / "idVendor"), _read(device / "idProduct")
    if not vid or not pid:
        return None
    serial = _read(device / "serial")
    return f"usb://{vid}:{pid}/{serial}" if serial else f"usb://{vid}:{pid}"


class BoardDirectory:
    """The boards a directory names; ``scan()`` says what changed since the last scan."""

    def __init__(self, directory: Path = DEFAULT_DIRECTORY, sysfs: Path = Path("/sys")) -> None:
        self.directory = directory
        self._sysfs = sysfs
        self._present: dict[str, BoardSeen] = {}

    @property
    def present(self) -> list[BoardSeen]:
        return sorted(self._present.values(), key=lambda b: b.name)

    def scan(self) -> Changes:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            names = []  # no board plugged in yet: udev makes the directory with the first
        now: dict[str, BoardSeen] = {}
        for name in names:
            if name.startswith("."):
                continue
            spec = link_spec(self.directory / name, self._sysfs)
            if spec is not None:
                now[name] = BoardSeen(name, spec)
        added = tuple(b for n, b in now.items() if self._present.get(n) != b)
        removed = tuple(b for n, b in self._present.items() if now.get(n) != b)
        self._present = now
        return Changes(added, removed)


class Served(Protocol):
    """What a follower needs of a served link (``HostClient``)."""

    name: str


C = TypeVar("C", bound=Served)


class Links(Protocol[C]):
    """What a follower needs of a host service (``HostService``)."""

    def add(self, link: str) -> C: ...

    def remove(self, client: C) -> None: ...

    def serving(self, client: C) -> bool:
        """False once the client's link stopped on an error (it will not come back)."""
        ...


@dataclass(frozen=True, slots=True)
class Followed:
    """What a follower did in one poll, for the log."""

    added: tuple[BoardSeen, ...] = ()
    gone: tuple[BoardSeen, ...] = ()
    back: tuple[BoardSeen, ...] = ()
    forgotten: tuple[BoardSeen, ...] = ()
    #: boards whose link could not be started, with why (tried again when the name changes)
    failed: tuple[tuple[BoardSeen, IraError], ...] = ()


class BoardFollower(Generic[C]):
    """Keeps a host service's links in step with a directory of boards."""

    def __init__(self, boards: BoardDirectory, links: Links[C], *, forget_after_s: float) -> None:
        self.boards = boards
        self._links = links
        self.forget_after_s = forget_after_s
        #: name -> (what it stood for, its client)
        self._served: dict[str, tuple[BoardSeen, C]] = {}
        #: name -> when it went
        self._gone_since: dict[str, float] = {}
        #: names whose link could not be started, as they were then
        self._failed: dict[str, BoardSeen] = {}

    @property
    def served(self) -> dict[str, C]:
        return {name: client for name, (_, client) in self._served.items()}

    def poll(self, *, now: float) -> Followed:
        changes = self.boards.scan()
        added: list[BoardSeen] = []
        back: list[BoardSeen] = []
        gone: list[BoardSeen] = []
        forgotten: list[BoardSeen] = []
        failed: list[tuple[BoardSeen, IraError]] = []
        for board in changes.removed:
            if self._failed.get(board.name) == board:
                del self._failed[board.name]
            if board.name in self._served and board.name not in self._gone_since:
                self._gone_since[board.name] = now
                gone.append(board)
        for board in changes.added:
            known = self._served.get(board.name)
            if known is not None and known[0] == board and self._links.serving(known[1]):
                self._gone_since.pop(board.name, None)
                back.append(board)
                continue
            if known is not None:  # another board under the name, or a link that failed
                self._forget(board.name)
            try:
                client = self._links.add(board.spec)
            except IraError as exc:  # one board's bad port must not stop the others
                self._failed[board.name] = board
                failed.append((board, exc))
                continue
            self._served[board.name] = (board, client)
            added.append(board)
        for name, since in list(self._gone_since.items()):
            if now - since >= self.forget_after_s:
                forgotten.append(self._served[name][0])
                self._forget(name)
        return Followed(tuple(added), tuple(gone), tuple(back), tuple(forgotten), tuple(failed))

    def _forget(self, name: str) -> None:
        self._gone_since.pop(name, None)
        _, client = self._served.pop(name)
        self._links.remove(client)


__all__ = [
    "DEFAULT_DIRECTORY",
    "POLL_S",
    "BoardDirectory",
    "BoardFollower",
    "BoardSeen",
    "Changes",
    "Followed",
    "link_spec",
]
