"""The board's side of a USB link: ``ffs://NAME``, a FunctionFS function of a configfs gadget.

Spec::

    ffs://NAME[?vid=0x1d6b&pid=0x0104&serial=S&acm=1&udc=dummy_udc.0]

``open_ffs`` makes the gadget (``ira.transports.gadget``), writes ira's
descriptors and strings (``ira.wire.usb``) to ``ep0``, binds the UDC and
returns a *packet* transport: one link frame per bulk transfer, a zero-length
packet after a frame that fills its last packet.  ``close`` unbinds the UDC
and removes the gadget.

FunctionFS endpoint files cannot be polled and their reads and writes block
until the host moves data, so three threads do the blocking work and only
hand data over: one reads ``ep0`` events, one reads the OUT endpoint into a
small queue, one writes the IN endpoint from another.  ``fileno()`` is None;
``recv``/``send`` wait on the queues with their timeout.  SETUP requests are
stalled (the interface has none).

ep0 events are the cable's carrier: ENABLE and RESUME bring it up, DISABLE,
UNBIND and SUSPEND take it down.  Before the host first configures the device
frames sent are held back (the queue fills, ``send`` returns 0 after its
timeout).  When the carrier goes down the transport of that carrier period
raises ``PortGone`` (a write in progress fails and is dropped, queued frames
are dropped: the link retransmits): a link runtime reports the link down at
once and opens the port again through ``FfsPort``, which keeps the gadget and
gives the transport of the next period once the host configured the device
again (``FfsWatch`` wakes the runtime then).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections import Counter

from ira.errors import ConfigError, LinkClosed, PortGone, RemoteProtocolError, TransportError
from ira.transports.gadget import Gadget, GadgetOptions
from ira.wire.usb import (
    EVENT_BYTES,
    MAX_TRANSFER_BYTES,
    FfsEventType,
    FfsStrings,
    decode_event,
    encode,
    vendor_function,
)

__all__ = [
    "FfsFunction",
    "FfsPort",
    "FfsTransport",
    "FfsWatch",
    "make_function",
    "open_ffs",
    "parse_ffs_spec",
]

log = logging.getLogger(__name__)

#: frames queued toward the host (each waits for the host to read it)
_TX_FRAMES = 8
#: frames queued from the host before the reader waits for ``recv``
_RX_FRAMES = 64
#: wMaxPacketSize by the UDC's current speed (a ZLP follows a transfer of whole packets)
_PACKET_BYTES = {"super-speed-plus": 1024, "super-speed": 1024, "high-speed": 512}
_FULL_SPEED_BYTES = 64
_CLOSE_WAIT_S = 2.0


def _number(key: str, value: str, spec: str) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        number = -1
    if not 0 <= number <= 0xFFFF:
        raise ConfigError(f"{key}={value!r} in {spec!r} must be a 16-bit number such as 0x1d6b")
    return number


def parse_ffs_spec(spec: str) -> GadgetOptions:
    """``ffs://NAME?...`` -> what the gadget should be."""
    parts = urllib.parse.urlsplit(spec)
    name = parts.netloc
    if parts.scheme != "ffs" or not name or parts.path not in ("", "/"):
        raise ConfigError(f"bad FunctionFS spec {spec!r}: write ffs://NAME, e.g. ffs://board1")
    if not all(c.isalnum() or c in "-_" for c in name):
        raise ConfigError(f"FunctionFS name {name!r} in {spec!r}: use letters, digits, - and _")
    options: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in ("vid", "pid", "serial", "acm", "udc"):
            raise ConfigError(
                f"unknown option {key!r} in {spec!r}; allowed: vid, pid, serial, acm, udc"
            )
        options[key] = value
    acm = options.get("acm", "0").lower()
    if acm not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"acm={acm!r} in {spec!r} must be 0 or 1")
    defaults = GadgetOptions(name)
    return GadgetOptions(
        name=name,
        vid=_number("vid", options["vid"], spec) if "vid" in options else defaults.vid,
        pid=_number("pid", options["pid"], spec) if "pid" in options else defaults.pid,
        serial=options.get("serial", ""),
        acm=acm in ("1", "true", "yes"),
        udc=options.get("udc", ""),
    )


class FfsFunction:
    """The gadget's FunctionFS function: its endpoints, their threads and the carrier.

    It lives from ``open_ffs`` (or an ``FfsPort``'s first open) to ``close``,
    across the host's comings and goings; ``view`` gives the transport for one
    carrier period: the one current while the host has the device configured.
    """

    def __init__(self, name: str, gadget: Gadget, ep0: int) -> None:
        self.name = name
        self.gadget = gadget
        self._ep0 = ep0
        self._ep_out: int | None = None
        self._ep_in: int | None = None
        self.rx: queue.Queue[bytes] = queue.Queue(_RX_FRAMES)
        self.tx: queue.Queue[bytes | None] = queue.Queue(_TX_FRAMES)
        self._enabled = threading.Event()
        self.closed = threading.Event()
        self._packet_bytes = _FULL_SPEED_BYTES
        #: bumped at each loss of the carrier: the views of earlier periods are gone
        self.generation = 0
        #: the ep0 event that took the carrier last (DISABLE, UNBIND, SUSPEND)
        self.lost_by = ""
        #: readable once the carrier comes (back) up (see ``FfsWatch``)
        self._up_r, self._up_w = os.pipe()
        for fd in (self._up_r, self._up_w):
            os.set_blocking(fd, False)
        #: ep0 events seen, by name; frames dropped because the host went away
        self.counters: Counter[str] = Counter()
        self.error: TransportError | None = None
        self._threads = [
            threading.Thread(target=self._ep0_loop, name=f"ira-ffs-ep0 {name}", daemon=True),
            threading.Thread(target=self._out_loop, name=f"ira-ffs-out {name}", daemon=True),
            threading.Thread(target=self._in_loop, name=f"ira-ffs-in {name}", daemon=True),
        ]

    def start(self) -> None:
        """Open the endpoints, start the threads and bind the gadget to its UDC."""
        directory = self.gadget.ffs_dir
        try:
            self._ep_out = os.open(directory / "ep1", os.O_RDONLY | os.O_NONBLOCK)
            self._ep_in = os.open(directory / "ep2", os.O_WRONLY | os.O_NONBLOCK)
            for fd in (self._ep_out, self._ep_in):
                os.set_blocking(fd, True)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot open the endpoints: {exc}") from exc
        self.gadget.bind()
        # events queue up on ep0 meanwhile; started only once bound, the threads are
        # always woken by the unbind of close()
        for thread in self._threads:
            thread.start()

    @property
    def connected(self) -> bool:
        """True while the host has the device configured (the cable's carrier)."""
        return self._enabled.is_set()

    def view(self, *, owner: bool) -> FfsTransport:
        """The transport of the current carrier period; ``owner``: its close closes this."""
        return FfsTransport(self, owner=owner)

    def up_fileno(self) -> int:
        """Readable once the carrier came up since ``drain_up`` was last called."""
        return self._up_r

    def drain_up(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self._up_r, 64)

    def close(self) -> None:
        """Unbind, stop the threads, remove the gadget.  Idempotent."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.gadget.unbind()  # fails the endpoint I/O in progress
        with contextlib.suppress(queue.Full):
            self.tx.put_nowait(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(_CLOSE_WAIT_S)
        for fd in (self._ep_out, self._ep_in, self._ep0, self._up_r, self._up_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.gadget.remove()

    # -- threads -------------------------------------------------------------

    def _ep0_loop(self) -> None:
        while not self.closed.is_set():
            try:
                data = os.read(self._ep0, 4 * EVENT_BYTES)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN):
                    continue
                if not self.closed.is_set():
                    self.error = TransportError(f"{self.name}: ep0 failed: {exc}")
                    self._wake_readers()
                return
            for start in range(0, len(data) - EVENT_BYTES + 1, EVENT_BYTES):
                try:
                    event = decode_event(data[start : start + EVENT_BYTES])
                except RemoteProtocolError:
                    self.counters["bad_event"] += 1
                    continue
                self._on_event(event.type, event.request_type)

    def _on_event(self, kind: FfsEventType, request_type: int) -> None:
        self.counters[kind.name.lower()] += 1
        if kind in (FfsEventType.ENABLE, FfsEventType.RESUME):
            if kind is FfsEventType.ENABLE:
                self._packet_bytes = _PACKET_BYTES.get(self.gadget.speed(), _FULL_SPEED_BYTES)
                log.info("%s: host configured the device (%s)", self.name, self.gadget.speed())
            self._enabled.set()
            with contextlib.suppress(OSError):  # full: a wake-up is pending already
                os.write(self._up_w, b"\x01")
        elif kind in (FfsEventType.DISABLE, FfsEventType.UNBIND, FfsEventType.SUSPEND):
            if self._enabled.is_set():
                log.info("%s: host gone (%s)", self.name, kind.name)
                self.lost_by = kind.name
                self._enabled.clear()
                self.generation += 1
                self._drop_queued()
                self._wake_readers()
        elif kind is FfsEventType.SETUP:
            # no control requests: stall (an I/O against the request's direction)
            with contextlib.suppress(OSError):
                if request_type & 0x80:
                    os.read(self._ep0, 0)
                else:
                    os.write(self._ep0, b"")

    def _drop_queued(self) -> None:
        """Frames of a carrier period that ended: the link retransmits what matters."""
        for q in (self.tx, self.rx):
            while True:
                try:
                    frame = q.get_nowait()
                except queue.Empty:
                    break
                if frame is None:  # close(): keep the stop for the writer
                    with contextlib.suppress(queue.Full):
                        self.tx.put_nowait(None)
                    break
                self.counters["dropped_frames"] += 1

    def _wake_readers(self) -> None:
        """A reader waiting in ``recv`` learns at once that its period ended."""
        with contextlib.suppress(queue.Full):
            self.rx.put_nowait(b"")

    def _out_loop(self) -> None:
        fd = self._ep_out
        assert fd is not None
        babbling = False
        while not self.closed.is_set():
            if not self._enabled.wait(0.2):
                continue
            try:
                data = os.read(fd, MAX_TRANSFER_BYTES)
            except OSError as exc:
                if exc.errno not in (errno.ESHUTDOWN, errno.EAGAIN, errno.EINTR, errno.ECONNRESET):
                    if not self.closed.is_set():
                        self.error = TransportError(f"{self.name}: reading ep1: {exc}")
                        self._wake_readers()
                    return
                time.sleep(0.01)
                continue
            if len(data) == MAX_TRANSFER_BYTES or babbling:
                # a transfer longer than any frame: dropped up to its end (a short packet)
                if not babbling:
                    self.counters["babble"] += 1
                babbling = len(data) == MAX_TRANSFER_BYTES
                continue
            if not data:
                continue  # a zero-length transfer: nothing to hand over
            while not self.closed.is_set():
                try:
                    self.rx.put(data, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _in_loop(self) -> None:
        fd = self._ep_in
        assert fd is not None
        while True:
            data = self.tx.get()
            if data is None or self.closed.is_set():
                return
            while not self._enabled.wait(0.2):
                if self.closed.is_set():
                    return
            try:
                os.write(fd, data)
                if len(data) % self._packet_bytes == 0:
                    os.write(fd, b"")  # a zero-length packet ends the transfer
            except OSError as exc:
                if exc.errno not in (errno.ESHUTDOWN, errno.EAGAIN, errno.EINTR, errno.ECONNRESET):
                    if not self.closed.is_set():
                        self.error = TransportError(f"{self.name}: writing ep2: {exc}")
                        self._wake_readers()
                    return
                self.counters["dropped_frames"] += 1


class FfsTransport:
    """One carrier period of an ``FfsFunction`` as a packet ``Transport``.

    When the host goes away (ep0 DISABLE, UNBIND or SUSPEND) ``recv`` and
    ``send`` raise ``PortGone``: a link runtime reports the link down at once
    and opens the port again (``FfsPort``) when the host configures the
    device again.  A transport opened before the host configured the device
    waits for it (sends are held back).
    """

    packet = True

    def __init__(self, function: FfsFunction, *, owner: bool) -> None:
        self.name = function.name
        self.function = function
        self.gadget = function.gadget
        self._generation = function.generation
        self._owner = owner
        self._closed = False
        self._rx = function.rx
        self._tx = function.tx

    @property
    def connected(self) -> bool:
        """True while the host has the device configured (the cable's carrier)."""
        return self.function.connected and self.function.generation == self._generation

    @property
    def counters(self) -> Counter[str]:
        return self.function.counters

    def fileno(self) -> int | None:
        """None: FunctionFS endpoints cannot be polled."""
        self._check()
        return None

    def recv(self, timeout_s: float | None) -> bytes:
        """One frame from the host; ``b""`` when none came within ``timeout_s``."""
        self._check()
        try:
            data = self._rx.get_nowait() if timeout_s == 0 else self._rx.get(timeout=timeout_s)
        except queue.Empty:
            data = b""
        if not data:
            self._check()
        return data

    def send(self, data: bytes, timeout_s: float | None) -> int:
        """Queue one frame for the host; 0 when there was no room within ``timeout_s``."""
        self._check()
        if not data:
            return 0
        if len(data) > MAX_TRANSFER_BYTES:
            raise TransportError(f"{self.name}: a frame of {len(data)} bytes exceeds a transfer")
        try:
            if timeout_s == 0:
                self._tx.put_nowait(data)
            else:
                self._tx.put(data, timeout=timeout_s)
        except queue.Full:
            return 0
        return len(data)

    def close(self) -> None:
        """Close this transport; the owner's close also removes the gadget.  Idempotent."""
        self._closed = True
        if self._owner:
            self.function.close()

    def __repr__(self) -> str:
        closed = self._closed or self.function.closed.is_set()
        state = "closed" if closed else ("up" if self.connected else "waiting")
        return f"<FfsTransport {self.name!r} {state}>"

    def _check(self) -> None:
        function = self.function
        if self._closed or function.closed.is_set():
            raise LinkClosed(f"{self.name} is closed")
        if function.error is not None:
            raise function.error
        if function.generation != self._generation:
            raise PortGone(
                f"{self.name}: the host went away ({function.lost_by}); "
                "waiting for it to configure the device again"
            )


class FfsWatch:
    """A ``PortWatch`` of an ``FfsPort``: readable when the host configured the device."""

    def __init__(self, function: FfsFunction) -> None:
        self._function = function

    def fileno(self) -> int | None:
        return None if self._function.closed.is_set() else self._function.up_fileno()

    def present(self) -> bool:
        self._function.drain_up()
        return self._function.connected

    def close(self) -> None:
        pass


class FfsPort:
    """``ffs://NAME`` for a link runtime: the gadget made once, opened per carrier period.

    The first ``open`` makes and binds the gadget; later ones (after the host
    went away) give the transport of the new period once the host configured
    the device again, else raise ``PortGone``.  ``close`` removes the gadget.
    """

    def __init__(self, spec: str) -> None:
        self.name = spec
        self._function: FfsFunction | None = None

    def open(self) -> FfsTransport:
        function = self._function
        if function is None or function.closed.is_set():
            function = self._function = make_function(self.name)
            return function.view(owner=False)
        if function.error is not None:
            raise function.error
        if not function.connected:
            raise PortGone(f"{self.name}: waiting for the host to configure the device")
        return function.view(owner=False)

    def watch(self) -> FfsWatch | None:
        function = self._function
        return None if function is None else FfsWatch(function)

    def close(self) -> None:
        if self._function is not None:
            self._function.close()


def make_function(spec: str) -> FfsFunction:
    """Make the gadget named by ``ffs://NAME?...``, write ira's descriptors, bind it."""
    options = parse_ffs_spec(spec)
    gadget = Gadget(options)
    gadget.create()
    try:
        ep0 = os.open(gadget.ffs_dir / "ep0", os.O_RDWR)
    except OSError as exc:
        gadget.remove()
        raise TransportError(f"{spec}: cannot open {gadget.ffs_dir}/ep0: {exc}") from exc
    function = FfsFunction(spec, gadget, ep0)
    try:
        os.write(ep0, encode(vendor_function()))
        os.write(ep0, encode(FfsStrings(("ira",))))
        function.start()
    except OSError as exc:
        function.close()
        raise TransportError(f"{spec}: FunctionFS refused ira's descriptors: {exc}") from exc
    except BaseException:
        function.close()  # whatever went wrong, the gadget goes
        raise
    if gadget.acm_tty:
        log.info("%s: ACM serial port %s", spec, gadget.acm_tty)
    return function


def open_ffs(spec: str) -> FfsTransport:
    """Make the gadget named by ``ffs://NAME?...`` and serve a link on it; closing the
    transport removes the gadget (a link runtime uses ``FfsPort`` to keep it across
    the host's comings and goings)."""
    return make_function(spec).view(owner=True)
