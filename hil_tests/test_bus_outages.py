"""The bus through outages: a board process killed and restarted, and a 2 s unplug.

* Killing the board (SIGKILL) and starting it again at once: the host drops
  every device and rediscovers them all within the dead interval + 1 s of
  the kill.
* Pulling the cable for 2 s (virtual null-modem only): the host keeps every
  device (a silent link is not a removal) and DEVCALLs issued before, during
  and after the outage complete, each counted exactly once by the board.
"""

from __future__ import annotations

import contextlib
import struct
import time
from concurrent.futures import Future
from pathlib import Path

from rig import STOCK_TYPES, Child, Recorder, Rig, stock_profile

from ira.busmodel.devices.counting import CounterFunc
from ira.busmodel.events import BusEvent, BusReady, DeviceAdded, DeviceRemoved
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.runtime import CallResult, HostClient

#: how long after the dead interval the devices must be back (issue 3's figure)
REDISCOVERY_SLACK_S = 1.0
UNPLUG_S = 2.0
#: per-call timeout for calls that straddle an unplug: longer than the outage and the resume
CALL_TIMEOUT_S = 15.0


def test_board_restart_drops_every_device_and_rediscovers_them(rig: Rig, tmp_path: Path) -> None:
    restarts = 5 if rig.variant.long else 1
    profile = stock_profile(tmp_path / "board.toml")
    bound_s = rig.dead_interval_s + REDISCOVERY_SLACK_S
    seen = Recorder()
    with contextlib.ExitStack() as stack:
        board = stack.enter_context(Child.board(rig.link_a, profile))
        host = stack.enter_context(HostClient(rig.link_b, on_event=seen))
        before = host.wait_ready(rig.handshake_timeout_s)
        assert [d.type for d in before] == list(STOCK_TYPES)
        for round_ in range(restarts):
            board.kill()
            killed_at = time.monotonic()
            board = stack.enter_context(Child.board(rig.link_a, profile))

            deadline = killed_at + bound_s + 10.0
            while _back_at(seen.since(killed_at)) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            events = seen.since(killed_at)
            kinds = [f"{type(e).__name__} +{t - killed_at:.2f}s" for t, e in events]
            back_at = _back_at(events)
            assert back_at is not None, f"round {round_}: host saw {kinds}"
            took = back_at - killed_at
            assert took <= bound_s, (
                f"round {round_}: devices back {took:.2f} s after the kill "
                f"(dead interval {rig.dead_interval_s} s + {REDISCOVERY_SLACK_S} s); {kinds}"
            )
            assert any(isinstance(e, PeerRestarted) for _, e in events), kinds
            assert not any(isinstance(e, SessionLost) for _, e in events), kinds
            assert [d.type for d in host.devices()] == list(STOCK_TYPES)
            assert host.ping(b"back", timeout_s=CALL_TIMEOUT_S).payload == b"back"


def _back_at(events: list[tuple[float, BusEvent]]) -> float | None:
    """When the host had every device back after dropping them all, or None (not yet).

    Back means: every stock device removed, then the bus ready again and every
    stock device added after the last removal, in the registration replay.
    """
    removals = [i for i, (_, e) in enumerate(events) if isinstance(e, DeviceRemoved)]
    removed = sorted(e.device.type for _, e in events if isinstance(e, DeviceRemoved))
    if removed != sorted(STOCK_TYPES):
        return None
    after = events[removals[-1] + 1 :]
    ready = [t for t, e in after if isinstance(e, BusReady)]
    # a restarted board installs its devices before its link runs, so every device
    # must come back in the registration replay, not as a later hot add
    added = [(t, e.device.type) for t, e in after if isinstance(e, DeviceAdded) and e.replayed]
    if not ready or sorted(dtype for _, dtype in added) != sorted(STOCK_TYPES):
        return None
    return max(ready[0], *(t for t, _ in added))


def test_unplug_keeps_the_devices_and_calls_resume(rig: Rig, tmp_path: Path) -> None:
    rig.require_virtual("pulling the cable on cue")
    unplugs = 5 if rig.variant.long else 1
    seen = Recorder()
    with (
        Child.board(rig.link_a, stock_profile(tmp_path / "board.toml")),
        HostClient(rig.link_b, on_event=seen) as host,
    ):
        devices = host.wait_ready(rig.handshake_timeout_s)
        counter = host.open("counter", timeout_s=CALL_TIMEOUT_S)
        calls = 0

        def increment() -> Future[object]:
            nonlocal calls
            calls += 1
            return host.submit(counter, CounterFunc.INCREMENT, timeout_s=CALL_TIMEOUT_S)

        for _ in range(unplugs):
            pending = [increment() for _ in range(10)]  # in flight as the cable goes
            rig.unplug(UNPLUG_S)
            unplugged_at = time.monotonic()
            pending += [increment() for _ in range(10)]  # issued during the outage
            time.sleep(max(0.0, unplugged_at + UNPLUG_S + 0.1 - time.monotonic()))
            assert host.devices() == devices, "a device went away during the unplug"
            pending += [increment() for _ in range(10)]  # issued after it
            counts = [_count(host.result(f, CALL_TIMEOUT_S)) for f in pending]
            assert counts == sorted(counts) and len(set(counts)) == len(counts)
            assert host.ping(b"resumed", timeout_s=CALL_TIMEOUT_S).payload == b"resumed"
        read = host.call(counter, CounterFunc.READ, timeout_s=CALL_TIMEOUT_S).payload
        assert struct.unpack("<Q", read) == (calls,), "a call was lost or ran twice"
        assert host.devices() == devices
        kinds = seen.kinds()
        assert "DeviceRemoved" not in kinds and "PeerRestarted" not in kinds, kinds
        assert kinds.count(LinkDown.__name__) >= unplugs, kinds
        assert kinds.count(LinkUp.__name__) == kinds.count(LinkDown.__name__), kinds


def _count(result: CallResult) -> int:
    (count,) = struct.unpack("<Q", result.payload)
    assert isinstance(count, int)
    return count
