"""Properties of a driver and a device sharing memory (hypothesis).

* Random sequences of add / publish / pop / push / publish / collect and of
  the suppression switches, from ring indices near the 16-bit wrap: every
  chain is popped in the order added, with its bytes, and every used buffer
  is collected exactly once, in the order pushed, with its written length.
* Event-driven runs where each side acts only when notified (or when
  re-arming says work arrived meanwhile): nothing stalls, with or without
  EVENT_IDX and indirect descriptors — no notification is ever lost.
* ``vring_need_event`` against the spec's wording, and the notification rate
  with EVENT_IDX under sustained load.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vqrig import ChainSpec, Rig, pattern

from ira.virtio import Chain, vring_need_event

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
EXAMPLES = max(150, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")) // 10)
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

bases = st.one_of(st.just(0), st.integers(0xFFFF - 40, 0xFFFF), st.integers(0, 0xFFFF))
sizes = st.sampled_from([1, 2, 4, 8, 16])


def chain_specs(indirect: bool) -> st.SearchStrategy[ChainSpec]:
    return st.builds(
        ChainSpec,
        st.lists(st.integers(1, 8), max_size=2).map(tuple),
        st.lists(st.integers(0, 8), max_size=2).map(tuple),
        st.booleans() if indirect else st.just(False),
    ).filter(lambda s: bool(s.readable or s.writable))


# -- vring_need_event ----------------------------------------------------------


def need_event_reference(event: int, new: int, old: int) -> bool:
    """§2.7.7, §2.7.10: notify iff ``event`` is one of old, old+1, ..., new-1 (mod 2**16)."""
    written = (new - old) % 0x10000
    return (event - old) % 0x10000 < written


u16 = st.integers(0, 0xFFFF)


@settings(max_examples=max(1500, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0"))), deadline=None)
@given(event=u16, new=u16, old=u16)
def test_vring_need_event_agrees_with_the_reference(event: int, new: int, old: int) -> None:
    assert vring_need_event(event, new, old) == need_event_reference(event, new, old)


def test_vring_need_event_across_the_wrap() -> None:
    for old in range(0xFFF0, 0x10010):
        for step in range(0, 40):
            new = (old + step) & 0xFFFF
            for event in range(old - 4, old + 44):
                e, o = event & 0xFFFF, old & 0xFFFF
                assert vring_need_event(e, new, o) == need_event_reference(e, new, o)
    # the spec's example: used_event 0 notifies when index 0 is written, and again
    # when it is written 65536 buffers later; not in between
    assert vring_need_event(0, 1, 0) and not vring_need_event(0, 2, 1)
    assert not vring_need_event(0, 0, 0xFFFF) and vring_need_event(0, 1, 0xFFFF)


# -- random sequences ----------------------------------------------------------


@dataclass
class Model:
    """What the test expects, kept beside the driver and the device."""

    rig: Rig
    specs: dict[int, ChainSpec] = field(default_factory=dict)
    added: list[int] = field(default_factory=list)
    published: int = 0
    popped: list[int] = field(default_factory=list)
    held: list[tuple[int, Chain]] = field(default_factory=list)
    pushed: list[tuple[int, int]] = field(default_factory=list)
    pushed_published: int = 0
    collected: list[tuple[int, int]] = field(default_factory=list)
    next_token: int = 0

    def add(self, spec: ChainSpec) -> None:
        if not self.rig.can_add(spec):
            return
        token = self.next_token
        self.next_token += 1
        self.specs[token] = spec
        self.rig.add(token, spec)
        self.added.append(token)

    def publish(self) -> None:
        self.rig.driver.publish()
        self.published = len(self.added)

    def pop(self, count: int) -> None:
        for _ in range(count):
            chain = self.rig.device.pop()
            expected = len(self.popped) < self.published
            assert (chain is not None) == expected
            if chain is None:
                return
            token = self.added[len(self.popped)]
            spec = self.specs[token]
            assert [s.length for s in chain.readable] == list(spec.readable)
            assert [s.length for s in chain.writable] == list(spec.writable)
            assert chain.indirect == spec.indirect
            assert self.rig.device.read(chain) == pattern(token, sum(spec.readable))
            self.popped.append(token)
            self.held.append((token, chain))

    def push(self, pick: int, fraction: int) -> None:
        if not self.held:
            return
        token, chain = self.held.pop(pick % len(self.held))
        written = chain.writable_bytes * fraction // 8
        self.rig.device.write(chain, pattern(token, written, salt=3))
        self.rig.device.push(chain, written)
        self.pushed.append((token, written))

    def device_publish(self) -> None:
        self.rig.device.publish()
        self.pushed_published = len(self.pushed)

    def collect(self, limit: int) -> None:
        used = self.rig.driver.collect(limit)
        start = len(self.collected)
        expected = self.pushed[start : min(self.pushed_published, start + limit)]
        got = [(u.token, u.written_bytes) for u in used]
        assert got == expected
        for token, written in got:
            assert self.rig.written(token, written) == pattern(token, written, salt=3)
            self.rig.release(token)
        self.collected += got

    def drain(self) -> None:
        self.publish()
        self.pop(self.rig.queue_size)
        while self.held:
            self.push(0, 8)
        self.device_publish()
        self.collect(self.rig.queue_size)


def ops(indirect: bool) -> st.SearchStrategy[list[tuple[object, ...]]]:
    op = st.one_of(
        st.tuples(st.just("add"), chain_specs(indirect)),
        st.tuples(st.just("publish")),
        st.tuples(st.just("pop"), st.integers(1, 4)),
        st.tuples(st.just("push"), st.integers(0, 64), st.integers(0, 8)),
        st.tuples(st.just("device_publish")),
        st.tuples(st.just("collect"), st.integers(1, 8)),
        st.tuples(
            st.sampled_from(
                [
                    "disable_callbacks",
                    "enable_callbacks",
                    "enable_callbacks_delayed",
                    "disable_notifications",
                    "enable_notifications",
                ]
            )
        ),
    )
    return st.lists(op, min_size=10, max_size=200)


@SETTINGS
@given(data=st.data(), n=sizes, base=bases, event_idx=st.booleans(), indirect=st.booleans())
def test_random_sequences_use_every_buffer_once_in_order(
    data: st.DataObject, n: int, base: int, event_idx: bool, indirect: bool
) -> None:
    rig = Rig(n, event_idx=event_idx, indirect=indirect, base=base)
    model = Model(rig)
    for name, *args in data.draw(ops(indirect)):
        match name:
            case "add":
                model.add(args[0])  # type: ignore[arg-type]
            case "publish":
                model.publish()
            case "pop":
                model.pop(args[0])  # type: ignore[arg-type]
            case "push":
                model.push(args[0], args[1])  # type: ignore[arg-type]
            case "device_publish":
                model.device_publish()
            case "collect":
                model.collect(args[0])  # type: ignore[arg-type]
            case "disable_callbacks":
                rig.driver.disable_callbacks()
            case "enable_callbacks":
                rig.driver.enable_callbacks()
            case "enable_callbacks_delayed":
                rig.driver.enable_callbacks_delayed()
            case "disable_notifications":
                rig.device.disable_notifications()
            case "enable_notifications":
                rig.device.enable_notifications()
    model.drain()
    assert model.popped == model.added
    assert sorted(t for t, _ in model.collected) == model.added
    assert model.collected == model.pushed
    assert rig.driver.outstanding == 0 and rig.driver.num_free == n
    assert rig.device.broken is None and rig.driver.broken is None


def test_the_indices_wrap_past_65535_in_a_small_queue() -> None:
    rig = Rig(4, event_idx=True, base=0xFFF0)
    model = Model(rig)
    spec = ChainSpec((3,), (2,))
    for _ in range(600):  # 1200 chains through a queue of 4 from 16 before the wrap
        model.add(spec)
        model.add(spec)
        model.drain()
    assert len(model.collected) == 1200 and model.collected == model.pushed


# -- event-driven: each side acts only when notified ---------------------------


@dataclass
class Run:
    """Counts of one event-driven run."""

    buffers: int = 0
    kicks: int = 0
    interrupts: int = 0

    @property
    def notifications_per_buffer(self) -> float:
        return (self.kicks + self.interrupts) / self.buffers


ASLEEP, RUNNING, DRAINED = "asleep", "running", "drained"


def event_driven(
    rig: Rig,
    rng: random.Random,
    total: int,
    *,
    budget: int = 4,
    delayed: bool = False,
    weights: tuple[int, ...] = (4, 2, 2, 1, 2, 2, 2, 1),
) -> Run:
    """Move ``total`` chains; each side runs only when notified or when re-arming says so.

    Each side is ASLEEP until a notification wakes it, then RUNNING with
    notifications disabled, taking up to ``budget`` chains a turn; when it
    finds the ring empty it is DRAINED, and a later turn re-arms
    notifications, going back to sleep unless re-arming reports that work
    arrived meanwhile.  The other side may act between any two turns (the
    window a missing re-check would lose a notification in).  The driver
    adds in batches and kicks when ``publish()`` says so; the device
    completes held chains in random order at random later turns.  The run
    fails if everything is quiet before every chain has been collected.
    """
    run = Run()
    kick = interrupt = False
    device = driver = ASLEEP
    held: list[Chain] = []
    collected: list[int] = []
    next_token = 0
    specs = [ChainSpec((4,), (4,)), ChainSpec((1, 2), (3,)), ChainSpec((), (8,))]

    def produce() -> None:
        nonlocal kick, next_token
        for _ in range(rng.randint(1, 3)):
            spec = rng.choice(specs)
            if not rig.can_add(spec):
                spec = specs[-1]
            if next_token == total or not rig.can_add(spec):
                break
            rig.add(next_token, spec)
            next_token += 1
        if rig.driver.publish():
            run.kicks += 1
            kick = True

    def deliver_kick() -> None:
        nonlocal kick, device
        if device == ASLEEP:
            rig.device.disable_notifications()
        kick, device = False, RUNNING

    def device_turn() -> None:
        nonlocal device
        for _ in range(budget):
            chain = rig.device.pop()
            if chain is None:
                device = DRAINED
                return
            held.append(chain)

    def device_rearm() -> None:
        nonlocal device
        device = RUNNING if rig.device.enable_notifications() else ASLEEP
        if device == RUNNING:
            rig.device.disable_notifications()

    def complete() -> None:
        nonlocal interrupt
        rng.shuffle(held)
        for _ in range(rng.randint(1, len(held))):
            chain = held.pop()
            rig.device.push(chain, chain.writable_bytes)
        if rig.device.publish():
            run.interrupts += 1
            interrupt = True

    def deliver_interrupt() -> None:
        nonlocal interrupt, driver
        if driver == ASLEEP:
            rig.driver.disable_callbacks()
        interrupt, driver = False, RUNNING

    def driver_turn() -> None:
        nonlocal driver
        used = rig.driver.collect(budget)
        for u in used:
            collected.append(u.token)
            rig.release(u.token)
        if len(used) < budget:
            driver = DRAINED

    def driver_rearm() -> None:
        nonlocal driver
        enable = rig.driver.enable_callbacks_delayed if delayed else rig.driver.enable_callbacks
        driver = RUNNING if enable() else ASLEEP
        if driver == RUNNING:
            rig.driver.disable_callbacks()

    while True:
        possible = [
            (next_token < total and rig.can_add(specs[-1]), produce),  # room for one more
            (kick, deliver_kick),
            (device == RUNNING, device_turn),
            (device == DRAINED, device_rearm),
            (bool(held), complete),
            (interrupt, deliver_interrupt),
            (driver == RUNNING, driver_turn),
            (driver == DRAINED, driver_rearm),
        ]
        actions = [(w, a) for w, (ok, a) in zip(weights, possible, strict=True) if ok]
        if not actions:
            break
        (action,) = rng.choices([a for _, a in actions], [w for w, _ in actions])
        action()
    assert sorted(collected) == list(range(total)), (
        f"stalled after {len(collected)} of {total}: lost notification"
    )
    run.buffers = total
    return run


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=sizes,
    base=bases,
    event_idx=st.booleans(),
    indirect=st.booleans(),
    delayed=st.booleans(),
    budget=st.integers(1, 8),
)
def test_no_notification_is_lost(
    seed: int, n: int, base: int, event_idx: bool, indirect: bool, delayed: bool, budget: int
) -> None:
    rig = Rig(n, event_idx=event_idx, indirect=indirect, base=base)
    event_driven(rig, random.Random(seed), 60, budget=budget, delayed=delayed)
    assert rig.device.broken is None and rig.driver.broken is None


def test_event_idx_needs_well_under_one_notification_per_buffer() -> None:
    """Sustained load: the driver keeps the ring full, both sides work in batches."""
    rates = {}
    for event_idx in (False, True):
        total = Run()
        for seed in range(5):
            rig = Rig(64, event_idx=event_idx)
            run = event_driven(
                rig,
                random.Random(seed),
                2000,
                budget=16,
                delayed=True,
                weights=(6, 1, 1, 1, 1, 1, 1, 1),
            )
            total.buffers += run.buffers
            total.kicks += run.kicks
            total.interrupts += run.interrupts
        rates[event_idx] = total.notifications_per_buffer
    assert rates[True] < 0.2, rates
    assert rates[True] < rates[False] / 2, rates
