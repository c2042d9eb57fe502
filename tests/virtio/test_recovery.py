"""A device that needs a reset is brought back by the host, with a bounded backoff.

virtio-rng over a simulated link (fake clock, nothing sleeps): a malformed
chain makes the board's device set DEVICE_NEEDS_RESET; the host logs it,
resets and re-initialises the device after a short wait, and reads go on.  A
device that fails every time is reset with doubling waits and then given up.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest
from linkrig import BusOverLink

from ira.busmodel import Bus, Connector, DriverRegistry
from ira.link.simulate import LineFaults
from ira.virtio import Buffer
from ira.virtio.calls import VIRTIO_TYPE
from ira.virtio.device import VirtqueueDevice
from ira.virtio.entropy import ENTROPY_ID, Entropy, EntropyClient
from ira.virtio.features import DeviceStatus
from ira.virtio.host import BindingState, RecoveryPolicy, VirtioBinding, VirtioHostDriver
from ira.virtio.ring import Fault, QueueBroken

S = DeviceStatus
LIVE = S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK


class Broken(Entropy):
    """An entropy device whose queue breaks at the first notification, every time."""

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        raise QueueBroken(Fault.DESCRIPTOR_LOOP, "broken on purpose")


class Host:
    def __init__(self, device: Entropy, recovery: RecoveryPolicy | None = None) -> None:
        self.clients: list[EntropyClient] = []

        def make() -> EntropyClient:
            self.clients.append(EntropyClient())
            return self.clients[-1]

        self.driver = VirtioHostDriver({ENTROPY_ID: make}, recovery=recovery)
        registry = DriverRegistry()
        registry.register(VIRTIO_TYPE, self.driver)
        board = Connector()
        board.add_device(device, now=0.0)
        self.device = device
        self.net = BusOverLink(board, Bus(drivers=registry), seed=0, faults=LineFaults())

    @property
    def binding(self) -> VirtioBinding:
        (binding,) = self.driver.bindings.values()
        return binding

    def until(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        assert self.net.run_until(condition, timeout_s=timeout_s), self.binding.reason

    def state(self, state: BindingState) -> bool:
        return any(b.state is state for b in self.driver.bindings.values())

    def read(self, size_bytes: int) -> None:
        (client,) = self.clients
        client.wanted = 0
        client.received.clear()
        client.request(self.binding, size_bytes)
        self.until(lambda: len(client.received) == size_bytes)

    def break_queue(self) -> None:
        """A writable buffer past the end of its window: the device must refuse the chain."""
        window = self.binding.windows["buffers"]
        self.binding.queues[0].add([], [Buffer.at(window.window_id, window.size_bytes - 4, 8)], 0)
        self.binding.kick(0)


def test_a_malformed_chain_resets_the_device_and_reads_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = Host(Entropy(random.Random(1)))
    host.until(lambda: host.state(BindingState.READY))
    host.read(100)
    caplog.set_level(logging.INFO, logger="ira.virtio.binding")
    host.break_queue()
    host.until(lambda: host.binding.state is BindingState.NEEDS_RESET)
    binding = host.binding
    assert binding.failures == 1 and binding.resets == 0
    assert binding.failed_at is not None and binding.retry_at is not None
    assert binding.retry_at - binding.failed_at == pytest.approx(0.1)
    host.until(lambda: binding.state is BindingState.READY)
    assert binding.resets == 1 and binding.retry_at is None
    assert host.device.status == LIVE
    stats = host.device.statistics()
    assert stats.queue_broken[Fault.OUT_OF_WINDOW] == 1 and stats.resets == 1
    host.read(300)
    (info,) = host.driver.devices()
    assert (info.failures, info.resets, info.failed_at) == (1, 1, binding.failed_at)
    assert info.reason == "the device set DEVICE_NEEDS_RESET"
    assert host.driver.statistics().resets == 1
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            logging.WARNING,
            "virtio device 1 (entropy) needs a reset: the device set DEVICE_NEEDS_RESET; "
            "resetting it in 0.1 s (reset 1 of at most 6 in a row)",
        ),
        (
            logging.INFO,
            "virtio device 1 (entropy) ready again after 1 reset(s) in a row: "
            "ok: INDIRECT_DESC EVENT_IDX VERSION_1",
        ),
    ]


def test_a_device_that_fails_every_time_is_reset_with_doubling_waits_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ira.virtio.binding")
    host = Host(Broken(random.Random(1)))
    host.until(lambda: host.state(BindingState.FAILED), timeout_s=120.0)
    binding = host.binding
    assert binding.resets == 6 and binding.failures == 7
    assert binding.reason == (
        "gave up after 6 resets in a row: the device set DEVICE_NEEDS_RESET at DRIVER_OK"
    )
    planned = [
        r.getMessage().split("resetting it in ")[1]
        for r in caplog.records
        if "resetting it in" in r.getMessage()
    ]
    assert planned == [
        f"{delay} s (reset {n} of at most 6 in a row)"
        for n, delay in enumerate(("0.1", "0.2", "0.4", "0.8", "1.6", "3.2"), start=1)
    ]
    (last,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert last.getMessage() == f"virtio device 1 (entropy) failed: {binding.reason}"
    # the board is told: FAILED in its status, one line there, counted
    host.until(lambda: bool(host.device.status & S.FAILED))
    assert host.device.status == LIVE | S.DEVICE_NEEDS_RESET | S.FAILED
    assert host.device.statistics().driver_failed == 1
    board_lines = [r.getMessage() for r in caplog.records if r.name == "ira.virtio.transport"]
    assert board_lines[-1] == (
        "virtio device 4: the driver gave up on it (FAILED, after DEVICE_NEEDS_RESET); "
        "it waits for a reset"
    )
    # given up: nothing more happens, however long the board stays
    device_resets = host.device.statistics().resets
    host.net.run_until(lambda: False, timeout_s=60.0)
    assert binding.state is BindingState.FAILED and binding.resets == 6
    assert binding.retry_at is None and host.driver.next_deadline() is None
    assert host.device.statistics().resets == device_resets
    (info,) = host.driver.devices()
    assert info.state is BindingState.FAILED and info.reason == binding.reason
    # asked by hand, the host tries again (a new row)
    binding.reinitialise(now=host.net.now)
    host.until(lambda: binding.resets == 7 or binding.state is BindingState.NEEDS_RESET)
    assert binding.state is BindingState.NEEDS_RESET and binding.retry_at is not None


def test_a_binding_that_fails_while_a_reset_waits_keeps_no_timer() -> None:
    """A failure other than a reset-need (e.g. a configuration re-read that fails)
    while a reset is planned: the binding is FAILED and its timer is gone, instead of
    a deadline in the past that fires at every turn."""
    host = Host(Entropy(random.Random(3)))
    host.until(lambda: host.state(BindingState.READY))
    host.break_queue()
    host.until(lambda: host.state(BindingState.NEEDS_RESET))
    binding = host.binding
    assert binding.retry_at is not None
    binding._fail("configuration re-read failed")  # what such a failing call ends in
    assert binding.state is BindingState.FAILED
    assert binding.retry_at is None and host.driver.next_deadline() is None


def test_a_healthy_spell_starts_a_new_row() -> None:
    host = Host(Entropy(random.Random(2)), RecoveryPolicy(max_resets=1, healthy_s=5.0))
    host.until(lambda: host.state(BindingState.READY))
    for n in (1, 2, 3):
        host.break_queue()
        host.until(lambda: host.binding.state is BindingState.NEEDS_RESET)
        host.until(lambda: host.binding.state is BindingState.READY)
        assert host.binding.resets == n
        host.net.run_until(lambda: False, timeout_s=6.0)  # ready for longer than healthy_s
    host.read(64)
    # without the healthy spell the second failure of a row gives up
    host.break_queue()
    host.until(lambda: host.binding.resets == 4 and host.binding.state is BindingState.READY)
    host.break_queue()
    host.until(lambda: host.binding.state is BindingState.FAILED)
    assert host.binding.reason.startswith("gave up after 1 resets in a row")


def test_without_automatic_resets_the_binding_waits_for_reinitialise() -> None:
    host = Host(Entropy(random.Random(3)), RecoveryPolicy(max_resets=0))
    host.until(lambda: host.state(BindingState.READY))
    host.break_queue()
    host.until(lambda: host.binding.state is BindingState.NEEDS_RESET)
    host.net.run_until(lambda: False, timeout_s=30.0)
    assert host.binding.state is BindingState.NEEDS_RESET and host.binding.resets == 0
    assert host.binding.failed_at is not None and host.binding.retry_at is None
    host.binding.reinitialise(now=host.net.now)
    host.until(lambda: host.binding.state is BindingState.READY)
    host.read(64)
