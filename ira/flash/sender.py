"""The host's end of a flash transfer (sans-I/O): a stream out in acknowledged blocks.

Theory of operation
-------------------
``Sender`` is driven like every core of ira: ``receive_data(data, now=)``
with the console's bytes, ``data_to_send()`` for what to write,
``next_deadline()`` / ``handle_timeout(now=)`` for its timers.  Frames are
those of ``ira.wire.flash`` (COBS, 0x00 delimiters).

States, in order (``Phase``)::

    HELLO ──HELLO──▶ OPENING ──STATE──▶ SENDING ──have == size──▶ READY
      │  (no stream: straight to READY)                             │ install(plan)
      ▼                                                             ▼
    READY ─────────────────────────install(plan)──────────────▶ INSTALLING ──RESULT──▶ DONE

* The stream is cut into blocks of ``block_bytes`` at fixed offsets; at most
  ``window_bytes`` (and never more than the stub's HELLO window) go beyond the
  board's ``have``.
* An ACK with the GAP flag resends the block at ``have`` at once, and the same
  block again only after ``guard_s``.
* No ACK that advances ``have`` for ``rto_s``: everything from ``have`` on is
  sent again (go-back-N); OPEN and INSTALL are sent again at the same pace.
* No progress at all for ``stall_s``: ``Stalled`` (the runtime gives up and
  says how to resume).

Events are the frozen dataclasses below; ``statistics()`` counts the rest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cobs import cobs

from ira.errors import RemoteProtocolError
from ira.wire import flash as wire


class Phase(enum.Enum):
    HELLO = "hello"
    OPENING = "opening"
    SENDING = "sending"
    READY = "ready"
    INSTALLING = "installing"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StubStarted:
    """The stub runs; the console is raw."""

    window: int


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """The board answered OPEN: it already holds ``have`` bytes (a resumed transfer)."""

    have: int
    size: int


@dataclass(frozen=True, slots=True)
class Progressed:
    have: int
    size: int


@dataclass(frozen=True, slots=True)
class Transferred:
    """The whole stream is stored on the board (or there was no stream)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """RESULT: the board's answer to INSTALL."""

    status: wire.Status
    message: str


@dataclass(frozen=True, slots=True)
class Stalled:
    """Nothing moved for ``stall_s``."""

    phase: Phase
    have: int


Event = StubStarted | TransferStarted | Progressed | Transferred | Finished | Stalled


@dataclass(frozen=True, slots=True)
class Stream:
    """What crosses: the compressed stream and the payload it decompresses to."""

    data: bytes
    sha256: bytes
    payload_size: int
    codec: wire.Codec


@dataclass(frozen=True, slots=True)
class SenderConfig:
    #: stream bytes per DATA frame
    block_bytes: int = 1024
    #: most stream bytes beyond the board's ``have``
    window_bytes: int = 16384
    #: no ACK advanced ``have`` this long: send again from ``have``
    rto_s: float = 1.5
    #: the same block is resent for a GAP at most this often
    guard_s: float = 0.5
    #: nothing moved this long: Stalled
    stall_s: float = 30.0


@dataclass(slots=True)
class SenderStatistics:
    frames_sent: int = 0
    data_bytes_sent: int = 0
    blocks_resent: int = 0
    gaps: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    resumed_from: int = 0


class Sender:
    """The host's end of one stub session (see the module docstring)."""

    def __init__(
        self, stream: Stream | None, *, now: float, config: SenderConfig | None = None
    ) -> None:
        self.config = config or SenderConfig()
        self.stream = stream
        self.phase = Phase.HELLO
        self.have = 0
        self._next = 0
        self._window = self.config.window_bytes
        self._resend: list[int] = []
        self._resent_at: dict[int, float] = {}
        self._buf = bytearray()
        self._out = bytearray()
        self._plan: str | None = None
        self._progress_at = now
        self._timer_at = now
        self._stats = SenderStatistics()

    # --- verbs -----------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        while (end := self._buf.find(b"\x00")) >= 0:
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if not chunk:
                continue
            try:
                msg = wire.decode(cobs.decode(chunk))
            except (cobs.DecodeError, RemoteProtocolError):
                self._stats.bad_frames += 1
                continue
            events += self._message(msg, now)
        if len(self._buf) > 2 * wire.MAX_TEXT_BYTES:
            self._stats.bad_frames += 1
            del self._buf[:]
        return events

    def install(self, plan: str, *, now: float) -> None:
        """Ask the board to verify the stream and carry out ``plan``."""
        if self.phase is not Phase.READY:
            raise RuntimeError(f"install in phase {self.phase.value}")
        self._plan = plan
        self.phase = Phase.INSTALLING
        self._send(wire.Install(plan))
        self._timer_at = now

    def quit(self) -> None:
        """Give the shell back."""
        self._send(wire.Quit())

    def data_to_send(self) -> bytes:
        if self.phase is Phase.SENDING and self.stream is not None:
            size = len(self.stream.data)
            while self._resend:
                self._block(self._resend.pop(0), resent=True)
            block = self.config.block_bytes
            while self._next < size and min(self._next + block, size) - self.have <= self._window:
                self._next = self._block(self._next, resent=False)
        out = bytes(self._out)
        del self._out[:]
        return out

    def next_deadline(self) -> float | None:
        if self.phase is Phase.DONE:
            return None
        timer = self._timer_at + self.config.rto_s
        if self.phase is Phase.INSTALLING:
            timer = self._timer_at + 2 * self.config.rto_s
        return min(timer, self._progress_at + self.config.stall_s)

    def handle_timeout(self, *, now: float) -> list[Event]:
        if self.phase is Phase.DONE:
            return []
        if now >= self._progress_at + self.config.stall_s:
            self._progress_at = now
            return [Stalled(self.phase, self.have)]
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        self._timer_at = now
        self._stats.timeouts += 1
        if self.phase is Phase.OPENING and self.stream is not None:
            self._send(self._open())
        elif self.phase is Phase.SENDING:
            self._next = self.have  # go-back-N
            self._resend.clear()
        elif self.phase is Phase.INSTALLING and self._plan is not None:
            self._send(wire.Install(self._plan))
        return []

    def statistics(self) -> SenderStatistics:
        return self._stats

    # --- internals -------------------------------------------------------------

    def _open(self) -> wire.Open:
        assert self.stream is not None
        s = self.stream
        return wire.Open(s.sha256, len(s.data), s.payload_size, s.codec)

    def _send(self, msg: wire.Message) -> None:
        self._out += b"\x00" + cobs.encode(wire.encode(msg)) + b"\x00"
        self._stats.frames_sent += 1

    def _block(self, offset: int, *, resent: bool) -> int:
        assert self.stream is not None
        end = min(offset + self.config.block_bytes, len(self.stream.data))
        self._send(wire.Data(offset, self.stream.data[offset:end]))
        self._stats.data_bytes_sent += end - offset
        if resent:
            self._stats.blocks_resent += 1
        return end

    def _message(self, msg: wire.Message, now: float) -> list[Event]:
        match msg:
            case wire.Hello() if self.phase is Phase.HELLO:
                self._window = max(self.config.block_bytes, min(self._window, msg.window))
                self._progress_at = self._timer_at = now
                if self.stream is None:
                    self.phase = Phase.READY
                    return [StubStarted(msg.window), Transferred()]
                self.phase = Phase.OPENING
                self._send(self._open())
                return [StubStarted(msg.window)]
            case wire.State() if self.phase is Phase.OPENING and self.stream is not None:
                size = len(self.stream.data)
                if msg.size != size or msg.have > size:
                    self._stats.bad_frames += 1
                    return []
                self.have = self._next = msg.have
                self._stats.resumed_from = msg.have
                self._progress_at = self._timer_at = now
                events: list[Event] = [TransferStarted(msg.have, size)]
                return events + self._advanced(now)
            case wire.Ack() if self.phase is Phase.SENDING:
                return self._ack(msg, now)
            case wire.Result() if self.phase in (Phase.INSTALLING, Phase.OPENING):
                self.phase = Phase.DONE
                return [Finished(msg.status, msg.message)]
        return []  # late or duplicate answers are harmless

    def _ack(self, msg: wire.Ack, now: float) -> list[Event]:
        assert self.stream is not None
        if msg.have > self._next or msg.have > len(self.stream.data):
            self._stats.bad_frames += 1
            return []
        events: list[Event] = []
        if msg.have > self.have:
            self.have = msg.have
            self._progress_at = self._timer_at = now
            events.append(Progressed(self.have, len(self.stream.data)))
        if msg.gap and self.have < self._next:
            last = self._resent_at.get(self.have)
            if last is None or now - last >= self.config.guard_s:
                self._stats.gaps += 1
                self._resent_at[self.have] = now
                if self.have not in self._resend:
                    self._resend.append(self.have)
        return events + self._advanced(now)

    def _advanced(self, now: float) -> list[Event]:
        assert self.stream is not None
        if self.phase is Phase.OPENING:
            self.phase = Phase.SENDING
        if self.have >= len(self.stream.data) and self.phase is Phase.SENDING:
            self.phase = Phase.READY
            self._timer_at = now
            return [Transferred()]
        return []
