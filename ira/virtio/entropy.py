"""virtio-rng over the bus: the entropy device (virtio 1.2 §5.4) and its host driver.

The device has one queue (requestq), no configuration and no device-type
features; it fills every device-writable buffer the driver offers with
random bytes.  Randomness is injected: the board passes a generator of its
choice (``random.SystemRandom()`` for real entropy, a seeded
``random.Random`` in tests).

``EntropyClient`` is the host side: ``request(n, now=...)`` queues reads of up
to ``n`` bytes in its data window and kicks; the bytes collect in
``received``.
"""

from __future__ import annotations

import random

from ira.busmodel.device import Device
from ira.busmodel.registry import (
    DeviceContext,
    DeviceSpec,
    DeviceType,
    DeviceTypes,
    Option,
    int_option,
)
from ira.virtio.device import VirtqueueDevice
from ira.virtio.driver import Buffer, UsedBuffer
from ira.virtio.host import VirtioBinding, VirtioClient, WindowSpec
from ira.virtio.transport import VirtioDevice

#: the virtio device id of an entropy source (§5)
ENTROPY_ID = 4
#: bytes of each request buffer on the host
CHUNK_BYTES = 64


class Entropy(VirtioDevice):
    """The board's entropy device."""

    virtio_id = ENTROPY_ID
    queue_sizes = (64,)

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        while (chain := queue.pop()) is not None:
            data = self.rng.randbytes(chain.writable_bytes)
            queue.write(chain, data)
            queue.push(chain, len(data))


class EntropyClient(VirtioClient):
    """The host's driver for an entropy device."""

    queue_sizes = (16,)
    windows = (WindowSpec("buffers", 16 * CHUNK_BYTES, device_writable=True),)

    def __init__(self) -> None:
        self.received = bytearray()
        self.wanted = 0
        self._free = list(range(16))

    def request(self, binding: VirtioBinding, size_bytes: int) -> None:
        """Ask for ``size_bytes`` more random bytes."""
        self.wanted += size_bytes
        self._refill(binding)

    def ready(self, binding: VirtioBinding, *, now: float) -> None:
        self._free = list(range(binding.queues[0].queue_size))
        self._refill(binding)

    def used(self, binding: VirtioBinding, index: int, used: list[UsedBuffer[object]]) -> None:
        window = binding.windows["buffers"]
        for u in used:
            slot = u.token
            assert isinstance(slot, int)
            self.received += window.read(slot * CHUNK_BYTES, u.written_bytes)
            self._free.append(slot)
        self._refill(binding)

    def _refill(self, binding: VirtioBinding) -> None:
        if not binding.queues:
            return
        queue = binding.queues[0]
        window = binding.windows["buffers"]
        outstanding = queue.outstanding * CHUNK_BYTES
        while self._free and len(self.received) + outstanding < self.wanted:
            slot = self._free.pop()
            size = min(CHUNK_BYTES, self.wanted - len(self.received) - outstanding)
            queue.add([], [Buffer.at(window.window_id, slot * CHUNK_BYTES, size)], slot)
            outstanding += size
        binding.kick(0)


def _virtio_rng(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    if spec.option("seed") is None:
        return Entropy(random.SystemRandom())
    return Entropy(random.Random(int_option(spec, "seed", 0)))


def register_device_types(types: DeviceTypes) -> None:
    """Add ``virtio-rng`` (``ira virtio rng LINK`` reads it)."""
    types.register(
        DeviceType(
            "virtio-rng",
            _virtio_rng,
            "virtio entropy (virtio 1.2 §5.4)",
            (
                Option(
                    "seed",
                    int,
                    "repeatable bytes from random.Random(seed); default: the OS's entropy",
                ),
            ),
        )
    )
