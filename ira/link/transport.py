"""The one small interface every transport implements, and opening by URL.

A transport moves bytes to the peer; it knows nothing of frames, sessions or
time beyond its own timeouts.  Two kinds:

* **stream** transports (UART, pty, TCP socket, pyserial URLs) carry an
  unstructured byte stream; the link frames it with COBS and a 0x00 delimiter;
* **packet** transports (USB bulk, FunctionFS, the in-process ``mem`` pair)
  carry one link frame per transfer.

Selectable transports return a file descriptor from ``fileno()``; their
``recv``/``send`` then never block when called with ``timeout_s=0``, and the
runtime drives them from one ``select`` loop.  Others return ``None`` and the
runtime gives them a reader thread.

Transports are chosen by URL and imported lazily (pyserial style)::

    /dev/ttyUSB0, /dev/pts/7            a serial port (pyserial)
    serial:///dev/ttyS1?baud=921600&rtscts=1
    loop://, socket://host:port, rfc2217://..., spy://...   any pyserial URL
    mem://NAME                          one end of an in-process pair
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from ira.errors import ConfigError


@runtime_checkable
class Transport(Protocol):
    """A byte pipe to the peer.  Errors are ``TransportError`` (``LinkClosed`` at EOF)."""

    #: the spec it was opened from, for logs and error messages
    name: str
    #: True when one ``recv`` returns exactly one frame and one ``send`` sends one
    packet: bool

    def fileno(self) -> int | None:
        """A descriptor that ``select`` reports readable when ``recv`` has data, or None."""
        ...

    def recv(self, timeout_s: float | None) -> bytes:
        """Return some bytes (stream) or one frame (packet); ``b""`` when the timeout passed."""
        ...

    def send(self, data: bytes, timeout_s: float | None) -> int:
        """Send a prefix of ``data`` (stream) or all of it (packet); return the count sent.

        Returns 0 when nothing could be sent within the timeout.
        """
        ...

    def close(self) -> None:
        """Release the transport; further calls raise ``LinkClosed``.  Idempotent."""
        ...


#: URL scheme -> "module:function" building a transport from (spec, options)
_SCHEMES: dict[str, str] = {
    "serial": "ira.link.serialport:open_serial",
    "loop": "ira.link.serialport:open_serial",
    "socket": "ira.link.serialport:open_serial",
    "rfc2217": "ira.link.serialport:open_serial",
    "spy": "ira.link.serialport:open_serial",
    "alt": "ira.link.serialport:open_serial",
    "hwgrep": "ira.link.serialport:open_serial",
}


def scheme_of(spec: str) -> str:
    """The URL scheme of a link spec; a bare path is a serial port."""
    if "://" not in spec:
        return "serial"
    return spec.split("://", 1)[0].lower()


def open_transport(spec: str) -> Transport:
    """Open a transport by its link spec (see module docstring)."""
    scheme = scheme_of(spec)
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(sorted(_SCHEMES))
        raise ConfigError(
            f"unknown link scheme {scheme!r} in {spec!r}; use a device path or one of: {known}"
        )
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    opener = getattr(module, func_name)
    transport: Transport = opener(spec)
    return transport
