"""The receiver stub's I/O loop: the console in raw mode, frames to the Receiver.

Runs on the board, typed into its shell by ``ira flash`` (the standard library
only; ``ira.tools.flash.stub`` concatenates ``ira.flash.receiver``, the
installer and this file).  ``stub_main(root)`` puts stdin (the console) in raw
mode, runs a ``Receiver`` until QUIT or its idle limit, and always restores
the console, discarding what is still queued on it, before it returns to the
shell.  ``root`` is where it installs: ``/`` on a board; a directory for tests
(``ira flash --install-root``).
"""

from __future__ import annotations

import os
import select
import shutil
import termios
import time
import tty

from ira.flash.receiver import (
    ST_BAD_REQUEST,
    ST_NO_SPACE,
    IdleExpired,
    InstallAsked,
    Opened,
    QuitAsked,
    Receiver,
    Stored,
)
from ira.tools.flash.installer import apply, incoming, plan_of


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def stub_main(root: str) -> int:
    fd = 0
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        _serve(fd, root)
    finally:
        time.sleep(0.2)
        termios.tcflush(fd, termios.TCIFLUSH)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return 0


def _serve(fd: int, root: str) -> None:
    rx = Receiver(now=time.monotonic())
    part = None
    opened: Opened | None = None
    result: tuple[int, str] | None = None
    while True:
        _write_all(1, rx.data_to_send())
        wait = max(0.0, rx.next_deadline() - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        now = time.monotonic()
        events = rx.receive_data(os.read(fd, 65536), now=now) if ready else []
        events += rx.handle_timeout(now=now)
        for ev in events:
            if isinstance(ev, Opened):
                if part is not None:
                    part.close()
                part, opened, result = _open(rx, root, ev), ev, None
            elif isinstance(ev, Stored) and part is not None:
                part.write(ev.data)
            elif isinstance(ev, InstallAsked):
                if result is None:
                    if part is not None:
                        part.flush()
                        os.fsync(part.fileno())
                        part.close()
                        part = None
                    result = _install(root, ev.plan, opened)
                rx.finish(*result)
            elif isinstance(ev, QuitAsked | IdleExpired):
                _write_all(1, rx.data_to_send())
                if part is not None:
                    part.close()
                return


def _open(rx: Receiver, root: str, ev: Opened):  # type: ignore[no-untyped-def]
    path = incoming(root, ev.sha256.hex())
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # streams of other payloads are of no use any more
        if os.path.join(folder, name) != path:
            os.unlink(os.path.join(folder, name))
    have = os.path.getsize(path) if os.path.exists(path) else 0
    if have > ev.size:
        have = 0
    need = ev.size - have + 2 * ev.payload_size
    free = shutil.disk_usage(folder).free
    if free < need:
        rx.finish(ST_NO_SPACE, f"board has {free} bytes free, needs {need}")
        return None
    f = open(path, "r+b" if have else "wb")  # noqa: SIM115
    f.truncate(have)
    f.seek(have)
    rx.accept(have)
    return f


def _install(root: str, text: str, opened: Opened | None) -> tuple[int, str]:
    try:
        plan = plan_of(text)
    except ValueError as exc:
        return ST_BAD_REQUEST, "bad plan: " + str(exc)
    stream = None
    if opened is not None:
        stream = incoming(root, opened.sha256.hex())
    return apply(root, plan, stream, opened.codec if opened else 0)


def main_from_argv(argv: list[str]) -> int:
    return stub_main(argv[1] if len(argv) > 1 else "/")
