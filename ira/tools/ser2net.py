"""A serial port exported over the network by ser2net, as a lab exports its boards' ports.

Labs that share boards across machines (labgrid's exporter among them) put each
serial port behind ser2net, and a host reaches it as ``rfc2217://HOST:PORT`` (or
raw TCP, ``socket://HOST:PORT``).  ``Ser2Net`` runs Debian's ``ser2net`` (4.x,
YAML configuration) on loopback for one local port, so the same path can be
tested on one machine::

    with NullModem() as cable, Ser2Net(cable.path_b) as net:
        ...  # one end: cable.path_a, the other: net.spec

Over RFC 2217 a client asks the server to set the modem lines; a pty has none,
so ser2net never confirms, and the spec carries ``ign_set_control`` (as
labgrid's serial driver does) so pyserial does not wait for the answer.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ira.errors import ConfigError, TransportError

#: how long ser2net may take to listen
_START_S = 10.0


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Ser2Net:
    """ser2net exporting ``device`` on ``host`` (loopback), RFC 2217 or raw TCP."""

    def __init__(
        self, device: str, *, protocol: str = "rfc2217", baud: int = 115200,
        host: str = "127.0.0.1",
    ) -> None:  # fmt: skip
        if protocol not in ("rfc2217", "raw"):
            raise ConfigError(f"protocol {protocol!r}: use rfc2217 or raw")
        self.device = device
        self.protocol = protocol
        self.baud = baud
        self.host = host
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def spec(self) -> str:
        """The link spec a host opens: ``rfc2217://…?ign_set_control`` or ``socket://…``."""
        if self.protocol == "raw":
            return f"socket://{self.host}:{self.port}"
        return f"rfc2217://{self.host}:{self.port}?ign_set_control"

    def __enter__(self) -> Ser2Net:
        binary = shutil.which("ser2net")
        if binary is None:
            raise ConfigError("ser2net is not installed (Debian: apt-get install ser2net)")
        self._dir = tempfile.TemporaryDirectory(prefix="ira-ser2net-")
        self.port = _free_port(self.host)
        accepter = "telnet(rfc2217),tcp" if self.protocol == "rfc2217" else "tcp"
        config = Path(self._dir.name) / "ser2net.yaml"
        config.write_text(
            "connection: &ira\n"
            f"  accepter: {accepter},{self.host},{self.port}\n"
            f"  connector: serialdev,{self.device},{self.baud}n81,local\n"
            "  options:\n"
            "    kickolduser: true\n"
            "    mdns: false\n"
        )
        # -n: stay in the foreground; -d: no daemon; -u: no UUCP locks
        self._proc = subprocess.Popen(
            [binary, "-n", "-d", "-u", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + _START_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self.__exit__(None, None, None)
                raise TransportError(f"ser2net exited: {' '.join(err.split()) or 'no message'}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            return self
        self.__exit__(None, None, None)
        raise TransportError(f"ser2net did not listen on {self.host}:{self.port} in {_START_S} s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


__all__ = ["Ser2Net"]
