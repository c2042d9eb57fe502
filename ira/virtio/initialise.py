"""The host's DEVCALL sequences for one virtio device: §3.1.1 initialisation (DESIGN §5).

Theory of operation
-------------------

``initialise()`` is the driver side of virtio 1.2 §3.1.1 for one device, a
generator of steps (``ira.virtio.steps``) that a ``SequenceRunner``
(``ira.virtio.runner``) runs over the bus on the device's open handle:

1. reset the device (status 0, read back as 0);
2. ACKNOWLEDGE, then DRIVER;
3. read the offered features, selector by selector; apply the host's
   ``FeaturePolicy`` and the client's supported set; write the driver
   features (if a required feature is missing: FAILED);
4. set FEATURES_OK and check, in the status re-read with the reply, that the
   device kept it (else FAILED);
5. read the client's part of the configuration space (the owner's
   ``configure`` sequence, which keeps it: step 7's device-specific setup); attach the
   event window; for each queue learn its maximum size, attach a window
   holding its rings (its signal is the queue's notifications), set the
   queue up and enable it; attach the client's data windows;
6. set DRIVER_OK.

It ends by returning an ``Initialised``: what the owner (a ``VirtioBinding``)
takes over at DRIVER_OK.  It gives up by raising ``InitFailed`` (or
``ResetNeeded``), which says why.  What the owner must know before the end,
because it stays true if the sequence gives up later, is told as it happens:
the negotiation (``negotiated``, kept for tools to show) and each window
attached (``attached``, to detach it at the next reset; the event window
carries configuration changes from the moment it is attached).

Two shorter sequences serve the binding too: ``read_config`` (the
configuration bytes and their generation, at step 5 and whenever the
generation moves) and ``set_failed`` (FAILED in the device's status when
the host gives up, §2.1).

Sans-I/O: windows are made by the bus model and sent nowhere until attached.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Protocol

from ira.busmodel.window import Window
from ira.virtio.calls import (
    EVENT_BYTES,
    EVENT_SHM,
    ConfigRead,
    ConfigReadReply,
    DeviceFeatures,
    GetStatus,
    QueueEnable,
    QueueMax,
    QueueSet,
    SetDriverFeatures,
    SetStatus,
)
from ira.virtio.client import VirtioClient
from ira.virtio.driver import VirtqueueDriver
from ira.virtio.features import (
    FEATURE_WORDS,
    DeviceStatus,
    Feature,
    FeaturePolicy,
    Negotiation,
    feature_word,
)
from ira.virtio.memory import MemoryMap, WindowMemory
from ira.virtio.ring import QueueAddresses, split_layout
from ira.virtio.steps import (
    Attach,
    Call,
    InitFailed,
    Outcome,
    ResetNeeded,
    Step,
    Steps,
    decoded,
    features_of,
    queue_max_of,
    status_of,
)

S = DeviceStatus


class WindowMaker(Protocol):
    """What the sequence asks of the bus (``ira.busmodel.bus.Bus`` is one): new windows."""

    def create_window(
        self, size_bytes: int, *, device_offset: int = 0, device_length: int = 0
    ) -> Window: ...


@dataclass(frozen=True, slots=True)
class Initialised:
    """What a device initialised up to DRIVER_OK hands over to its binding."""

    #: the feature negotiation (FEATURES_OK kept)
    negotiation: Negotiation
    #: the queues, by index, ready for the client's chains
    queues: tuple[VirtqueueDriver[object], ...]
    #: the client's data windows, by name
    windows: Mapping[str, Window]
    #: every ring and data window as memory, in the order attached
    memory: MemoryMap
    #: window id -> index of the queue whose rings it holds
    ring_windows: Mapping[int, int]
    #: the event window (configuration generation and device status)
    event_window: Window


Initialisation = Generator[Step, Outcome, Initialised]


def initialise(
    bus: WindowMaker,
    client: VirtioClient,
    policy: FeaturePolicy,
    *,
    configure: Callable[[], Steps],
    negotiated: Callable[[Negotiation], None],
    attached: Callable[[Attach], None],
) -> Initialisation:
    """Initialise the device for ``client`` as §3.1.1 says (see the module docstring)."""
    reply = yield Call(SetStatus(0))
    status = status_of(reply, "reset")
    if status != 0:
        raise InitFailed(f"status {status:#x} after reset")
    for bits in (S.ACKNOWLEDGE, S.ACKNOWLEDGE | S.DRIVER):
        reply = yield Call(SetStatus(bits))
        status_of(reply, bits.name or "status")

    offered = 0
    for select in range(FEATURE_WORDS):
        reply = yield Call(DeviceFeatures(select))
        offered |= features_of(reply, "device features") << (32 * select)
    supported = client.supported_features
    accepted = policy.accept(offered, supported)
    allowed = offered & policy.allowed
    if not policy.acceptable(accepted):
        negotiated(Negotiation(offered, allowed, supported, accepted, False))
        yield Call(SetStatus(S.ACKNOWLEDGE | S.DRIVER | S.FAILED))
        raise InitFailed("a required feature is missing")
    for select in range(FEATURE_WORDS):
        word = feature_word(accepted, select)
        reply = yield Call(SetDriverFeatures(select, word))
        decoded(reply, "driver features")

    reply = yield Call(SetStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK))
    status = status_of(reply, "FEATURES_OK")
    kept = bool(status & S.FEATURES_OK)
    negotiation = Negotiation(offered, allowed, supported, accepted, kept)
    negotiated(negotiation)
    if not kept:
        yield Call(SetStatus(S(status) | S.FAILED))
        raise InitFailed("the device refused the features")

    yield from configure()
    setup = yield from _setup_windows(bus, client, negotiation, attached)

    reply = yield Call(SetStatus(S(status) | S.DRIVER_OK))
    status = status_of(reply, "DRIVER_OK")
    if status & S.DEVICE_NEEDS_RESET:
        raise ResetNeeded("the device set DEVICE_NEEDS_RESET at DRIVER_OK")
    if not status & S.DRIVER_OK:
        raise InitFailed(f"status {status:#x} after DRIVER_OK")
    return setup


def _setup_windows(
    bus: WindowMaker,
    client: VirtioClient,
    negotiation: Negotiation,
    attached: Callable[[Attach], None],
) -> Initialisation:
    """The event window, each queue in a window of its own, the client's data windows."""
    event = bus.create_window(EVENT_BYTES, device_offset=0, device_length=EVENT_BYTES)
    yield from _attach(Attach(EVENT_SHM, event, True), attached)
    memory = MemoryMap()
    rings: list[Window] = []
    sizes: list[int] = []
    for index, wanted in enumerate(client.queue_sizes):
        reply = yield Call(QueueMax(index))
        largest = queue_max_of(reply, "queue max")
        if largest == 0:
            raise InitFailed(f"the device has no queue {index}")
        size = min(wanted, largest)
        lay = split_layout(size)
        ring = bus.create_window(
            lay.size_bytes, device_offset=lay.used_offset, device_length=lay.used_bytes
        )
        yield from _attach(Attach(1 + index, ring, True), attached)
        memory.add(WindowMemory(ring))
        rings.append(ring)
        addrs = QueueAddresses.in_window(ring.window_id, lay)
        setup = QueueSet(index, size, ring.window_id, addrs.desc, addrs.avail, addrs.used)
        decoded((yield Call(setup)), "queue setup")
        decoded((yield Call(QueueEnable(index))), "queue enable")
        sizes.append(size)
    windows: dict[str, Window] = {}
    for n, spec in enumerate(client.windows):
        length = spec.size_bytes if spec.device_writable else 0
        window = bus.create_window(spec.size_bytes, device_offset=0, device_length=length)
        yield from _attach(Attach(1 + len(sizes) + n, window, False), attached)
        memory.add(WindowMemory(window))
        windows[spec.name] = window
    features = negotiation.accepted
    queues = tuple(
        VirtqueueDriver[object](
            memory,
            size,
            QueueAddresses.in_window(ring.window_id, split_layout(size)),
            event_idx=bool(features & Feature.EVENT_IDX.mask),
            indirect=bool(features & Feature.INDIRECT_DESC.mask),
        )
        for ring, size in zip(rings, sizes, strict=True)
    )
    return Initialised(
        negotiation=negotiation,
        queues=queues,
        windows=windows,
        memory=memory,
        ring_windows={ring.window_id: index for index, ring in enumerate(rings)},
        event_window=event,
    )


def read_config(size_bytes: int) -> Generator[Step, Outcome, ConfigReadReply]:
    """The first ``size_bytes`` of the configuration space, with its generation."""
    reply = decoded((yield Call(ConfigRead(0, size_bytes))), "config read")
    assert isinstance(reply, ConfigReadReply)
    if len(reply.data) != size_bytes:
        raise InitFailed(f"config read: {len(reply.data)} bytes, not {size_bytes}")
    return reply


def set_failed() -> Steps:
    """Give up on the device: set FAILED in its status (§2.1), so the board sees it too."""
    status = status_of((yield Call(GetStatus())), "status")
    if not status & S.FAILED:
        status_of((yield Call(SetStatus(S(status) | S.FAILED))), "FAILED")


def _attach(step: Attach, attached: Callable[[Attach], None]) -> Generator[Step, Outcome, None]:
    """Attach a window; once it is, tell the owner."""
    yield step
    attached(step)
