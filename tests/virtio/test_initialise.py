"""The §3.1.1 sequence alone: ``initialise()`` played against a scripted device.

No bus and no runner: the test resumes the generator with each step's outcome
by hand, as ``SequenceRunner`` would, and reads the steps, what the owner was
told on the way and what the sequence returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ira.busmodel.window import Side, Window
from ira.virtio.calls import (
    EVENT_SHM,
    ConfigRead,
    ConfigReadReply,
    DeviceFeatures,
    EmptyReply,
    FeaturesReply,
    QueueEnable,
    QueueMax,
    QueueMaxReply,
    QueueSet,
    Reply,
    Request,
    SetDriverFeatures,
    SetStatus,
    StatusReply,
    encode,
)
from ira.virtio.client import VirtioClient, WindowSpec
from ira.virtio.features import (
    FEATURE_WORDS,
    DeviceStatus,
    Feature,
    FeaturePolicy,
    Negotiation,
    feature_word,
)
from ira.virtio.initialise import Initialisation, Initialised, initialise, read_config
from ira.virtio.memory import WindowMemory
from ira.virtio.steps import Attach, Call, InitFailed, Outcome, ResetNeeded, Steps

S = DeviceStatus


class Client(VirtioClient):
    supported_features = Feature.VERSION_1.mask | Feature.EVENT_IDX.mask
    queue_sizes = (64, 1024)
    windows = (WindowSpec("tx", 512), WindowSpec("rx", 256, device_writable=True))


@dataclass
class Windows:
    made: list[Window] = field(default_factory=list)

    def create_window(
        self, size_bytes: int, *, device_offset: int = 0, device_length: int = 0
    ) -> Window:
        window = Window(
            10 + len(self.made),
            size_bytes,
            side=Side.HOST,
            device_offset=device_offset,
            device_length=device_length,
        )
        self.made.append(window)
        return window


@dataclass
class Device:
    """Answers every request as a well-behaved device would, unless told otherwise."""

    offered: int = Feature.VERSION_1.mask | Feature.EVENT_IDX.mask | Feature.INDIRECT_DESC.mask
    keep_features_ok: bool = True
    needs_reset_at_driver_ok: bool = False
    queue_max: int = 256
    status: int = 0

    def answer(self, request: Request) -> Reply:
        match request:
            case SetStatus(status=bits):
                self.status = bits
                if not self.keep_features_ok:
                    self.status &= ~S.FEATURES_OK
                if bits & S.DRIVER_OK and self.needs_reset_at_driver_ok:
                    self.status |= S.DEVICE_NEEDS_RESET
                return StatusReply(self.status)
            case DeviceFeatures(select=select):
                return FeaturesReply((self.offered >> (32 * select)) & 0xFFFF_FFFF)
            case QueueMax():
                return QueueMaxReply(self.queue_max)
            case ConfigRead(length=length):
                return ConfigReadReply(3, bytes(range(length)))
            case SetDriverFeatures() | QueueSet() | QueueEnable():
                return EmptyReply()
        raise AssertionError(f"unexpected {request}")


@dataclass
class Run:
    """Plays a sequence to its end; records the steps and what the owner was told."""

    device: Device = field(default_factory=Device)
    steps: list[Call | Attach] = field(default_factory=list)
    negotiations: list[Negotiation] = field(default_factory=list)
    attached: list[Window] = field(default_factory=list)
    configured: list[bytes] = field(default_factory=list)

    def play(self, sequence: Initialisation) -> Initialised:
        outcome: Outcome | None = None
        while True:
            try:
                step = next(sequence) if outcome is None else sequence.send(outcome)
            except StopIteration as end:
                result: Initialised = end.value
                return result
            self.steps.append(step)
            if isinstance(step, Attach):
                outcome = Outcome(0, b"")
            else:
                reply = self.device.answer(step.request)
                outcome = Outcome(0, encode(reply), step.request.func)

    def configure(self) -> Steps:
        assert len(self.attached) == 0  # before any window (step 7, then the queues)
        reply = yield from read_config(4)
        self.configured.append(reply.data)

    def initialise(self, bus: Windows, policy: FeaturePolicy | None = None) -> Initialisation:
        return initialise(
            bus,
            Client(),
            policy or FeaturePolicy(),
            configure=self.configure,
            negotiated=self.negotiations.append,
            attached=lambda step: self.attached.append(step.window),
        )


def requests(run: Run) -> list[Request]:
    return [step.request for step in run.steps if isinstance(step, Call)]


def test_the_sequence_in_the_order_of_the_spec() -> None:
    run, bus = Run(), Windows()
    done = run.play(run.initialise(bus))

    event, ring0, ring1, tx, rx = bus.made
    accepted = Feature.VERSION_1.mask | Feature.EVENT_IDX.mask
    ack_driver = S.ACKNOWLEDGE | S.DRIVER
    words = range(FEATURE_WORDS)
    features: list[Request] = [DeviceFeatures(w) for w in words]
    features += [SetDriverFeatures(w, feature_word(accepted, w)) for w in words]
    head = [SetStatus(0), SetStatus(S.ACKNOWLEDGE), SetStatus(ack_driver), *features]
    head += [SetStatus(ack_driver | S.FEATURES_OK), ConfigRead(0, 4)]
    assert requests(run)[: len(head)] == head
    assert requests(run)[-1] == SetStatus(ack_driver | S.FEATURES_OK | S.DRIVER_OK)
    assert [(s.shm_id, s.window, s.signal) for s in run.steps if isinstance(s, Attach)] == [
        (EVENT_SHM, event, True),
        (1, ring0, True),
        (2, ring1, True),
        (3, tx, False),
        (4, rx, False),
    ]
    assert [type(r) for r in requests(run)[len(head) : -1]] == [QueueMax, QueueSet, QueueEnable] * 2

    offered = Device().offered
    negotiation = Negotiation(offered, offered, Client.supported_features, accepted, True)
    assert run.negotiations == [negotiation] and run.configured == [bytes(range(4))]
    assert run.attached == [event, ring0, ring1, tx, rx]

    assert done.negotiation == negotiation and done.event_window is event
    assert [q.queue_size for q in done.queues] == [64, 256]  # cut to the device's largest
    assert dict(done.windows) == {"tx": tx, "rx": rx}
    assert dict(done.ring_windows) == {ring0.window_id: 0, ring1.window_id: 1}
    assert [m.window for m in done.memory if isinstance(m, WindowMemory)] == [ring0, ring1, tx, rx]


def test_a_required_feature_missing_sets_failed_and_gives_up() -> None:
    run = Run(Device(offered=Feature.EVENT_IDX.mask))
    with pytest.raises(InitFailed, match="a required feature is missing"):
        run.play(run.initialise(Windows()))
    assert requests(run)[-1] == SetStatus(S.ACKNOWLEDGE | S.DRIVER | S.FAILED)
    [negotiation] = run.negotiations
    assert not negotiation.features_ok and run.attached == []


def test_features_refused_by_the_device_set_failed_and_give_up() -> None:
    run = Run(Device(keep_features_ok=False))
    with pytest.raises(InitFailed, match="the device refused the features"):
        run.play(run.initialise(Windows()))
    assert requests(run)[-1] == SetStatus(S.ACKNOWLEDGE | S.DRIVER | S.FAILED)
    [negotiation] = run.negotiations
    assert not negotiation.features_ok and run.attached == []


def test_a_missing_queue_gives_up_after_the_windows_attached_so_far() -> None:
    run, bus = Run(Device(queue_max=0)), Windows()
    with pytest.raises(InitFailed, match="the device has no queue 0"):
        run.play(run.initialise(bus))
    assert run.attached == bus.made[:1]  # the event window, to detach at the next reset


def test_needs_reset_at_driver_ok() -> None:
    run = Run(Device(needs_reset_at_driver_ok=True))
    with pytest.raises(ResetNeeded, match="DEVICE_NEEDS_RESET at DRIVER_OK"):
        run.play(run.initialise(Windows()))
