"""virtio-rng end to end over real ptys: ``BoardService`` and ``HostClient`` through the null-modem.

Discovery, feature negotiation and DRIVER_OK, then reads; a reset and
re-initialisation; a board restart in the middle of use.  The null-modem is
unthrottled, so each test takes well under a second.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator

import pytest

from ira.busmodel.events import BusEvent, DeviceAdded, DeviceRemoved, WindowUpdated
from ira.cli.main import main
from ira.cli.virtio import entropy_binding, read_entropy
from ira.errors import DevcallTimeout
from ira.runtime import BoardService, HostClient
from ira.runtime.profile import DeviceSpec, Profile
from ira.tools.nullmodem import NullModem
from ira.virtio import BindingState, Buffer, DeviceStatus, Feature
from ira.virtio.calls import VIRTIO_TYPE
from ira.virtio.counters import DeviceStatistics
from ira.virtio.device import VirtqueueDevice
from ira.virtio.entropy import CHUNK_BYTES, Entropy
from ira.virtio.features import TRANSPORT_FEATURES
from ira.virtio.host import VirtioBinding
from ira.virtio.ring import Fault, QueueBroken
from ira.wire.bus import SignalNotify

pytestmark = pytest.mark.timeout(10)

S = DeviceStatus
LIVE = S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK


def profile(seed: int) -> Profile:
    return Profile(
        "rng-board",
        (
            DeviceSpec("echo", "echo"),
            DeviceSpec("virtio-rng", "virtio-rng", (("seed", seed),)),
        ),
    )


def expected(seed: int, *reads: int) -> list[bytes]:
    """What reads of ``reads`` bytes, one after the other, get from ``Entropy`` seeded with
    ``seed``: the host offers chains of up to CHUNK_BYTES, filled in the order offered."""
    rng = random.Random(seed)
    return [
        b"".join(rng.randbytes(min(CHUNK_BYTES, n - i)) for i in range(0, n, CHUNK_BYTES))
        for n in reads
    ]


class Recorder:
    """The host's bus events, from its loop thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[BusEvent] = []

    def __call__(self, client: HostClient, event: BusEvent) -> None:
        with self.lock:
            self.events.append(event)

    def clear(self) -> None:
        with self.lock:
            self.events.clear()

    def types(self, kind: type[DeviceAdded] | type[DeviceRemoved]) -> list[str]:
        with self.lock:
            return [e.device.type for e in self.events if isinstance(e, kind)]


def rng_device(board: BoardService) -> Entropy:
    device_id = board.devices()["virtio-rng"]
    device = board.call(lambda c: c.devices()[device_id])
    assert isinstance(device, Entropy)
    return device


def pushed(stats: DeviceStatistics) -> int:
    """Chains the device pushed on its queue 0 (which must be set up)."""
    queue = stats.queues[0]
    assert queue is not None, "queue 0 is not set up"
    return queue.chains_pushed


def device_state(board: BoardService, device: Entropy) -> tuple[int, DeviceStatistics]:
    """The device's status and statistics, read on the board's loop thread."""
    return board.call(lambda c: (int(device.status), device.statistics()))


def binding_state(host: HostClient, binding: VirtioBinding) -> BindingState:
    return host.runtime.call(lambda: binding.state)


@pytest.fixture
def cable() -> Iterator[NullModem]:
    with NullModem() as nm:
        yield nm


def test_rng_through_discovery_negotiation_and_driver_ok(cable: NullModem) -> None:
    with BoardService(cable.path_a, profile(seed=7)) as board, HostClient(cable.path_b) as host:
        first, second = expected(7, 1000, 64)
        assert read_entropy(host, 1000, timeout_s=5.0) == first
        (info,) = host.virtio_devices()
        assert info.virtio_id == 4 and info.state is BindingState.READY
        assert info.negotiation is not None and info.negotiation.features_ok
        assert info.negotiation.accepted == TRANSPORT_FEATURES
        found = host.find(VIRTIO_TYPE)
        assert found.device_id == info.device_id
        assert found.attributes == {"virtio_device_id": "4"}
        status, stats = device_state(board, rng_device(board))
        assert status == LIVE and stats.driver_ok == 1
        assert pushed(stats) == -(-1000 // CHUNK_BYTES)
        # the binding was negotiated once and keeps serving reads
        assert read_entropy(host, 64) == second
        binding = entropy_binding(host, timeout_s=1.0)
        assert host.runtime.call(lambda: binding.queues[0].event_idx)


def test_reset_and_reinitialisation(cable: NullModem) -> None:
    with BoardService(cable.path_a, profile(seed=3)) as board, HostClient(cable.path_b) as host:
        assert len(read_entropy(host, 200)) == 200
        binding = entropy_binding(host, timeout_s=5.0)
        device = rng_device(board)

        # a plain reset and re-initialisation, in fresh windows
        lost = host.runtime.call(lambda: binding.reinitialise(now=time.monotonic()))
        assert lost == []
        assert entropy_binding(host, timeout_s=5.0) is binding
        status, stats = device_state(board, device)
        assert status == LIVE and stats.resets == 1 and stats.driver_ok == 2
        assert len(read_entropy(host, 300)) == 300

        # a chain the device must refuse: DEVICE_NEEDS_RESET, and the host resets the
        # device by itself and initialises it again
        def break_queue() -> None:
            window = binding.windows["buffers"]
            binding.queues[0].add([], [Buffer.at(window.window_id, window.size_bytes - 4, 8)], 0)
            binding.kick(0)

        host.runtime.call(break_queue)
        assert host.wait_until(
            lambda: (binding.resets == 1 and binding.state is BindingState.READY) or None,
            timeout_s=5.0,
        )
        status, stats = device_state(board, device)
        assert stats.queue_broken[Fault.OUT_OF_WINDOW] == 1 and stats.needs_reset == 1
        assert status == LIVE and stats.resets == 2 and stats.driver_ok == 3
        (info,) = host.virtio_devices()
        assert (info.state, info.failures, info.resets) == (BindingState.READY, 1, 1)
        assert info.failed_at is not None and info.failed_at <= time.monotonic()
        assert len(read_entropy(host, 500)) == 500


def test_board_restart_mid_use_drops_and_rediscovers_the_device(cable: NullModem) -> None:
    seen = Recorder()
    with HostClient(cable.path_b, on_event=seen) as host:
        with BoardService(cable.path_a, profile(seed=1)):
            assert [read_entropy(host, 100)] == expected(1, 100)
            # the board's flushes of its ring window reach listeners too
            with seen.lock:
                assert any(isinstance(e, WindowUpdated) for e in seen.events)
            old = entropy_binding(host, timeout_s=5.0)
        seen.clear()
        # the board is gone mid-use: a dead board is a silent link, the read cannot finish
        with pytest.raises(DevcallTimeout):
            read_entropy(host, 100, timeout_s=0.3)
        assert binding_state(host, old) is BindingState.READY
        with BoardService(cable.path_a, profile(seed=2)) as board:
            assert host.wait_until(
                lambda: (VIRTIO_TYPE in seen.types(DeviceAdded)) or None, timeout_s=5.0
            )
            assert VIRTIO_TYPE in seen.types(DeviceRemoved)
            assert binding_state(host, old) is BindingState.FAILED
            assert host.runtime.call(lambda: old.reason) == "device removed"
            new = entropy_binding(host, timeout_s=5.0)
            assert new is not old
            # a fresh device, freshly negotiated: its bytes start from its own seed
            assert [read_entropy(host, 100)] == expected(2, 100)
            status, stats = device_state(board, rng_device(board))
            assert status == LIVE and stats.driver_ok == 1
            (info,) = host.virtio_devices()
            assert info.negotiation is not None
            assert info.negotiation.accepted & Feature.EVENT_IDX.mask


def test_the_commands(cable: NullModem, capsys: pytest.CaptureFixture[str]) -> None:
    with BoardService(cable.path_a, profile(seed=5)):
        assert main(["virtio", "rng", cable.path_b, "-n", "40", "--hex"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert main(["host", "list", cable.path_b]) == 0
        table = capsys.readouterr().out.splitlines()
        assert main(["host", "list", cable.path_b, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["devices"]
    assert [bytes.fromhex(line) for line in lines] == [
        expected(5, 40)[0][:32],
        expected(5, 40)[0][32:],
    ]
    assert table[2].split() == [
        "2",
        "virtio",
        "1",
        "virtio_device_id=4",
        "features=INDIRECT_DESC,EVENT_IDX,VERSION_1",
    ]
    assert rows[1]["virtio"] == {
        "id": 4,
        "state": "ready",
        "features": ["INDIRECT_DESC", "EVENT_IDX", "VERSION_1"],
        "offered": ["INDIRECT_DESC", "EVENT_IDX", "VERSION_1"],
        "features_ok": True,
        "reason": "",
        "failures": 0,
        "resets": 0,
        "failed_s_ago": None,
        "reset_in_s": None,
    }
    assert "virtio" not in rows[0]


class Broken(Entropy):
    """An entropy device whose queue breaks whenever it is used."""

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        raise QueueBroken(Fault.DESCRIPTOR_LOOP, "broken on purpose")


def test_host_list_shows_a_device_that_needs_resets(
    cable: NullModem, capsys: pytest.CaptureFixture[str]
) -> None:
    with BoardService(cable.path_a, profile(seed=5)) as board:
        board.call(lambda c: c.add_device(Broken(random.Random(1)), now=time.monotonic()))
        assert main(["host", "list", cable.path_b]) == 0
        table = capsys.readouterr().out.splitlines()
        assert main(["host", "list", cable.path_b, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["devices"]
    broken = table[3].split(" virtio_reason=")
    assert broken[1] == '"the device set DEVICE_NEEDS_RESET at DRIVER_OK"'
    words = broken[0].split()
    assert words[:5] == ["3", "virtio", "1", "virtio_device_id=4", "virtio_state=needs_reset"]
    assert words[6:8] == ["virtio_failures=1", "virtio_resets=0"]
    assert words[8].startswith("virtio_failed=") and words[8].endswith("s_ago")
    assert words[9] == "virtio_reset_in=0.1s" or words[9].startswith("virtio_reset_in=0.0")
    assert "virtio_failures" not in table[2]  # the healthy rng device says nothing of it
    info = rows[2]["virtio"]
    assert (info["state"], info["failures"], info["resets"]) == ("needs_reset", 1, 0)
    assert 0 <= info["failed_s_ago"] < 5 and 0 <= info["reset_in_s"] <= 0.1


def test_raw_bytes_and_a_board_without_the_device(
    cable: NullModem, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    with BoardService(cable.path_a, profile(seed=6)):
        assert main(["virtio", "rng", cable.path_b, "-n", "100"]) == 0
        assert [capsysbinary.readouterr().out] == expected(6, 100)
    with BoardService(cable.path_a):
        assert main(["virtio", "rng", cable.path_b, "--timeout", "2"]) == 1
        err = capsysbinary.readouterr().err.decode()
    assert err.count("\n") == 1 and "the board has no virtio-rng device" in err


def test_sustained_reads_take_well_under_one_signal_per_buffer(cable: NullModem) -> None:
    """The queue kept full for 64 KiB: bus SIGNALs per buffer, both ways, stay far below 1
    (bench/virtio.py measures the same against a run without EVENT_IDX)."""
    with BoardService(cable.path_a, profile(seed=4)) as board, HostClient(cable.path_b) as host:
        read_entropy(host, 16 * CHUNK_BYTES)
        device = rng_device(board)
        buffers_before = pushed(device_state(board, device)[1])
        kicks_before = host.statistics().sent.get(SignalNotify, 0)
        interrupts_before = board.statistics().sent.get(SignalNotify, 0)
        assert len(read_entropy(host, 64 * 1024)) == 64 * 1024
        buffers = pushed(device_state(board, device)[1]) - buffers_before
        kicks = host.statistics().sent.get(SignalNotify, 0) - kicks_before
        interrupts = board.statistics().sent.get(SignalNotify, 0) - interrupts_before
    assert buffers == 64 * 1024 // CHUNK_BYTES
    assert (kicks + interrupts) / buffers < 0.5
    assert kicks == 0  # bus v4: the end of the driver's flush is the device's notification
