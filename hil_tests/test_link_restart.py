"""Killing one end of a link and starting it again: the survivor reports ``PeerRestarted``.

End A runs in a process of its own (``linkpeer.py``: a ``LinkRuntime`` that
echoes every message, tagged with its pid); end B, the survivor, runs here and
keeps sending numbered messages.  A is killed with SIGKILL and started again
at once; B must report ``PeerRestarted`` within the dead interval (plus
``RESTART_SLACK_S`` for starting a Python process), deliver nothing of the old
incarnation afterwards, and carry every message sent in the new session,
once and in order.
"""

from __future__ import annotations

import contextlib
import struct
import time
from dataclasses import dataclass, field

from rig import LINK_CONFIG, RESTART_SLACK_S, Child, Rig

from ira.link.events import (
    Channel,
    LinkEvent,
    MessageReceived,
    PeerRestarted,
    SessionLost,
    SessionStarted,
)
from ira.runtime.link import LinkRuntime
from ira.transports import open_transport

_SEQ = struct.Struct("<Q")
#: B sends a numbered message this often while it waits
_SEND_EVERY_S = 0.02


@dataclass
class Survivor:
    """End B: sends numbered messages, collects the echoes by the pid that sent them."""

    runtime: LinkRuntime
    sent: int = 0
    echoes: dict[int, list[int]] = field(default_factory=dict)
    events: list[tuple[float, LinkEvent]] = field(default_factory=list)
    #: echoes from a pid that arrived after B reported that pid's successor
    stale: list[tuple[int, int]] = field(default_factory=list)
    retired: set[int] = field(default_factory=set)

    def send_one(self) -> int:
        seq = self.sent
        self.runtime.send(_SEQ.pack(seq), Channel.CONTROL)
        self.sent += 1
        return seq

    def pump(self, until: float) -> LinkEvent | None:
        """Send and receive until ``until``; return the first event that is not an echo."""
        next_send = time.monotonic()
        while (now := time.monotonic()) < until:
            if now >= next_send:
                self.send_one()
                next_send = now + _SEND_EVERY_S
            event = self.runtime.next_event(max(0.0, min(next_send, until) - now))
            if event is None:
                continue
            if isinstance(event, MessageReceived):
                pid_text, _, payload = event.payload.partition(b":")
                pid = int(pid_text)
                (seq,) = _SEQ.unpack(payload)
                if pid in self.retired:
                    self.stale.append((pid, seq))
                self.echoes.setdefault(pid, []).append(seq)
                continue
            self.events.append((time.monotonic(), event))
            return event
        self.runtime.raise_if_failed()
        return None

    def wait_for(self, kind: type[LinkEvent], timeout_s: float) -> float | None:
        """Pump until an event of ``kind``; the time it was seen, or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            event = self.pump(deadline)
            if isinstance(event, kind):
                return self.events[-1][0]
        return None

    def wait_for_echo(self, pid: int, seq: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(s >= seq for s in self.echoes.get(pid, [])):
                return True
            self.pump(min(deadline, time.monotonic() + 0.05))
        return False


def test_killed_and_restarted_peer_is_reported_within_the_dead_interval(rig: Rig) -> None:
    restarts = 10 if rig.variant.long else 1
    bound_s = rig.dead_interval_s + RESTART_SLACK_S
    with contextlib.ExitStack() as stack:
        peer = stack.enter_context(Child.link_peer(rig.link_a))
        survivor = Survivor(
            stack.enter_context(LinkRuntime(open_transport(rig.link_b), LINK_CONFIG))
        )
        first = survivor.send_one()
        assert survivor.wait_for_echo(peer.pid, first, rig.handshake_timeout_s), (
            f"no echo from the first peer; its output: {peer.output}"
        )
        for round_ in range(restarts):
            old = peer
            old.kill()
            killed_at = time.monotonic()
            peer = stack.enter_context(Child.link_peer(rig.link_a))
            seen_at = survivor.wait_for(PeerRestarted, bound_s + 10.0)
            assert seen_at is not None, (
                f"round {round_}: no PeerRestarted; events {survivor.events}; "
                f"peer output {peer.output}"
            )
            survivor.retired.add(old.pid)
            took = seen_at - killed_at
            assert took <= bound_s, (
                f"round {round_}: PeerRestarted {took:.2f} s after the kill "
                f"(dead interval {rig.dead_interval_s} s + slack {RESTART_SLACK_S} s)"
            )
            # the new session carries everything sent from now on, once and in order
            after = survivor.send_one()
            assert survivor.wait_for_echo(peer.pid, after, rig.handshake_timeout_s), (
                f"round {round_}: message {after} never came back from the new peer"
            )
            echoes = survivor.echoes[peer.pid]
            assert echoes == sorted(set(echoes)), f"round {round_}: reordered or doubled"
            assert set(range(after, max(echoes) + 1)) <= set(echoes), (
                f"round {round_}: lost in the new session"
            )
            old_echoes = survivor.echoes.get(old.pid, [])
            assert old_echoes == sorted(set(old_echoes))
        assert survivor.stale == [], "messages of a dead incarnation delivered after its restart"
        kinds = [type(e) for _, e in survivor.events]
        assert SessionLost not in kinds
        assert kinds.count(PeerRestarted) == restarts
        assert kinds.count(SessionStarted) == restarts + 1
