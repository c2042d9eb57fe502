"""A board's serial console as ``ira flash`` talks to it: a shell, a login, commands.

``Console`` wraps a pyserial port.  ``wait_for_shell`` sends a line end and a
test command until the shell answers (logging in when a ``login:`` prompt
shows), ``run`` types a command and returns its output and exit status.
A console that does not answer the first line end may be in what a session cut
short left behind: an XOFF (its output stopped), an open quote (the shell waits
for the rest of a string) or a command still running in the foreground.  Each
later probe therefore starts with XON and ^C and a pause, unless a login prompt was seen (a
``getty`` or ``login`` may end on ^C, and needs neither).
Output is found between markers that only the shell's expansion produces
(``__IRA_'B'EGIN__`` is echoed as typed, printed as ``__IRA_BEGIN__``), never
by matching the echo: a console echoes, wraps long lines and adds prompts.
"""

from __future__ import annotations

import re
import time

import serial

from ira.errors import ConfigError, IraError, TransportError

_BEGIN = "__IRA_BEGIN__"
_RC = re.compile(rb"__IRA_RC=(\d+)__")
_ALIVE = b"__IRA_SH_42__"
#: XON (resume output a stray XOFF stopped) and ^C (drop a half-typed line, stop the
#: foreground command)
UNSTICK = b"\x11\x03"


class ConsoleError(IraError):
    """The board's console did not do what flashing needs (one line, what to fix)."""


class Console:
    """The host's end of a board's serial console."""

    def __init__(self, spec: str, *, baud: int = 115200) -> None:
        try:
            self.port = serial.serial_for_url(spec, baudrate=baud, timeout=0.05)
        except (serial.SerialException, ValueError) as exc:
            raise TransportError(f"cannot open console {spec}: {exc}") from exc
        self.spec = spec
        self.transcript = bytearray()
        self._pending = bytearray()

    def close(self) -> None:
        self.port.close()

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except serial.SerialException as exc:
            raise TransportError(f"console {self.spec}: {exc}") from exc

    def read(self) -> bytes:
        try:
            data = bytes(self.port.read(max(1, self.port.in_waiting)))
        except serial.SerialException:
            data = b""  # a pty with nobody on the far end reads as "not ready"
        self.transcript += data
        del self.transcript[:-65536]
        return data

    def expect(self, pattern: re.Pattern[bytes], timeout_s: float) -> re.Match[bytes] | None:
        """The first match of ``pattern`` in what the console says within ``timeout_s``;
        what follows the match stays for the next ``expect``."""
        deadline = time.monotonic() + timeout_s
        while True:
            if m := pattern.search(bytes(self._pending)):  # a copy: the match outlives the del
                del self._pending[: m.end()]
                return m
            if time.monotonic() >= deadline:
                return None
            self._pending += self.read()

    def unstick(self, settle_s: float = 0.3) -> None:
        """Send XON and ^C, then listen for ``settle_s`` before anything else is typed: a
        shell interrupted by ^C drops what it has read, so a line sent with the ^C is lost."""
        self.write(UNSTICK)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            self._pending += self.read()

    def type_line(self, line: str) -> None:
        self.write(line.encode() + b"\n")

    def wait_for_shell(
        self, timeout_s: float, *, user: str | None = None, password: str | None = None
    ) -> None:
        """Until a shell answers: a test command whenever the console is quiet for a
        second; log in when asked.  One line when there is no shell, or the login fails."""
        prompts = re.compile(rb"(__IRA_SH_42__)|(ogin incorrect)|(ogin: *$)|(assword: *$)", re.M)
        deadline = time.monotonic() + timeout_s
        # what we typed last: None, "user" or "password"; a login prompt after the user
        # name is a stale one (it answered a line typed earlier) and is ignored
        sent: str | None = None
        probe, first, login_seen = True, True, False
        while time.monotonic() < deadline:
            if probe:  # first an empty line: at a login prompt it only brings a new prompt
                if not first and sent is None and not login_seen:
                    self.unstick()
                self.type_line("" if first else "echo __IRA_SH_$((40+2))__")
            probe = first = False
            m = self.expect(prompts, min(1.0, max(0.05, deadline - time.monotonic())))
            login_seen = login_seen or (m is not None and not m.group(1))
            if m is None:
                probe = True
            elif m.group(1):
                self.read()
                del self._pending[:]
                return
            elif sent == "password" and (m.group(2) or m.group(3)):
                raise ConsoleError(f"wrong password for {user} on {self.spec}")
            elif m.group(3) and sent is None:
                if user is None:
                    raise ConsoleError(f"{self.spec} asks for a login: give --login USER")
                self.type_line(user)
                sent = "user"
            elif m.group(4) and sent is None:  # our test line was taken as a user name
                if user is None:
                    raise ConsoleError(f"{self.spec} asks for a login: give --login USER")
                self.type_line("")  # fail that attempt; the login prompt comes back
            elif m.group(4) and sent == "user":
                if password is None:
                    raise ConsoleError(
                        f"{self.spec} asks for a password: give --password-file FILE"
                    )
                self.type_line(password)
                sent = "password"
        raise ConsoleError(
            f"no shell answered on {self.spec} within {timeout_s:g} s "
            "(is the board's console on this port, at this baud rate, and booted?)"
        )

    def run(self, command: str, timeout_s: float = 20.0) -> tuple[int, str]:
        """Type ``command``; its exit status and output (between the markers)."""
        self.read()
        del self._pending[:]
        self.type_line(f"echo __IRA_'B'EGIN__; {command}; echo __IRA_'R'C=$?__")
        seen = bytearray()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen += self.read()
            m = _RC.search(seen)
            if m:
                start = seen.find(_BEGIN.encode())
                out = seen[start + len(_BEGIN) : m.start()] if start >= 0 else b""
                return int(m.group(1)), out.decode(errors="replace").replace("\r", "").strip()
        raise ConsoleError(f"the shell on {self.spec} did not finish {command[:40]!r}")


def check_baud(baud: int) -> int:
    if not 50 <= baud <= 12_000_000:
        raise ConfigError(f"--baud {baud}: give a line rate between 50 and 12000000")
    return baud
