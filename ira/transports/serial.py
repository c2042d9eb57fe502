"""Serial ports as transports: device paths, ``serial://`` and any pyserial URL.

Specs (DESIGN §7)::

    /dev/ttyUSB0, /dev/pts/7                      a device path, 115200 baud, no flow control
    serial:///dev/ttyS1?baud=921600&rtscts=1      ira's options: baud, rtscts, xonxoff
    loop://, socket://host:port, spy://..., rfc2217://..., alt://..., hwgrep://...
                                                  any other pyserial URL, passed through

Every port is a *stream* transport.  Plain posix ports are driven directly on
their file descriptor: it is non-blocking, ``recv``/``send`` are single
``os.read``/``os.write`` calls (``select`` for positive timeouts) and
``fileno()`` returns it, so the runtime can multiplex it.  The port is put in
raw mode with no echo and locked exclusively (``flock``), so two programs
never share one cable.

Other ports (``loop://``, ``socket://``, ``spy://``…) have no descriptor to
select on, so ``fileno()`` is None and pyserial's own ``read``/``write`` are
used: reads wait in short slices so that timeouts and ``close`` are honoured,
and writes go through a small buffer drained by a writer thread, because
pyserial cannot report how much of a timed-out write went out (``send``
returns the count accepted into that buffer, like a kernel tty buffer).

Errors are one line naming the fix, raised as ``TransportError`` from the
pyserial or OS error; a port whose other end is gone raises ``LinkClosed``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import termios
import threading
import time
import urllib.parse
from dataclasses import dataclass

import serial
import serial.serialposix

from ira.errors import ConfigError, LinkClosed, PortGone, TransportError

__all__ = ["DEFAULT_BAUD", "SerialOptions", "SerialTransport", "open_serial", "parse_serial_spec"]

log = logging.getLogger(__name__)

#: baud rate when the spec names none: the usual rate of board consoles
DEFAULT_BAUD = 115200
#: most bytes one ``recv`` returns
_READ_BYTES = 65536
#: most bytes one ``os.write`` is offered
_WRITE_BYTES = 65536
#: bytes ``send`` may leave with the writer thread of a non-selectable port
_OUT_BUFFER_BYTES = 4096
#: slice in which a non-selectable port is polled (bounds timeout overshoot)
_SLICE_S = 0.02
#: how long ``close`` waits for calls still running in other threads
_CLOSE_WAIT_S = 2.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OPTIONS = ("baud", "rtscts", "xonxoff")

#: the path is not there (yet): a reopen may find it
_NO_SUCH_PORT = {errno.ENOENT, errno.ENODEV, errno.ENXIO}
_DENIED = {errno.EACCES, errno.EPERM}
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY}
_GONE = {errno.EIO, errno.ENXIO, errno.ENODEV, errno.EPIPE}


@dataclass(frozen=True, slots=True)
class SerialOptions:
    """What a serial spec asks for."""

    #: the device path or pyserial URL handed to ``serial.serial_for_url``
    url: str
    #: line rate in bits per second (ignored by ptys, sockets and loop://)
    baud: int = DEFAULT_BAUD
    #: RTS/CTS hardware flow control
    rtscts: bool = False
    #: XON/XOFF software flow control (unusable with binary frames on a raw link)
    xonxoff: bool = False


def _flag(name: str, value: str, spec: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"option {name}={value!r} in {spec!r} must be 0 or 1")


def parse_serial_spec(spec: str) -> SerialOptions:
    """Split a serial link spec into the pyserial URL and ira's options."""
    if not spec:
        raise ConfigError("empty serial port spec: give a device path such as /dev/ttyUSB0")
    if "://" not in spec:
        return SerialOptions(url=spec)
    scheme = spec.split("://", 1)[0].lower()
    if scheme != "serial":
        return SerialOptions(url=spec)
    parts = urllib.parse.urlsplit(spec)
    if parts.netloc or not parts.path:
        raise ConfigError(
            f"bad serial spec {spec!r}: write the device after three slashes, "
            "e.g. serial:///dev/ttyS1?baud=921600"
        )
    try:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = [] if not parts.query else [("", parts.query)]
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS:
            allowed = ", ".join(_OPTIONS)
            raise ConfigError(f"unknown option {key!r} in {spec!r}; allowed: {allowed}")
        if key in seen:
            raise ConfigError(f"option {key!r} given twice in {spec!r}")
        seen[key] = value
    baud = DEFAULT_BAUD
    if "baud" in seen:
        try:
            baud = int(seen["baud"])
        except ValueError:
            baud = 0
        if baud <= 0:
            raise ConfigError(f"baud={seen['baud']!r} in {spec!r} must be a positive integer")
    return SerialOptions(
        url=parts.path,
        baud=baud,
        rtscts=_flag("rtscts", seen.get("rtscts", "0"), spec),
        xonxoff=_flag("xonxoff", seen.get("xonxoff", "0"), spec),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _open_error(port: str, exc: serial.SerialException) -> TransportError:
    """Translate a pyserial open failure into one line naming the fix."""
    code = exc.errno
    text = _one_line(exc)
    if "Could not configure port" in text and "Inappropriate ioctl" in text:
        return TransportError(f"{port} is not a serial port (it has no termios): check the path")
    if code == errno.ENOTDIR:
        return TransportError(f"no such serial port {port}: a part of the path is not a directory")
    if code in _NO_SUCH_PORT or "Could not configure port" in text:
        return PortGone(f"no such serial port {port}: check the cable and `ls /dev/serial/by-id/`")
    if code in _DENIED:
        return TransportError(
            f"permission denied on {port}: add your user to the dialout group "
            "(`sudo usermod -aG dialout $USER`, then log in again) or install ira's udev rule"
        )
    if code in _BUSY or "exclusively lock" in text:
        return TransportError(
            f"serial port {port} is busy: another process holds it (find it with `fuser {port}`)"
        )
    prefix = f"could not open port {port}: "
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix) :]
    if port.split("://", 1)[0].lower() in ("socket", "rfc2217"):
        return TransportError(f"cannot connect to {port}: {text}; is the server listening?")
    return TransportError(f"cannot open serial port {port}: {text}")


def _hung_up(name: str) -> PortGone:
    return PortGone(
        f"serial port {name} hung up: the device was unplugged or the other end closed; "
        "reopen it when it is back"
    )


class SerialTransport:
    """A serial port (or pyserial URL) as a stream ``Transport``; see the module docstring."""

    packet = False

    def __init__(self, name: str, port: serial.Serial) -> None:
        self.name = name
        self._port = port
        self._fd: int | None = None
        if type(port) is serial.serialposix.Serial and port.fd is not None:
            self._fd = port.fd
            self._make_raw(self._fd)
        self._closed = False
        self._error: TransportError | None = None
        # calls in progress, so that close() never pulls the port from under them
        self._busy = 0
        # _enter/_leave take the plain lock (every recv and send does, so it must be
        # cheap); waits for room, for output and for idle at close use the condition
        self._lock = threading.Lock()
        self._state = threading.Condition(self._lock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._out = bytearray()
        self._writer: threading.Thread | None = None
        if self._fd is None:
            self._writer = threading.Thread(
                target=self._write_loop, name=f"ira-serial-writer {name}", daemon=True
            )
            self._writer.start()

    @staticmethod
    def _make_raw(fd: int) -> None:
        """Finish raw mode on top of pyserial's settings; reads then fail fast when empty."""
        os.set_blocking(fd, False)
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
        iflag &= ~(termios.BRKINT | termios.ISTRIP | termios.INLCR | termios.ICRNL)
        iflag &= ~(termios.IGNCR | termios.PARMRK)
        oflag &= ~termios.OPOST
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        # VMIN=1: an empty non-blocking read is EAGAIN, so a 0-byte read means hung up
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])

    # -- Transport ---------------------------------------------------------

    def fileno(self) -> int | None:
        """The port's descriptor when it is a plain posix port, else None."""
        if self._closed:
            raise LinkClosed(f"serial port {self.name} is closed")
        return self._fd

    def recv(self, timeout_s: float | None) -> bytes:
        """Return the bytes available (up to 64 KiB), waiting at most ``timeout_s``."""
        self._enter()
        try:
            if self._fd is not None:
                return self._fd_recv(self._fd, timeout_s)
            return self._port_recv(timeout_s)
        finally:
            self._leave()

    def send(self, data: bytes, timeout_s: float | None) -> int:
        """Send a prefix of ``data``; return its length (0 when the timeout passed)."""
        if not data:
            return 0
        self._enter()
        try:
            if self._fd is not None:
                return self._fd_send(self._fd, data, timeout_s)
            return self._port_send(data, timeout_s)
        finally:
            self._leave()

    def close(self) -> None:
        """Close the port; calls in other threads return promptly with ``LinkClosed``."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            self._state.notify_all()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")
        if self._writer is not None:
            self._stop_writer(self._writer)
        with self._state:
            self._state.wait_for(lambda: self._busy == 0, timeout=_CLOSE_WAIT_S)
        try:
            self._port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing %s: %s", self.name, exc)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __repr__(self) -> str:
        kind = "fd" if self._fd is not None else "pyserial"
        return f"<SerialTransport {self.name!r} {kind}{' closed' if self._closed else ''}>"

    # -- bookkeeping -------------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            if self._closed:
                raise LinkClosed(f"serial port {self.name} is closed")
            if self._error is not None:
                raise self._error
            self._busy += 1

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._closed and self._busy == 0:
                self._state.notify_all()  # close() waits for the calls in progress

    def _check_open(self) -> None:
        if self._closed:
            raise LinkClosed(f"serial port {self.name} is closed")

    def _io_error(self, exc: OSError) -> TransportError:
        if exc.errno in _GONE:
            return _hung_up(self.name)
        return TransportError(f"serial port {self.name}: {_one_line(exc)}")

    def _wait(self, fd: int, *, write: bool, timeout_s: float | None) -> bool:
        """Wait until ``fd`` is ready or the timeout passed; raise if closed meanwhile."""
        rlist = [self._wake_r] if write else [fd, self._wake_r]
        wlist = [fd] if write else []
        ready_r, ready_w, _ = select.select(rlist, wlist, [], timeout_s)
        self._check_open()
        return bool(ready_w) if write else fd in ready_r

    # -- posix ports: straight on the descriptor ----------------------------

    def _fd_recv(self, fd: int, timeout_s: float | None) -> bytes:
        if timeout_s != 0 and not self._wait(fd, write=False, timeout_s=timeout_s):
            return b""
        try:
            data = os.read(fd, _READ_BYTES)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise self._io_error(exc) from exc
        if not data:
            raise _hung_up(self.name)
        return data

    def _fd_send(self, fd: int, data: bytes, timeout_s: float | None) -> int:
        if len(data) <= _WRITE_BYTES:
            try:
                return os.write(fd, data)  # the common case: there is room
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._io_error(exc) from exc
            if timeout_s == 0:
                return 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        view = memoryview(data)[:_WRITE_BYTES]
        while True:
            try:
                return os.write(fd, view)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._io_error(exc) from exc
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return 0
            if not self._wait(fd, write=True, timeout_s=remaining):
                return 0

    # -- other pyserial ports: their own read/write --------------------------

    def _port_error(self, exc: serial.SerialException) -> TransportError:
        if isinstance(exc, serial.PortNotOpenError) or self._closed:
            return LinkClosed(f"serial port {self.name} is closed")
        text = _one_line(exc)
        if "returned no data" in text or "disconnected" in text or exc.errno in _GONE:
            return _hung_up(self.name)
        return TransportError(f"serial port {self.name}: {text}")

    def _port_recv(self, timeout_s: float | None) -> bytes:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        port = self._port
        try:
            while True:
                self._check_open()
                waiting = port.in_waiting
                if waiting:
                    return port.read(min(waiting, _READ_BYTES))
                if deadline is not None and time.monotonic() >= deadline:
                    return b""
                first = port.read(1)  # waits up to one slice
                if first:
                    more = port.in_waiting
                    return first + port.read(min(more, _READ_BYTES - 1)) if more else first
        except serial.SerialException as exc:
            raise self._port_error(exc) from exc

    def _port_send(self, data: bytes, timeout_s: float | None) -> int:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._state:
            while True:
                if self._closed:
                    raise LinkClosed(f"serial port {self.name} is closed")
                if self._error is not None:
                    raise self._error
                room = _OUT_BUFFER_BYTES - len(self._out)
                if room > 0:
                    taken = data[:room]
                    self._out += taken
                    self._state.notify_all()
                    return len(taken)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return 0
                self._state.wait(remaining)

    def _write_loop(self) -> None:
        port = self._port
        while True:
            with self._state:
                self._state.wait_for(lambda: bool(self._out) or self._closed)
                if self._closed:
                    return
                chunk = bytes(self._out)
                self._out.clear()
                self._state.notify_all()
            try:
                port.write(chunk)
            except serial.SerialException as exc:
                error = self._port_error(exc)
            except (OSError, ValueError) as exc:  # pyserial lets some socket errors through
                error = TransportError(f"serial port {self.name}: {_one_line(exc)}")
            else:
                continue
            with self._state:
                if not self._closed:
                    self._error = error
                self._state.notify_all()
            return

    def _stop_writer(self, writer: threading.Thread) -> None:
        """Unblock a writer stuck in pyserial's write, then join it."""
        cancel = getattr(self._port, "cancel_write", None)  # not every URL handler has it
        try:
            if cancel is not None:
                cancel()
        except (serial.SerialException, OSError, ValueError) as exc:
            log.debug("cancel_write on %s: %s", self.name, exc)
        writer.join(0.2)
        if writer.is_alive():
            # loop:// blocks on its full queue; draining it lets the write finish
            try:
                self._port.reset_input_buffer()
            except (serial.SerialException, OSError, ValueError) as exc:
                log.debug("draining %s: %s", self.name, exc)
            writer.join(_CLOSE_WAIT_S)


def open_serial(spec: str) -> SerialTransport:
    """Open a serial port or pyserial URL (see the module docstring)."""
    options = parse_serial_spec(spec)
    name = options.url
    try:
        port = serial.serial_for_url(
            options.url,
            baudrate=options.baud,
            rtscts=options.rtscts,
            xonxoff=options.xonxoff,
            exclusive=True,
            timeout=_SLICE_S,
            write_timeout=None,
        )
    except serial.SerialException as exc:
        raise _open_error(name, exc) from exc
    except ValueError as exc:
        raise ConfigError(f"bad serial spec {spec!r}: {_one_line(exc)}") from exc
    except KeyError as exc:  # pyserial 3.5's loop:// fails so while rejecting an option
        raise ConfigError(f"bad serial spec {spec!r}: pyserial rejected its options") from exc
    except OSError as exc:
        raise TransportError(f"cannot open serial port {name}: {_one_line(exc)}") from exc
    try:
        return SerialTransport(spec, port)
    except (OSError, termios.error) as exc:
        port.close()
        raise TransportError(f"cannot set up serial port {name}: {_one_line(exc)}") from exc
