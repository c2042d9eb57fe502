"""An in-process transport pair, for tests and for embedding both ends in one program.

``mem_pair()`` returns two connected transports built on ``socket.socketpair``:
``SOCK_SEQPACKET`` in packet mode (one ``send`` is one ``recv``, the form USB
bulk and FunctionFS transports have) and ``SOCK_STREAM`` in stream mode (the
form of a UART).  Both ends are selectable, honour timeouts exactly like the
other transports and need no threads.  Closing one end makes the other one's
``recv`` raise ``LinkClosed``.

There is no URL form: the two ends are objects handed to their users, not
names looked up in a registry.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time

from ira.errors import LinkClosed, TransportError

__all__ = ["DEFAULT_MAX_PACKET_BYTES", "MemTransport", "mem_pair"]

#: largest frame a packet-mode pair carries unless told otherwise
DEFAULT_MAX_PACKET_BYTES = 256 * 1024
#: most bytes one stream-mode ``recv`` returns
_STREAM_READ_BYTES = 65536
#: pause when a socket reports writable but a whole packet does not fit yet
_RETRY_S = 0.001


class MemTransport:
    """One end of an in-process pair; see ``mem_pair``."""

    def __init__(self, name: str, sock: socket.socket, *, packet: bool, max_bytes: int) -> None:
        self.name = name
        self.packet = packet
        self._sock = sock
        self._sock.setblocking(False)
        self._max_bytes = max_bytes
        self._buffer = bytearray(max_bytes)
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int | None:
        """The socket's descriptor: readable when ``recv`` has data."""
        self._check_open()
        return self._sock.fileno()

    def recv(self, timeout_s: float | None) -> bytes:
        """One packet (packet mode) or up to 64 KiB (stream mode); ``b""`` on timeout."""
        self._check_open()
        if timeout_s != 0 and not self._wait(write=False, timeout_s=timeout_s):
            return b""
        try:
            if not self.packet:
                data = self._sock.recv(_STREAM_READ_BYTES)
                if not data:
                    raise self._peer_closed()
                return data
            with self._lock:
                size, _, flags, _ = self._sock.recvmsg_into([self._buffer])
                data = bytes(self._buffer[:size])
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self._error(exc) from exc
        if flags & socket.MSG_TRUNC:
            raise TransportError(
                f"{self.name}: received a packet over {self._max_bytes} bytes; "
                "create the pair with a larger max_packet_bytes"
            )
        if not data:  # packet mode never sends empty packets: this is the peer's EOF
            raise self._peer_closed()
        return data

    def send(self, data: bytes, timeout_s: float | None) -> int:
        """Send a prefix (stream) or all of ``data`` (packet); 0 when the timeout passed."""
        self._check_open()
        if not data:
            return 0
        if self.packet and len(data) > self._max_bytes:
            raise TransportError(
                f"{self.name}: a packet of {len(data)} bytes exceeds the pair's limit of "
                f"{self._max_bytes}; create it with a larger max_packet_bytes"
            )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                return self._sock.send(data)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._error(exc) from exc
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return 0
            if not self._wait(write=True, timeout_s=remaining):
                return 0
            if self.packet:
                # writable means some room, not room for this packet; don't spin
                time.sleep(_RETRY_S)

    def close(self) -> None:
        """Close this end; the peer's ``recv`` then raises ``LinkClosed``.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        # wakes calls blocked in other threads before the descriptor goes away
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __repr__(self) -> str:
        kind = "packet" if self.packet else "stream"
        return f"<MemTransport {self.name!r} {kind}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise LinkClosed(f"{self.name} is closed")

    def _wait(self, *, write: bool, timeout_s: float | None) -> bool:
        rlist, wlist = ([], [self._sock]) if write else ([self._sock], [])
        try:
            ready_r, ready_w, _ = select.select(rlist, wlist, [], timeout_s)
        except (OSError, ValueError) as exc:  # closed by another thread meanwhile
            self._check_open()
            raise TransportError(f"{self.name}: {exc}") from exc
        self._check_open()
        return bool(ready_w or ready_r)

    def _peer_closed(self) -> LinkClosed:
        self._check_open()
        return LinkClosed(f"{self.name}: the other end was closed")

    def _error(self, exc: OSError) -> TransportError:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
            return self._peer_closed()
        return TransportError(f"{self.name}: {exc}")


def mem_pair(
    *, packet: bool = True, max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
) -> tuple[MemTransport, MemTransport]:
    """Two connected transports, ``mem:a`` and ``mem:b``.

    ``packet=True`` carries one frame per ``send`` (up to ``max_packet_bytes``);
    ``packet=False`` is a byte stream like a UART.
    """
    kind = socket.SOCK_SEQPACKET if packet else socket.SOCK_STREAM
    sock_a, sock_b = socket.socketpair(socket.AF_UNIX, kind)
    if packet:
        # room for a few whole packets in flight in each direction
        for sock in (sock_a, sock_b):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * max_packet_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * max_packet_bytes)
    size = max_packet_bytes if packet else _STREAM_READ_BYTES
    return (
        MemTransport("mem:a", sock_a, packet=packet, max_bytes=size),
        MemTransport("mem:b", sock_b, packet=packet, max_bytes=size),
    )
