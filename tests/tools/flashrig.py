"""A board for ``ira flash`` tests: a real ``sh`` whose console is one end of a
null-modem, in the cooked mode of a board's serial console, installing below a
temporary root (``--install-root``)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ira.tools.flash.payload import Payload
from ira.tools.flash.session import payload
from ira.tools.nullmodem import NullModem, NullModemConfig

#: a login prompt in front of the shell (a board whose console asks for a login)
LOGIN_SCRIPT = r"""
for try in 1 2 3; do
    printf 'board login: '; read u; [ -z "$u" ] && continue
    printf 'Password: '; stty -echo; read p; stty echo; echo
    if [ "$u" = root ] && [ "$p" = s3cret ]; then exec sh -i; fi
    echo 'Login incorrect'
done
sleep 30
"""


#: what this process's environment may hold that a board's shell would not
BOARD_ENV_DROPS = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")


@dataclass
class Board:
    nullmodem: NullModem
    root: Path
    shell: subprocess.Popen[bytes]

    @property
    def console(self) -> str:
        return self.nullmodem.path_a


@contextlib.contextmanager
def board(
    tmp_path: Path, *, baud: int | None = None, ber: float = 0.0, login: bool = False
) -> Iterator[Board]:
    config = NullModemConfig(baud=baud, ber=ber, seed=5) if ber else NullModemConfig(baud=baud)
    with NullModem(config) as nm:
        inner = LOGIN_SCRIPT if login else "exec sh -i"
        script = f"exec <>{nm.path_b} >&0 2>&1; stty sane; {inner}"
        env = {k: v for k, v in os.environ.items() if k not in BOARD_ENV_DROPS}
        shell = subprocess.Popen(["setsid", "sh", "-c", script], start_new_session=True, env=env)
        root = tmp_path / "board"
        try:
            yield Board(nm, root, shell)
        finally:
            stop_service(root)
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()


def stop_service(root: Path) -> None:
    """Stop the board side the installer started below ``root`` (and its stub's shell)."""
    pid_file = root / "run" / "ira-board.pid"
    with contextlib.suppress(OSError, ValueError):
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def other_payload() -> Payload:
    """This ira's payload with one more file: another version with another SHA-256."""
    base = payload()
    buf = io.BytesIO(base.pyz)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(zipfile.ZipInfo("NOTE.txt", (1980, 1, 1, 0, 0, 0)), b"another build\n")
    return Payload(buf.getvalue(), base.version, base.device_types)


def write_profile(
    path: Path, *, link: str | None = None, types: tuple[str, ...] = ("echo",)
) -> str:
    lines = ['board = "rig-1"', ""]
    if link:
        lines += ["[link]", f'spec = "{link}"', ""]
    for t in types:
        lines += ["[[device]]", f'type = "{t}"', ""]
    path.write_text("\n".join(lines))
    return str(path)


def current(root: Path) -> str:
    return os.readlink(root / "opt" / "ira" / "current")
