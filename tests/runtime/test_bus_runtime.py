"""Board and host services over real links: ptys through the null-modem, and an in-process pair."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from ira.busmodel.devices.counting import CounterFunc, CountingDevice
from ira.busmodel.events import BusEvent, DeviceAdded, DeviceRemoved
from ira.errors import DevcallError, LinkClosed
from ira.runtime import BoardService, CallResult, HostClient
from ira.runtime.profile import DEFAULT_PROFILE, DeviceSpec, Profile
from ira.tools.nullmodem import NullModem
from ira.transports.mem import mem_pair
from ira.wire.bus import Status

pytestmark = pytest.mark.timeout(10)

STOCK = ["board-info", "echo", "counter", "ring-loopback"]


class Recorder:
    """Bus events a host client reported, from its loop thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[BusEvent] = []

    def __call__(self, client: HostClient, event: BusEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type[DeviceAdded] | type[DeviceRemoved]) -> list[str]:
        with self.lock:
            return [e.device.type for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        with self.lock:
            self.events.clear()


@pytest.fixture
def cable() -> Iterator[NullModem]:
    with NullModem() as nm:
        yield nm


def types(client: HostClient) -> list[str]:
    return [d.type for d in client.devices()]


def test_host_lists_the_boards_devices(cable: NullModem) -> None:
    with BoardService(cable.path_a), HostClient(cable.path_b) as host:
        devices = host.list_devices()
        assert [d.type for d in devices] == STOCK
        assert devices[0].attributes == {"board": "ira-board", "ira_version": "0.1.0"}
        assert len({d.device_id for d in devices}) == len(devices)


def test_ping_loses_nothing(cable: NullModem) -> None:
    with BoardService(cable.path_a), HostClient(cable.path_b) as host:
        host.wait_ready()
        for seq in range(20):
            payload = bytes(range(seq, seq + 64))
            result = host.ping(payload)
            assert result == CallResult(Status.OK, payload, result.round_trip_s)
            assert result.round_trip_s > 0


def test_unknown_function_is_a_negative_status_not_a_crash(cable: NullModem) -> None:
    with BoardService(cable.path_a), HostClient(cable.path_b) as host:
        handle = host.open("echo")
        with pytest.raises(DevcallError) as info:
            host.call(handle, 99, b"")
        assert info.value.status == Status.ENOSYS
        assert host.ping(b"still fine").payload == b"still fine"


def test_hotswap_shows_on_the_host_within_a_second(cable: NullModem) -> None:
    with BoardService(cable.path_a) as board, HostClient(cable.path_b) as host:
        host.wait_ready()
        extra = DeviceSpec(name="counter-2", type="counter")
        bigger = Profile(DEFAULT_PROFILE.board, (*DEFAULT_PROFILE.devices, extra))

        started = time.monotonic()
        change = board.apply_profile(bigger)
        assert change.added == ("counter-2",) and change.removed == ()
        assert host.wait_for(lambda ds: len(ds) == 5, timeout_s=1.0)
        assert time.monotonic() - started < 1.0
        assert types(host) == [*STOCK, "counter"]

        smaller = Profile(
            DEFAULT_PROFILE.board, tuple(s for s in bigger.devices if s.type != "echo")
        )
        started = time.monotonic()
        change = board.apply_profile(smaller)
        assert change.removed == ("echo",)
        assert host.wait_for(lambda ds: "echo" not in [d.type for d in ds], timeout_s=1.0)
        assert time.monotonic() - started < 1.0
        assert types(host) == ["board-info", "counter", "ring-loopback", "counter"]


def test_board_restart_drops_every_device_then_rediscovers_them(cable: NullModem) -> None:
    seen = Recorder()
    with HostClient(cable.path_b, on_event=seen) as host:
        with BoardService(cable.path_a):
            host.wait_ready()
            handle = host.open("counter")
            host.call(handle, CounterFunc.INCREMENT)
        seen.clear()
        assert types(host) == STOCK  # a dead board is only a silent link until it returns
        with BoardService(cable.path_a):
            assert host.wait_for(lambda ds: len(ds) == 4 and seen.of(DeviceAdded), timeout_s=5.0)
            assert sorted(seen.of(DeviceRemoved)) == sorted(STOCK)
            assert sorted(seen.of(DeviceAdded)) == sorted(STOCK)
            host.wait_ready()
            # a fresh board: the old handle is gone, a new open counts from zero
            handle = host.open("counter")
            count = host.call(handle, CounterFunc.INCREMENT).payload
            assert struct.unpack("<Q", count) == (1,)
            assert host.ping(b"back").payload == b"back"


def test_ten_thousand_devcalls_are_counted_exactly_once() -> None:
    end_a, end_b = mem_pair(packet=False)
    total, in_flight = 10_000, 512
    # the end closed last may see the other go first: a closed socket pair is final
    with contextlib.suppress(LinkClosed), BoardService(end_a) as board, HostClient(end_b) as host:
        handle = host.open("counter")
        futures: list[Future[object]] = []
        counts: list[int] = []
        for i in range(total):
            futures.append(host.submit(handle, CounterFunc.INCREMENT))
            if len(futures) >= in_flight or i == total - 1:
                for f in futures:
                    counts.extend(struct.unpack("<Q", host.result(f).payload))
                futures.clear()
        assert sorted(counts) == list(range(1, total + 1))
        read = host.call(handle, CounterFunc.READ).payload
        assert struct.unpack("<Q", read) == (total,)
        counter_id = board.devices()["counter"]
        model = board.call(lambda c: c.devices()[counter_id])
        assert isinstance(model, CountingDevice) and model.count == total
