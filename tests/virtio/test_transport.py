"""The virtio-over-bus transport: DEVCALLs, status, features, config, queues, reset.

Board ``Connector`` and host ``Bus`` over simulated links (``linkrig``): a
clean one for the rules, a noisy one end to end.
"""

from __future__ import annotations

import logging
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from linkrig import NOISY, BusOverLink

from ira.busmodel import Bus, BusConfig, Connector, DriverRegistry, Handle, Window
from ira.busmodel.events import (
    CallCompleted,
    CallFailed,
    DeviceOpened,
    SignalReceived,
    WindowAttached,
)
from ira.errors import DevcallError
from ira.link.simulate import LineFaults
from ira.virtio import Buffer, QueueAddresses, VirtqueueDriver, WindowMemory, split_layout
from ira.virtio.calls import (
    DEVICE_ID_ATTR,
    EVENT_BYTES,
    EVENT_SHM,
    VIRTIO_TYPE,
    EventRecord,
    QueueSet,
    VirtioFunc,
    decode_event,
    encode,
)
from ira.virtio.device import VirtqueueDevice
from ira.virtio.entropy import CHUNK_BYTES, ENTROPY_ID, Entropy, EntropyClient
from ira.virtio.features import (
    TRANSPORT_FEATURES,
    DeviceStatus,
    Feature,
    FeaturePolicy,
    feature_names,
)
from ira.virtio.host import BindingState, VirtioBinding, VirtioHostDriver
from ira.virtio.memory import MemoryMap
from ira.virtio.ring import Fault
from ira.virtio.status import STATUS_REQUIRES, StatusWrite, decide
from ira.virtio.transport import VirtioDevice
from ira.wire.bus import BUS_VERSION_MAX, BUS_VERSION_WINDOWS, SignalNotify, Status

S = DeviceStatus
CLEAN = LineFaults()
VERSION_1, EVENT_IDX, INDIRECT = (
    f.mask for f in (Feature.VERSION_1, Feature.EVENT_IDX, Feature.INDIRECT_DESC)
)


class Echo(VirtioDevice):
    """A test device: two queues, 8 bytes of config, device feature bit 3; echoes chains."""

    virtio_id = 42
    device_features = TRANSPORT_FEATURES | 1 << 3
    queue_sizes = (8, 4)

    def __init__(self) -> None:
        super().__init__(config=bytes(range(8)))
        self.refuse: int = 0  # features the device will not run with
        self.resets = 0
        self.live_calls = 0

    def accept_features(self, features: int) -> bool:
        return not features & self.refuse

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        while (chain := queue.pop()) is not None:
            data = queue.read(chain)[: chain.writable_bytes]
            queue.write(chain, data)
            queue.push(chain, len(data))

    def driver_ok(self) -> None:
        self.live_calls += 1

    def device_reset(self) -> None:
        self.resets += 1


class Raw:
    """One open ``virtio`` device, worked with raw DEVCALLs."""

    def __init__(self, device: VirtioDevice, *, faults: LineFaults = CLEAN, seed: int = 0) -> None:
        self.device = device
        board = Connector()
        board.add_device(device, now=0.0)
        self.net = BusOverLink(board, Bus(), seed=seed, faults=faults)
        host = self.net.host
        assert self.net.run_until(lambda: bool(host.devices()), timeout_s=30.0)
        self.info = host.devices()[0]
        ev = self.net.outcome(host.open(self.info.device_id, now=self.net.now))
        assert isinstance(ev, DeviceOpened)
        self.handle = ev.handle

    def call(self, func: VirtioFunc, payload: bytes = b"") -> tuple[int, bytes]:
        ev = self.net.outcome(self.net.host.call(self.handle, func, payload, now=self.net.now))
        if isinstance(ev, CallCompleted):
            return ev.status, ev.payload
        assert isinstance(ev, CallFailed) and isinstance(ev.error, DevcallError), ev
        return ev.error.status, b""

    def status(self, value: int | None = None) -> int:
        if value is None:
            st_, reply = self.call(VirtioFunc.STATUS)
        else:
            st_, reply = self.call(VirtioFunc.SET_STATUS, bytes([value]))
        assert st_ == Status.OK
        return reply[0]

    def attach(self, shm_id: int, window: Window, *, signal: bool) -> None:
        host = self.net.host
        ev = self.net.outcome(
            host.attach(self.handle, shm_id, window, now=self.net.now, signal=signal)
        )
        assert isinstance(ev, WindowAttached), ev

    def to_features_ok(self, features: int = TRANSPORT_FEATURES) -> int:
        self.status(S.ACKNOWLEDGE)
        self.status(S.ACKNOWLEDGE | S.DRIVER)
        for select in range(2):
            word = features >> (32 * select) & 0xFFFFFFFF
            assert (
                self.call(VirtioFunc.SET_DRIVER_FEATURES, struct.pack("<II", select, word))[0] == 0
            )
        return self.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK)

    def ring(self, index: int, size: int) -> tuple[Window, QueueSet]:
        lay = split_layout(size)
        window = self.net.host.create_window(
            lay.size_bytes, device_offset=lay.used_offset, device_length=lay.used_bytes
        )
        self.attach(10 + index, window, signal=True)
        a = QueueAddresses.in_window(window.window_id, lay)
        return window, QueueSet(index, size, window.window_id, a.desc, a.avail, a.used)


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


# -- the status state machine ------------------------------------------------------


def test_status_table() -> None:
    ack, drv, fok, dok, failed = S.ACKNOWLEDGE, S.DRIVER, S.FEATURES_OK, S.DRIVER_OK, S.FAILED
    assert decide(0, 0) is StatusWrite.RESET
    assert decide(ack | drv, 0) is StatusWrite.RESET
    assert decide(0, ack) is StatusWrite.ACCEPT
    assert decide(0, ack | drv) is StatusWrite.ACCEPT
    assert decide(0, drv) is StatusWrite.REFUSE  # DRIVER needs ACKNOWLEDGE
    assert decide(ack | drv, ack | drv | fok) is StatusWrite.CHECK_FEATURES
    assert decide(ack | drv, ack | drv | dok) is StatusWrite.REFUSE  # DRIVER_OK needs FEATURES_OK
    assert decide(ack | drv, ack | drv | fok | dok) is StatusWrite.REFUSE  # not in one write
    assert decide(ack | drv | fok, ack | drv | fok | dok) is StatusWrite.GO_LIVE
    assert decide(ack | drv, ack) is StatusWrite.REFUSE  # DRIVER would be cleared
    assert decide(ack, ack | failed) is StatusWrite.FAIL
    assert decide(0, failed) is StatusWrite.FAIL
    assert decide(ack | failed, ack | failed | drv) is StatusWrite.REFUSE  # only reset now
    assert decide(0, 0x10) is StatusWrite.REFUSE  # no such bit
    assert decide(ack, ack | S.DEVICE_NEEDS_RESET) is StatusWrite.ACCEPT  # the device's bit


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 0xFF), max_size=12))
def test_accepted_status_writes_never_clear_a_bit_or_skip_a_step(writes: list[int]) -> None:
    status = 0
    for requested in writes:
        outcome = decide(status, requested)
        if outcome is StatusWrite.RESET:
            status = 0
        elif outcome is not StatusWrite.REFUSE:
            new = requested & ~S.DEVICE_NEEDS_RESET
            assert new & status == status & ~S.DEVICE_NEEDS_RESET
            for bit, needs in STATUS_REQUIRES.items():
                if new & bit:
                    assert new & needs == needs
            status = new


def test_status_over_the_bus() -> None:
    echo = Echo()
    raw = Raw(echo)
    assert raw.status() == 0
    assert raw.call(VirtioFunc.SET_STATUS, bytes([S.DRIVER]))[0] == Status.EINVAL
    assert raw.status(S.ACKNOWLEDGE) == S.ACKNOWLEDGE
    assert raw.status(S.ACKNOWLEDGE | S.DRIVER) == S.ACKNOWLEDGE | S.DRIVER
    assert raw.call(VirtioFunc.SET_STATUS, bytes([S.ACKNOWLEDGE]))[0] == Status.EINVAL
    assert raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FAILED) & S.FAILED
    assert raw.call(VirtioFunc.SET_STATUS, bytes([0xFF]))[0] == Status.EINVAL
    assert raw.call(VirtioFunc.RESET) == (Status.OK, b"")
    assert raw.status() == 0
    assert echo.resets == 1


# -- features --------------------------------------------------------------------------


def test_a_driver_that_gives_up_is_logged_and_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo = Echo()
    raw = Raw(echo)
    raw.to_features_ok()
    caplog.set_level(logging.INFO, logger="ira.virtio.transport")
    assert raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.FAILED) & S.FAILED
    assert not echo.live
    # only a reset is accepted now, and a second FAILED is refused, not counted again
    again = S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.FAILED
    assert raw.call(VirtioFunc.SET_STATUS, bytes([again]))[0] == Status.EINVAL
    assert echo.statistics().driver_failed == 1
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "virtio device 42: the driver gave up on it (FAILED); it waits for a reset",
        )
    ]
    assert raw.status(0) == 0 and echo.resets == 1


def test_features_are_read_by_selector() -> None:
    raw = Raw(Echo())
    words = [raw.call(VirtioFunc.DEVICE_FEATURES, u32(s))[1] for s in (0, 1, 2, 99)]
    assert [struct.unpack("<I", w)[0] for w in words] == [
        (TRANSPORT_FEATURES | 1 << 3) & 0xFFFFFFFF,
        1,  # VIRTIO_F_VERSION_1 is bit 32
        0,
        0,
    ]
    assert raw.call(VirtioFunc.DEVICE_FEATURES, b"\x00")[0] == Status.EINVAL
    assert feature_names(TRANSPORT_FEATURES | 1 << 3) == [
        "bit3",
        "INDIRECT_DESC",
        "EVENT_IDX",
        "VERSION_1",
    ]


def test_driver_features_are_written_between_driver_and_features_ok() -> None:
    raw = Raw(Echo())
    write = struct.pack("<II", 1, 1)
    assert raw.call(VirtioFunc.SET_DRIVER_FEATURES, write)[0] == Status.EPERM  # before DRIVER
    assert raw.to_features_ok(VERSION_1 | EVENT_IDX) & S.FEATURES_OK
    assert raw.device.features == VERSION_1 | EVENT_IDX
    assert raw.call(VirtioFunc.DRIVER_FEATURES, u32(0))[1] == u32(EVENT_IDX)
    assert raw.call(VirtioFunc.SET_DRIVER_FEATURES, write)[0] == Status.EPERM  # after FEATURES_OK


@pytest.mark.parametrize(
    ("features", "refuse"),
    [
        (VERSION_1 | 1 << 5, 0),  # not offered
        (EVENT_IDX, 0),  # no VERSION_1: no legacy interface
        (VERSION_1 | 1 << 3, 1 << 3),  # the device will not run with it
    ],
)
def test_the_device_may_refuse_features_ok(features: int, refuse: int) -> None:
    echo = Echo()
    echo.refuse = refuse
    raw = Raw(echo)
    status = raw.to_features_ok(features)
    assert status == S.ACKNOWLEDGE | S.DRIVER  # FEATURES_OK did not stick
    assert raw.status() == status and echo.features == 0


# -- configuration space --------------------------------------------------------------------


def test_config_reads_carry_the_generation() -> None:
    raw = Raw(Echo())
    event = raw.net.host.create_window(EVENT_BYTES, device_offset=0, device_length=EVENT_BYTES)
    raw.attach(EVENT_SHM, event, signal=True)
    assert raw.call(VirtioFunc.CONFIG_READ, struct.pack("<II", 2, 3)) == (
        Status.OK,
        u32(0) + bytes([2, 3, 4]),
    )
    assert raw.call(VirtioFunc.CONFIG_READ, struct.pack("<II", 6, 3))[0] == Status.ERANGE
    assert raw.call(VirtioFunc.CONFIG_WRITE, u32(0) + b"x")[0] == Status.EPERM  # read-only
    raw.device.set_config(0, b"\xaa\xbb")
    assert raw.net.run_until(lambda: bool(raw.net.events(SignalReceived)), timeout_s=5.0)
    assert raw.call(VirtioFunc.GENERATION) == (Status.OK, u32(1))
    assert raw.call(VirtioFunc.CONFIG_READ, struct.pack("<II", 0, 2)) == (
        Status.OK,
        u32(1) + b"\xaa\xbb",
    )
    assert decode_event(event.read(0, EVENT_BYTES)) == EventRecord(1, 0)


def test_the_event_window_must_be_the_devices_and_signalled() -> None:
    raw = Raw(Echo())
    host = raw.net.host
    for window, signal in (
        (host.create_window(EVENT_BYTES), True),  # the host's bytes
        (host.create_window(EVENT_BYTES, device_offset=0, device_length=EVENT_BYTES), False),
    ):
        ev = raw.net.outcome(
            host.attach(raw.handle, EVENT_SHM, window, now=raw.net.now, signal=signal)
        )
        assert not isinstance(ev, WindowAttached)


# -- queues ---------------------------------------------------------------------------------


def test_queue_setup_rules() -> None:
    raw = Raw(Echo())
    assert raw.call(VirtioFunc.QUEUE_COUNT) == (Status.OK, struct.pack("<H", 2))
    assert raw.call(VirtioFunc.QUEUE_MAX, struct.pack("<H", 0)) == (Status.OK, struct.pack("<H", 8))
    assert raw.call(VirtioFunc.QUEUE_MAX, struct.pack("<H", 7)) == (Status.OK, struct.pack("<H", 0))
    _, setup = raw.ring(0, 8)
    assert raw.call(VirtioFunc.QUEUE_SET, encode(setup))[0] == Status.EPERM  # before FEATURES_OK
    raw.to_features_ok()
    bad = [
        (QueueSet(5, 8, setup.notify_window, setup.desc, setup.avail, setup.used), Status.ERANGE),
        (
            QueueSet(0, 16, setup.notify_window, setup.desc, setup.avail, setup.used),
            Status.EINVAL,
        ),
        (QueueSet(0, 3, setup.notify_window, setup.desc, setup.avail, setup.used), Status.EINVAL),
        (QueueSet(0, 8, 999, setup.desc, setup.avail, setup.used), Status.EINVAL),
    ]
    for wrong, status in bad:
        assert raw.call(VirtioFunc.QUEUE_SET, encode(wrong))[0] == status
    assert raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 0))[0] == Status.EPERM  # not set up
    misaligned = QueueSet(0, 8, setup.notify_window, setup.desc + 8, setup.avail, setup.used)
    assert raw.call(VirtioFunc.QUEUE_SET, encode(misaligned))[0] == Status.OK
    assert raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 0))[0] == Status.EINVAL
    assert raw.call(VirtioFunc.QUEUE_SET, encode(setup))[0] == Status.OK
    assert raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 0))[0] == Status.OK
    assert raw.call(VirtioFunc.QUEUE_SET, encode(setup))[0] == Status.EPERM  # enabled
    assert raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK) & S.DRIVER_OK
    assert raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 1))[0] == Status.EPERM  # live


def test_bad_calls() -> None:
    raw = Raw(Echo())
    assert raw.call(VirtioFunc.STATUS, b"x")[0] == Status.EINVAL
    assert raw.call(VirtioFunc.QUEUE_SET, b"short")[0] == Status.EINVAL
    assert raw.call(77)[0] == Status.ENOSYS  # type: ignore[arg-type]
    second = raw.net.outcome(raw.net.host.open(raw.info.device_id, now=raw.net.now))
    assert not isinstance(second, DeviceOpened)  # one driver at a time
    assert dict(raw.info.attrs) == {DEVICE_ID_ATTR: "42"} and raw.info.type == VIRTIO_TYPE


def driver_for(raw: Raw, window: Window, size: int, **features: bool) -> VirtqueueDriver[int]:
    data = raw.net.host.create_window(256, device_offset=128, device_length=128)
    raw.attach(20, data, signal=False)
    memory = MemoryMap([WindowMemory(window), WindowMemory(data)])
    addrs = QueueAddresses.in_window(window.window_id, split_layout(size))
    driver: VirtqueueDriver[int] = VirtqueueDriver(memory, size, addrs, **features)
    data.write(0, b"hello")
    driver.add([Buffer.at(data.window_id, 0, 5)], [Buffer.at(data.window_id, 128, 8)], 1)
    driver.publish()
    return driver


def test_no_buffer_is_used_before_driver_ok() -> None:
    echo = Echo()
    raw = Raw(echo)
    raw.to_features_ok()
    window, setup = raw.ring(0, 8)
    assert raw.call(VirtioFunc.QUEUE_SET, encode(setup))[0] == Status.OK
    assert raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 0))[0] == Status.OK
    driver = driver_for(raw, window, 8, event_idx=True, indirect=True)
    assert window.signal is not None
    window.signal.notify()
    raw.net.run_until(lambda: False, timeout_s=0.5)
    assert raw.device.statistics().notify_ignored == 1 and driver.pending() == 0
    raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK)
    assert raw.net.run_until(lambda: driver.pending() == 1, timeout_s=5.0)
    (used,) = driver.collect()
    assert used.written_bytes == 5
    assert echo.live_calls == 1


def test_a_broken_queue_needs_a_reset() -> None:
    raw = Raw(Echo())
    event = raw.net.host.create_window(EVENT_BYTES, device_offset=0, device_length=EVENT_BYTES)
    raw.attach(EVENT_SHM, event, signal=True)
    raw.to_features_ok()
    window, setup = raw.ring(0, 8)
    raw.call(VirtioFunc.QUEUE_SET, encode(setup))
    raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 0))
    raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK)
    lay = split_layout(8)
    # a chain that loops: descriptor 0 -> 0
    window.write(0, struct.pack("<QIHH", window.window_id << 32, 4, 1, 0))
    window.write(lay.avail_offset + 2, struct.pack("<HH", 1, 0))
    assert window.signal is not None
    window.signal.notify()
    assert raw.net.run_until(lambda: bool(raw.status() & S.DEVICE_NEEDS_RESET), timeout_s=5.0)
    assert raw.device.statistics().queue_broken[Fault.DESCRIPTOR_LOOP] == 1
    assert raw.net.run_until(
        lambda: any(e.window_id == event.window_id for e in raw.net.events(SignalReceived)),
        timeout_s=5.0,
    )
    assert decode_event(event.read(0, EVENT_BYTES)).status & S.DEVICE_NEEDS_RESET
    assert raw.call(VirtioFunc.RESET)[0] == Status.OK
    assert raw.status() == 0


def live_queue(raw: Raw) -> Window:
    raw.to_features_ok()
    window, setup = raw.ring(0, 8)
    assert raw.call(VirtioFunc.QUEUE_SET, encode(setup))[0] == Status.OK
    assert raw.call(VirtioFunc.QUEUE_ENABLE, struct.pack("<H", 0))[0] == Status.OK
    return window


def test_a_ring_update_alone_runs_the_queue_once_live_and_enabled() -> None:
    """Bus v2: the driver's flush of the ring window is a notification too (no SIGNAL)."""
    echo = Echo()
    raw = Raw(echo)
    window = live_queue(raw)
    data = raw.net.host.create_window(256, device_offset=128, device_length=128)
    raw.attach(20, data, signal=False)
    memory = MemoryMap([WindowMemory(window), WindowMemory(data)])
    addrs = QueueAddresses.in_window(window.window_id, split_layout(8))
    driver: VirtqueueDriver[int] = VirtqueueDriver(memory, 8, addrs)

    def add(token: int) -> None:
        data.write(0, b"hello")
        driver.add([Buffer.at(data.window_id, 0, 5)], [Buffer.at(data.window_id, 128, 8)], token)
        driver.publish()  # its barrier flushes both windows; no SIGNAL is sent

    add(1)  # not live yet: the chain waits for DRIVER_OK
    raw.net.run_until(lambda: False, timeout_s=0.5)
    assert driver.pending() == 0 and echo.statistics().ring_update_runs == 0
    raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK)
    assert raw.net.run_until(lambda: driver.pending() == 1, timeout_s=5.0)
    driver.collect()
    add(2)
    assert raw.net.run_until(lambda: driver.pending() == 1, timeout_s=5.0)
    assert [u.token for u in driver.collect()] == [2]
    assert echo.statistics().ring_update_runs == 1
    # Notifications disabled by the device: a ring update leaves the chain where it is.
    assert echo.notifications(0, enabled=False) is False
    add(3)
    raw.net.run_until(lambda: False, timeout_s=0.5)
    assert driver.pending() == 0 and echo.statistics().ring_update_runs == 1
    assert echo.notifications(0, enabled=True) is True  # the device's own look finds it


def test_a_ring_update_that_breaks_the_queue_needs_a_reset() -> None:
    raw = Raw(Echo())
    window = live_queue(raw)
    raw.status(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK)
    lay = split_layout(8)
    window.write(lay.avail_offset + 2, struct.pack("<H", 9))  # 9 chains in a queue of 8
    window.flush()
    assert raw.net.run_until(lambda: bool(raw.status() & S.DEVICE_NEEDS_RESET), timeout_s=5.0)
    assert raw.device.statistics().queue_broken[Fault.AVAIL_INDEX_JUMP] == 1


# -- the host driver and the entropy device, end to end -------------------------------------


class Host:
    def __init__(
        self,
        device: VirtioDevice,
        *,
        policy: FeaturePolicy | None = None,
        faults: LineFaults = CLEAN,
        seed: int = 0,
        bus_version_max: int = BUS_VERSION_MAX,
    ) -> None:
        self.clients: list[EntropyClient] = []

        def make() -> EntropyClient:
            client = EntropyClient()
            self.clients.append(client)
            return client

        self.driver = VirtioHostDriver({ENTROPY_ID: make, 42: make}, policy=policy)
        registry = DriverRegistry()
        registry.register(VIRTIO_TYPE, self.driver)
        board = Connector()
        board.add_device(device, now=0.0)
        self.device = device
        host = Bus(BusConfig(version_max=bus_version_max), drivers=registry)
        self.net = BusOverLink(board, host, seed=seed, faults=faults)

    def binding(self, state: BindingState, timeout_s: float = 30.0) -> VirtioBinding:
        assert self.net.run_until(
            lambda: any(b.state is state for b in self.driver.bindings.values()),
            timeout_s=timeout_s,
        ), [b.reason for b in self.driver.bindings.values()]
        (binding,) = self.driver.bindings.values()
        return binding


@pytest.mark.parametrize(("faults", "seed"), [(CLEAN, 0), (NOISY, 1), (NOISY, 2)])
def test_entropy_end_to_end(faults: LineFaults, seed: int) -> None:
    host = Host(Entropy(random.Random(seed)), faults=faults, seed=seed)
    binding = host.binding(BindingState.READY)
    negotiation = host.driver.negotiations()[next(iter(host.driver.bindings))]
    assert negotiation.accepted == TRANSPORT_FEATURES and negotiation.features_ok
    assert negotiation.describe() == "ok: INDIRECT_DESC EVENT_IDX VERSION_1"
    (client,) = host.clients
    client.request(binding, 1000)
    assert host.net.run_until(lambda: len(client.received) >= 1000, timeout_s=120.0)
    assert len(client.received) == 1000
    # the device filled the chains in the order offered, 64 bytes at a time
    reference = random.Random(seed)
    expected = b"".join(
        reference.randbytes(min(CHUNK_BYTES, 1000 - i)) for i in range(0, 1000, CHUNK_BYTES)
    )
    assert bytes(client.received) == expected


@pytest.mark.parametrize("version", [BUS_VERSION_WINDOWS - 1, BUS_VERSION_WINDOWS])
def test_from_bus_v4_the_driver_notifies_by_its_flush_alone(version: int) -> None:
    """A version 3 board gets a SIGNAL when the driver publishes; a version 4 one runs the
    queue at the end of the flush of its available ring, and no SIGNAL is sent."""
    host = Host(Entropy(random.Random(3)), faults=NOISY, seed=3, bus_version_max=version)
    binding = host.binding(BindingState.READY)
    assert host.net.host.version == version
    (client,) = host.clients
    before = host.net.host.statistics().sent.get(SignalNotify, 0)
    for _ in range(5):  # one request at a time: each publish must wake the device by itself
        wanted = len(client.received) + 3 * CHUNK_BYTES
        client.request(binding, 3 * CHUNK_BYTES)
        assert host.net.run_until(lambda: len(client.received) >= wanted, timeout_s=60.0)  # noqa: B023
    kicks = host.net.host.statistics().sent.get(SignalNotify, 0) - before
    assert len(client.received) == 15 * CHUNK_BYTES
    assert (kicks >= 5) if version < BUS_VERSION_WINDOWS else (kicks == 0)
    assert host.device.statistics().ring_update_runs >= (5 if version >= BUS_VERSION_WINDOWS else 0)


def test_the_policy_masks_what_the_driver_may_accept() -> None:
    host = Host(Entropy(random.Random(1)), policy=FeaturePolicy(allowed=~EVENT_IDX))
    binding = host.binding(BindingState.READY)
    assert binding.negotiation is not None
    assert binding.negotiation.accepted == VERSION_1 | INDIRECT
    assert host.device.features == VERSION_1 | INDIRECT
    assert not binding.queues[0].event_idx


def test_a_required_feature_missing_fails_the_device() -> None:
    host = Host(Entropy(random.Random(1)), policy=FeaturePolicy(required=VERSION_1 | 1 << 7))
    binding = host.binding(BindingState.FAILED)
    assert binding.negotiation is not None and binding.negotiation.features_ok is False
    assert host.device.status & S.FAILED


def test_a_refused_feature_set_fails_the_device() -> None:
    echo = Echo()
    echo.refuse = EVENT_IDX
    host = Host(echo)
    binding = host.binding(BindingState.FAILED)
    assert binding.negotiation is not None
    assert binding.negotiation.describe().startswith("refused")
    assert host.device.status == S.ACKNOWLEDGE | S.DRIVER | S.FAILED


def test_needs_reset_then_reinitialise() -> None:
    host = Host(Entropy(random.Random(3)))
    binding = host.binding(BindingState.READY)
    (client,) = host.clients
    ring = binding.queues[0]
    window = binding.windows["buffers"]
    # a writable buffer past the end of its window
    ring.add([], [Buffer.at(window.window_id, window.size_bytes - 4, 8)], 0)
    binding.kick(0)
    host.binding(BindingState.NEEDS_RESET)
    assert host.device.status & S.DEVICE_NEEDS_RESET
    assert host.device.statistics().queue_broken[Fault.OUT_OF_WINDOW] == 1
    lost = binding.reinitialise(now=host.net.now)
    assert lost == [0]
    binding = host.binding(BindingState.READY)
    assert host.device.status == S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK
    client.wanted = 0
    client.received.clear()
    client.request(binding, 100)
    assert host.net.run_until(lambda: len(client.received) == 100, timeout_s=30.0)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*VirtioFunc, 0, 99]),
            st.one_of(
                st.binary(max_size=40),
                st.integers(0, 0xFF).map(lambda v: bytes([v])),
                st.tuples(st.integers(0, 5), st.integers(0, 2**32 - 1)).map(
                    lambda t: struct.pack("<II", *t)
                ),
            ),
        ),
        max_size=40,
    )
)
def test_any_call_sequence_only_gets_statuses(calls: list[tuple[int, bytes]]) -> None:
    """Whatever a host sends, the device answers with a status and never raises."""
    echo = Echo()
    handle = Handle(handle_id=1, device_id=1, version=1)
    assert echo.open(handle, now=0.0) == Status.OK
    for func, payload in calls:
        status, reply = echo.call(handle, func, payload, now=0.0)
        assert isinstance(status, int) and isinstance(reply, bytes)
        assert status >= 0 or reply in (b"",) or func == VirtioFunc.SET_STATUS
        assert not echo.status & ~0xFF
