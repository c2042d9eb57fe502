"""A 2 s unplug under the bus: the host keeps the board's devices and its calls complete.

Board and host run over the ptys of a virtual null-modem.  Pulling the cable
for longer than the dead interval takes the link down and up again within
the same session, so the bus must neither drop a device nor fail a call: a
DEVCALL issued during the outage, or right after it, completes once the
link is back (its timeout is longer than the outage), and the board counts
every call exactly once.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator

import pytest

from ira.busmodel.devices.counting import CounterFunc
from ira.busmodel.events import BusEvent, DeviceRemoved
from ira.link.config import LinkConfig
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.runtime import BoardService, CallResult, HostClient
from ira.tools.nullmodem import NullModem

pytestmark = pytest.mark.timeout(30)

UNPLUG_S = 2.0
#: longer than the outage plus the time the link takes to resume after it
CALL_TIMEOUT_S = 10.0


class Events:
    """The bus events a host client reported (from its loop thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[BusEvent] = []

    def __call__(self, client: HostClient, event: BusEvent) -> None:
        with self._lock:
            self._events.append(event)

    def kinds(self) -> list[type[object]]:
        with self._lock:
            return [type(e) for e in self._events]


@pytest.fixture
def cable() -> Iterator[NullModem]:
    with NullModem() as nm:
        yield nm


def _count(result: CallResult) -> int:
    (count,) = struct.unpack("<Q", result.payload)
    assert isinstance(count, int)
    return count


def test_two_second_unplug_keeps_the_devices_and_calls_complete(cable: NullModem) -> None:
    assert LinkConfig().dead_interval_s < UNPLUG_S  # so the link really goes down
    events = Events()
    with BoardService(cable.path_a), HostClient(cable.path_b, on_event=events) as host:
        devices = host.wait_ready()
        counter = host.open("counter")
        assert _count(host.call(counter, CounterFunc.INCREMENT)) == 1

        cable.unplug(UNPLUG_S)
        unplugged_at = time.monotonic()
        during = host.submit(counter, CounterFunc.INCREMENT, timeout_s=CALL_TIMEOUT_S)
        time.sleep(UNPLUG_S / 2)
        assert host.devices() == devices
        later = host.submit(counter, CounterFunc.INCREMENT, timeout_s=CALL_TIMEOUT_S)
        time.sleep(max(0.0, unplugged_at + UNPLUG_S + 0.05 - time.monotonic()))
        assert host.devices() == devices, "the host dropped devices during the unplug"
        after = host.submit(counter, CounterFunc.INCREMENT, timeout_s=CALL_TIMEOUT_S)

        results = [host.result(f, CALL_TIMEOUT_S) for f in (during, later, after)]
        assert [_count(r) for r in results] == [2, 3, 4]
        ping = host.ping(b"resumed", timeout_s=CALL_TIMEOUT_S)
        assert ping.payload == b"resumed"
        read = host.call(counter, CounterFunc.READ, timeout_s=CALL_TIMEOUT_S)
        assert _count(read) == 4, "a call was lost or ran twice"
        assert host.devices() == devices

    kinds = events.kinds()
    assert LinkDown in kinds and LinkUp in kinds
    assert kinds.index(LinkDown) < kinds.index(LinkUp)
    assert DeviceRemoved not in kinds
    assert PeerRestarted not in kinds and SessionLost not in kinds
    assert cable.statistics().unplugs == 1
