"""The one small interface every transport implements.

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

Transports are opened by link spec through the registry in ``ira.transports``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


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


@runtime_checkable
class PortWatch(Protocol):
    """A hint that a port that went away may be back: the link runtime opens it at once
    instead of at the next step of its backoff.

    ``fileno()`` is readable when something changed (a hotplug event, a directory
    entry made, a USB gadget configured), or None when the watch is only polled;
    ``present()`` (which also drains the descriptor) says whether the port looks
    there now: cheap, no port opened.
    """

    def fileno(self) -> int | None: ...

    def present(self) -> bool: ...

    def close(self) -> None: ...
