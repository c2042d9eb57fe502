"""What the link runtime's threads share besides the cores: the interface of the core
above the link (``Upper``), the one-shot outcome a blocking request waits for
(``Completion``), and the bell that wakes a loop sleeping in ``select`` (``Doorbell``).

Imported from ``ira.runtime.link``, which re-exports them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import InvalidStateError
from typing import Generic, Protocol, TypeVar, cast

from ira.link.events import Channel, LinkEvent

T = TypeVar("T")


class Upper(Protocol):
    """A sans-I/O core above the link, driven on the loop thread."""

    def handle_link_event(self, event: LinkEvent, *, now: float) -> None: ...

    def messages_to_send(self) -> list[tuple[Channel, bytes]]: ...

    def next_deadline(self) -> float | None: ...

    def handle_timeout(self, *, now: float) -> None: ...

    def next_event(self) -> object | None: ...

    def statistics(self) -> UpperStatistics: ...


class UpperStatistics(Protocol):
    """What the runtime reads of an upper core's statistics: its flat counter names."""

    def as_dict(self) -> dict[str, int]: ...


class Completion(Generic[T]):
    """The outcome of one request that one caller waits for, set once by whoever
    completes it (the loop, or the caller's own turn): ``concurrent.futures.Future``
    without what a blocking request does not use (callbacks, cancellation, a condition
    variable), at a fraction of its cost: a lock made held and released once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # released when the outcome is set
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: T | None, error: BaseException | None) -> None:
        if self._done:
            raise InvalidStateError("the outcome is already set")
        self._value, self._error = value, error
        self._done = True
        self._lock.release()

    def result(self, timeout: float | None = None) -> T:
        """The value, or the exception raised; ``TimeoutError`` after ``timeout`` seconds."""
        if not self._done:
            if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                raise TimeoutError("no outcome yet")
            self._lock.release()  # for any other reader
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


class Doorbell:
    """Wakes a loop that sleeps in ``select``: at most one pipe write per sleep.

    The loop ``arm``s the bell, looks for work once more, then sleeps on
    ``fileno()``; whoever hands it work first queues the work, then ``ring``s.
    So either the loop sees the work or the ringer sees it armed, and a busy
    loop costs ringers no system call.  The flag is guarded by a lock (the
    loop and several callers touch it), and ``ring`` is safe after ``close``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    @property
    def armed(self) -> bool:
        """The loop sleeps or is about to (a hint: it may be woken meanwhile)."""
        return self._armed

    def arm(self) -> None:
        with self._lock:
            self._armed = True

    def disarm(self) -> None:
        """The loop is awake."""
        with self._lock:
            self._armed = False

    def ring(self, *, always: bool = False) -> None:
        """Wake the loop if it is armed (or ``always``)."""
        with self._lock:
            if not (self._armed or always) or self._w < 0:
                return
            self._armed = False
            with contextlib.suppress(OSError):  # full: a wake-up is pending already
                os.write(self._w, b"\x01")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self._r, 4096)

    def close(self) -> None:
        with self._lock:
            for fd in (self._r, self._w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._r = self._w = -1
