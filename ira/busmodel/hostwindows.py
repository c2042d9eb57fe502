"""The host's side of shared windows and signals on one link.

The host creates windows (and chooses their ids, from a counter never reused
on the link), attaches them to open handles, and keeps them until they are
detached, their handle is closed, their device is dropped or the session
resets.  Window traffic from the board is checked here: an update or signal
for a window the host never issued is a refusal; one for a window it has
already retired is *stale* (it was in flight when the window went away) and
is only counted.

Window lifecycle::

    CREATED --attach--> ATTACHING --reply ok--> ATTACHED --detach--> DETACHING --reply--> gone
       ^                    |
       +----reply < 0-------+          (close, DEVDROP, reset, timeout: gone from any state)

Board updates are accepted from ATTACHING on (the board may write as soon as
it has attached, before its reply arrives) until the window is gone.  A
window attached with a signal also reports the end of each of the board's
flushes (``Window.on_update``, bus v2 only) through ``updated``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ira.busmodel.counters import Refusal, Stale
from ira.busmodel.signal import Signal
from ira.busmodel.window import Side, Window
from ira.errors import LocalProtocolError
from ira.wire.bus import Message, SignalNotify, SignalState, Status, WindowUpdate


class WindowState(enum.Enum):
    CREATED = "created"
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"


@dataclass(slots=True, eq=False)
class WindowEntry:
    window: Window
    state: WindowState = WindowState.CREATED
    handle: int = 0
    device_id: int = 0


class HostWindows:
    """Windows and signals the host holds on one link, by id."""

    def __init__(self) -> None:
        self._entries: dict[int, WindowEntry] = {}
        self._signals: dict[int, WindowEntry] = {}
        self._retired_signals: set[int] = set()
        self._next_window_id = 1

    def __len__(self) -> int:
        return len(self._entries)

    def create(self, size_bytes: int, device_offset: int, device_length: int) -> Window:
        window_id, self._next_window_id = self._next_window_id, self._next_window_id + 1
        window = Window(
            window_id,
            size_bytes,
            side=Side.HOST,
            device_offset=device_offset,
            device_length=device_length,
        )
        self._entries[window_id] = WindowEntry(window)
        return window

    def entry(self, window: Window, state: WindowState) -> WindowEntry:
        """The entry of one of our windows in ``state`` (LocalProtocolError otherwise)."""
        entry = self._entries.get(window.window_id)
        if entry is None or entry.window is not window or entry.state is not state:
            raise LocalProtocolError(f"{window!r} is not {state.value} on this bus")
        return entry

    def attach_started(self, window: Window, handle: int, device_id: int) -> None:
        entry = self.entry(window, WindowState.CREATED)
        entry.state, entry.handle, entry.device_id = WindowState.ATTACHING, handle, device_id

    def attach_succeeded(
        self,
        window: Window,
        signal_id: int,
        send: Callable[[Message], None],
        notifier: Callable[[WindowEntry, int], Callable[[], None]],
        *,
        flush_ends: bool = False,
        flush_notifies: bool = False,
        updated: Callable[[WindowEntry], Callable[[], None]] | None = None,
    ) -> WindowEntry | None:
        """Start replicating; None if the window went away meanwhile.

        ``flush_ends``: the session marks where flushes end (bus v2); then a
        window with a signal runs ``updated(entry)``'s callable at the end of
        each of the board's flushes; ``flush_notifies``: the board acts on the
        end of the host's flushes (bus v4, ``Window.flush_notifies``).
        """
        entry = self._entries.get(window.window_id)
        if entry is None:
            return None
        entry.state = WindowState.ATTACHED
        if signal_id and signal_id not in self._signals:
            signal = Signal(signal_id, release=window.flush)
            signal.handler = notifier(entry, signal_id)
            window.signal = signal
            self._signals[signal_id] = entry
            if updated is not None:
                window.on_update = updated(entry)
        window.connect(send, flush_ends=flush_ends, flush_notifies=flush_notifies)
        if window.signal is not None:
            window.signal.connect(send)
        return entry

    def attach_failed(self, window: Window) -> None:
        """The board refused: the window may be attached again."""
        entry = self._entries.get(window.window_id)
        if entry is not None:
            entry.state, entry.handle, entry.device_id = WindowState.CREATED, 0, 0

    def retire(self, window_id: int) -> None:
        entry = self._entries.pop(window_id, None)
        if entry is None:
            return
        signal = entry.window.signal
        if signal is not None:
            self._signals.pop(signal.signal_id, None)
            self._retired_signals.add(signal.signal_id)
        entry.window.disconnect()

    def retire_where(self, which: Callable[[WindowEntry], bool]) -> None:
        for window_id, entry in list(self._entries.items()):
            if which(entry):
                self.retire(window_id)

    def reset(self) -> None:
        """The session is gone: retire every window; old signal ids mean nothing now."""
        self.retire_where(lambda entry: True)
        self._retired_signals.clear()

    def received_update(self, msg: WindowUpdate) -> Refusal | Stale | None:
        """Apply the board's update; returns the counter to raise when it is not applied."""
        entry = self._entries.get(msg.window)
        if entry is None:
            return (
                Stale.UPDATE if 1 <= msg.window < self._next_window_id else Refusal.UNKNOWN_WINDOW
            )
        if entry.state is WindowState.CREATED:
            return Refusal.UNKNOWN_WINDOW
        status = entry.window.apply(msg, writer=Side.BOARD)
        if status is Status.ERANGE:
            return Refusal.OUT_OF_BOUNDS
        if status is Status.EPERM:
            return Refusal.WRONG_WRITER
        return None

    def received_signal(self, msg: SignalNotify | SignalState) -> Refusal | Stale | None:
        """Deliver SIGNAL / SIGNAL_STATE; returns the counter to raise when not delivered."""
        entry = self._signals.get(msg.signal)
        signal = None if entry is None else entry.window.signal
        if signal is None:
            return Stale.SIGNAL if msg.signal in self._retired_signals else Refusal.UNKNOWN_SIGNAL
        if isinstance(msg, SignalNotify):
            signal.received_signal()
        else:
            signal.received_state(msg)
        return None
