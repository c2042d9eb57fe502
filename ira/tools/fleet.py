"""A fleet of virtual boards for one host: what a host with many boards plugged in sees.

``Fleet(count, directory)`` makes ``count`` virtual null-modems and runs a board
(``BoardService``, the stock devices) on the A end of each, in this process;
the B ends are the host's, named ``DIRECTORY/board-NN`` as udev names boards
under ``/dev/ira``.  ``unplug(i)`` pulls the host's port of a board (its pty
goes away: an open port reads EIO, as a pulled USB-serial adapter's does) and
removes its name, and ``plug(i)`` brings a new port back under the same name,
as udev does for an adapter plugged in again.

Run as ``python -m ira.tools.fleet N DIRECTORY`` it prints ``board-NN PATH``
per board, then ``ready``, and serves until SIGINT or SIGTERM: a fleet in its
own process, so that a host measured beside it pays only for itself.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType

from ira.errors import ConfigError
from ira.runtime.board import BoardService
from ira.tools.nullmodem import NullModem, NullModemConfig


class Fleet:
    """``count`` boards on virtual null-modems; their host ends named in ``directory``."""

    def __init__(self, count: int, directory: Path, cable: NullModemConfig | None = None) -> None:
        if not 1 <= count <= 256:
            raise ConfigError(f"a fleet of {count} boards: give 1 to 256")
        self.count = count
        self.directory = directory
        self._cable = cable or NullModemConfig()
        self._stack = contextlib.ExitStack()
        self.modems: list[NullModem] = []
        self.boards: list[BoardService] = []

    def name(self, index: int) -> str:
        return f"board-{index:02d}"

    def path(self, index: int) -> Path:
        """The host's name of board ``index`` (present while it is plugged in)."""
        return self.directory / self.name(index)

    def plug(self, index: int) -> None:
        """Board ``index``'s host port back (a new pty), named again."""
        self.modems[index].plug("B")

    def unplug(self, index: int) -> None:
        """Board ``index``'s host port gone, and its name with it."""
        self.modems[index].pull("B")

    def plugged(self, index: int) -> bool:
        return self.path(index).is_symlink()

    def __enter__(self) -> Fleet:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for index in range(self.count):
                modem = self._stack.enter_context(NullModem(self._cable))
                self.modems.append(modem)
                self.boards.append(self._stack.enter_context(BoardService(modem.path_a)))
                modem.symlink("B", str(self.path(index)))  # removed when the modem closes
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ira.tools.fleet", description=__doc__)
    parser.add_argument("count", type=int)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with Fleet(args.count, args.directory) as fleet:
            for index in range(fleet.count):
                print(fleet.name(index), fleet.path(index), flush=True)
            print("ready", flush=True)
            stop.wait()
    except ConfigError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
