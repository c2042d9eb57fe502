"""Signals: shm-signal (AlacrityVM ``shm_signal``) carried as messages.

Theory of operation
-------------------

A signal notifies the other side that something in shared memory changed.
shm-signal keeps, per *receiver*, ``{enabled, pending, dirty}`` and the rules

* inject:  ``peer.dirty = 1; if peer.enabled and not peer.pending: peer.pending = 1; send``
* enable:  ``enabled = 1; if dirty or pending: wakeup``  (self-delivery)
* wakeup:  ``while enabled and (dirty or pending): drain while dirty; pending = 0``

so one notification covers any number of events posted while the receiver
is busy.  Over a link there is no memory both sides can write, so each side
keeps its own receiver state (``enabled``, ``pending``, ``dirty``) and a
*view* of the peer's (``peer_enabled``, ``peer_pending``, ``peer_dirty``):

* a SIGNAL message is the notification; it sets the receiver's ``pending``
  and ``dirty`` on arrival;
* the receiver answers with SIGNAL_STATE once it has drained (``pending``
  cleared only after ``dirty`` is drained), carrying ``enabled`` and the
  number of SIGNALs it has seen, so the sender knows exactly whether one is
  still in flight (``peer_pending = sent != seen``);
* ``peer_dirty`` records events injected while no SIGNAL could be sent; the
  SIGNAL_STATE that clears ``peer_pending`` (or reports ``enabled`` again)
  sends one SIGNAL for all of them.  None is lost: every inject is followed
  by a SIGNAL that the receiver drains after it;
* ``disable()`` is local only; the sender learns it from the next
  SIGNAL_STATE.  Meanwhile at most one SIGNAL arrives and waits as
  ``pending`` until ``enable()`` delivers it.

At most one SIGNAL per signal is ever in flight.  ``notify()`` first flushes
the signal's window (the write barrier of shm-signal), so the SIGNAL
follows the updates it announces on the same, ordered channel.
"""

from __future__ import annotations

from collections.abc import Callable

from ira.wire.bus import Message, SignalNotify, SignalState

_U32 = 0xFFFFFFFF


class Signal:
    """One signal, seen from one side: its receiver state and a view of the peer's."""

    def __init__(self, signal_id: int, *, release: Callable[[], object] | None = None) -> None:
        self.signal_id = signal_id
        #: the notifier: run by wakeup while ``dirty``; may call enable/disable/notify
        self.handler: Callable[[], None] | None = None
        self._release = release
        self._send: Callable[[Message], None] | None = None
        self._closed = False
        # receiver ("me")
        self._enabled = True
        self._pending = False
        self._dirty = False
        self._reported_enabled = True
        self._seen = 0
        self._in_wakeup = False
        # sender's view of the peer
        self._peer_enabled = True
        self._peer_dirty = False
        self._sent = 0
        self._peer_seen = 0
        # counters
        self.injected = 0
        self.signals_sent = 0
        self.signals_received = 0
        self.states_sent = 0
        self.wakeups = 0

    def __repr__(self) -> str:
        return (
            f"<Signal {self.signal_id:#x} enabled={self._enabled} pending={self._pending} "
            f"dirty={self._dirty} peer_pending={self.peer_pending}>"
        )

    # -- state ----------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def pending(self) -> bool:
        return self._pending

    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def peer_enabled(self) -> bool:
        return self._peer_enabled

    @property
    def peer_pending(self) -> bool:
        return self._sent != self._peer_seen

    @property
    def peer_dirty(self) -> bool:
        return self._peer_dirty

    @property
    def connected(self) -> bool:
        return self._send is not None

    # -- sender ---------------------------------------------------------

    def notify(self) -> bool:
        """Inject: tell the peer that memory changed.  True if a SIGNAL was sent now."""
        if self._closed:
            return False
        self.injected += 1
        if self._release is not None:
            self._release()
        self._peer_dirty = True
        return self._maybe_send()

    def _maybe_send(self) -> bool:
        if self._send is None or not self._peer_dirty:
            return False
        if not self._peer_enabled or self.peer_pending:
            return False
        self._peer_dirty = False
        self._sent = (self._sent + 1) & _U32
        self.signals_sent += 1
        self._send(SignalNotify(self.signal_id))
        return True

    def received_state(self, state: SignalState) -> None:
        """SIGNAL_STATE from the peer (receiver): it drained, or enabled again."""
        self._peer_enabled = state.enabled
        self._peer_seen = state.signals_seen
        self._maybe_send()

    # -- receiver -------------------------------------------------------

    def received_signal(self) -> None:
        """A SIGNAL from the peer arrived."""
        self.signals_received += 1
        self._seen = (self._seen + 1) & _U32
        self._pending = True
        self._dirty = True
        if self._enabled and not self._in_wakeup:
            self._wakeup()

    def enable(self) -> None:
        """Unmask notifications; delivers now whatever arrived while masked."""
        self._enabled = True
        if self._in_wakeup:
            return
        if self._dirty or self._pending:
            self._wakeup()
        elif not self._reported_enabled:
            self._report()

    def disable(self) -> None:
        """Mask notifications (local only; the peer learns it from the next SIGNAL_STATE)."""
        self._enabled = False

    def _wakeup(self) -> None:
        self._in_wakeup = True
        try:
            while self._enabled and (self._dirty or self._pending):
                while self._enabled and self._dirty:
                    self._dirty = False
                    self.wakeups += 1
                    if self.handler is not None:
                        self.handler()
                self._pending = False
        finally:
            self._in_wakeup = False
        self._report()

    def _report(self) -> None:
        if self._send is None:
            return
        self._reported_enabled = self._enabled
        self.states_sent += 1
        self._send(SignalState(self.signal_id, self._enabled, self._seen))

    # -- used by the cores ----------------------------------------------

    def connect(self, send: Callable[[Message], None]) -> None:
        """Start sending through ``send``; sends a SIGNAL for events injected before."""
        if self._closed:
            return
        self._send = send
        self._maybe_send()

    def disconnect(self) -> None:
        """The signal is gone (detached, closed, session reset): never send again."""
        self._send = None
        self._closed = True
