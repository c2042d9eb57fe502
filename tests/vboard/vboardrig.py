"""Virtual boards for tests: QEMU killed whatever happens, null-modems for console and data.

``booted(tmp_path)`` starts a fresh virtual board (ira not on it) whose console
is end B of a null-modem throttled to 115200 baud (``ira flash`` opens end A)
and whose data UART is end B of another (the host opens end A).
"""

from __future__ import annotations

import contextlib
import io
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ira.busmodel.events import DeviceInfo
from ira.errors import IraError
from ira.runtime import HostClient
from ira.tools import vboard
from ira.tools.flash.payload import Payload
from ira.tools.flash.session import payload
from ira.tools.nullmodem import NullModem, NullModemConfig

BAUD = 115200


def image_or_skip() -> vboard.BoardImage:
    reason = vboard.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no virtual board here: {reason}")
    return vboard.build_image()


@dataclass
class Rig:
    board: vboard.VirtualBoard
    console: NullModem
    data: NullModem

    @property
    def host_end(self) -> str:
        return self.data.path_a


@contextlib.contextmanager
def booted(path: Path, image: vboard.BoardImage) -> Iterator[Rig]:
    """A fresh board at ``path``, booted to its shell; QEMU killed on the way out."""
    flash = vboard.fresh_flash(path, image)
    with (
        NullModem(NullModemConfig(baud=BAUD)) as console,
        NullModem(NullModemConfig(baud=BAUD)) as data,
    ):
        board = vboard.VirtualBoard(
            flash, data_link=data.path_b, console=(console.path_b, console.path_a), image=image
        )
        try:
            board.start()
            board.wait_for_shell()
            yield Rig(board, console, data)
        finally:
            board.kill()


def devices_on(link: str, timeout_s: float = 120.0) -> list[DeviceInfo]:
    """The devices the board on ``link`` lists, once its ``ira board serve`` is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with HostClient(link) as client:
                return client.list_devices(timeout_s=10.0)
        except IraError:
            if time.monotonic() > deadline:
                raise


def other_payload() -> Payload:
    """This ira's payload with one more file: another version, another SHA-256."""
    base = payload()
    buf = io.BytesIO(base.pyz)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(zipfile.ZipInfo("NOTE.txt", (1980, 1, 1, 0, 0, 0)), b"second build\n")
    return Payload(buf.getvalue(), base.version, base.device_types)
