"""Driver and device over shared memory: chains, buffers, indirect tables, suppression, detach."""

from __future__ import annotations

import pytest
from vqrig import IN, OUT, TABLES, ChainSpec, Rig, pattern

from ira.errors import LocalProtocolError
from ira.virtio import Buffer, UsedBuffer
from ira.virtio.counters import DeviceRingStatistics, DriverRingStatistics


def roundtrip(rig: Rig, token: int, spec: ChainSpec, written: int) -> UsedBuffer[int]:
    rig.add(token, spec)
    rig.driver.publish()
    chain = rig.device.pop()
    assert chain is not None
    assert rig.device.read(chain) == pattern(token, sum(spec.readable))
    rig.device.write(chain, pattern(token, written, salt=1))
    rig.device.push(chain, written)
    rig.device.publish()
    (used,) = rig.driver.collect()
    assert rig.written(token, written) == pattern(token, written, salt=1)
    rig.release(token)
    return used


@pytest.mark.parametrize("indirect", [False, True])
def test_a_chain_goes_round(indirect: bool) -> None:
    rig = Rig(8, indirect=indirect)
    spec = ChainSpec((3, 5), (4, 2, 6), indirect=indirect)
    used = roundtrip(rig, 7, spec, 9)
    assert used == UsedBuffer(7, 9)
    assert rig.driver.num_free == 8 and rig.driver.outstanding == 0
    assert rig.device.in_flight == 0


def test_chain_shapes_and_partial_reads_and_writes() -> None:
    rig = Rig(8)
    rig.add(1, ChainSpec((2, 3, 4), (3, 3)))
    rig.driver.publish()
    chain = rig.device.pop()
    assert chain is not None and not chain.indirect
    assert [s.length for s in chain.readable] == [2, 3, 4]
    assert [s.length for s in chain.writable] == [3, 3]
    assert (chain.readable_bytes, chain.writable_bytes) == (9, 6)
    assert rig.device.read(chain, 1, 5) == pattern(1, 9)[1:6]
    rig.device.write(chain, b"xyz", offset=2)  # across the boundary of two buffers
    assert rig.written(1, 5)[2:] == b"xyz"
    with pytest.raises(LocalProtocolError):
        rig.device.write(chain, b"1234567")
    with pytest.raises(LocalProtocolError):
        rig.device.read(chain, 5, 5)
    with pytest.raises(LocalProtocolError):
        rig.device.push(chain, 7)  # more than the chain can hold
    rig.device.push(chain, 6)
    with pytest.raises(LocalProtocolError):
        rig.device.push(chain, 0)  # not held any more


def test_readable_only_and_writable_only_chains() -> None:
    rig = Rig(2)
    assert roundtrip(rig, 1, ChainSpec((5,), ()), 0) == UsedBuffer(1, 0)
    assert roundtrip(rig, 2, ChainSpec((), (5,)), 5) == UsedBuffer(2, 5)


def test_the_driver_refuses_what_it_may_not_add() -> None:
    rig = Rig(4)
    with pytest.raises(LocalProtocolError):  # no buffer at all
        rig.driver.add([], [], 0)
    with pytest.raises(LocalProtocolError):  # more descriptors than are free
        rig.driver.add([Buffer.at(OUT, 0, 1)] * 5, [], 0)
    with pytest.raises(LocalProtocolError):  # indirect not negotiated
        rig.driver.add([Buffer.at(OUT, 0, 1)], [], 0, indirect_table=Buffer.at(TABLES, 0, 16))
    rig2 = Rig(4, indirect=True)
    with pytest.raises(LocalProtocolError):  # a table in the device's bytes
        rig2.driver.add([Buffer.at(OUT, 0, 1)], [], 0, indirect_table=Buffer.at(IN, 0, 16))
    with pytest.raises(LocalProtocolError):  # the table must be exactly 16 bytes a buffer
        rig2.driver.add([Buffer.at(OUT, 0, 1)], [], 0, indirect_table=Buffer.at(TABLES, 0, 32))
    assert rig2.driver.num_free == 4


def test_the_ring_fills_and_drains_in_order() -> None:
    n = 8
    rig = Rig(n)
    spec = ChainSpec((1,), (1,))
    for token in range(n // 2):
        rig.add(token, spec)
    assert not rig.can_add(spec) and rig.driver.num_free == 0
    rig.driver.publish()
    chains = [rig.device.pop() for _ in range(n // 2)]
    assert rig.device.pop() is None
    for chain in reversed(chains):  # the device may use chains out of order
        assert chain is not None
        rig.device.push(chain, 1)
    rig.device.publish()
    assert [u.token for u in rig.driver.collect(limit=3)] == [3, 2, 1]
    assert [u.token for u in rig.driver.collect()] == [0]
    assert rig.driver.num_free == n


def test_flags_suppress_notifications_without_event_idx() -> None:
    rig = Rig(8)
    spec = ChainSpec((1,), (1,))
    rig.add(1, spec)
    assert rig.driver.publish() is True
    rig.device.disable_notifications()
    rig.add(2, spec)
    assert rig.driver.publish() is False  # used.flags NO_NOTIFY
    assert rig.device.enable_notifications() is True  # chains are waiting: keep going
    rig.add(3, spec)
    assert rig.driver.publish() is True
    assert rig.driver.publish() is False  # nothing new
    chains = [rig.device.pop() for _ in range(3)]
    rig.driver.disable_callbacks()
    for chain in chains:
        assert chain is not None
        rig.device.push(chain, 0)
    assert rig.device.publish() is False  # avail.flags NO_INTERRUPT
    assert rig.driver.enable_callbacks() is True
    assert len(rig.driver.collect()) == 3
    assert rig.driver.enable_callbacks() is False


def test_event_idx_notifies_exactly_when_the_event_index_is_passed() -> None:
    rig = Rig(8, event_idx=True)
    spec = ChainSpec((1,), (1,))
    rig.add(1, spec)
    assert rig.driver.publish() is True  # avail_event = 0: the first chain notifies
    rig.device.disable_notifications()  # avail_event stays 0
    rig.add(2, spec)
    assert rig.driver.publish() is False
    chains = [rig.device.pop(), rig.device.pop()]
    assert rig.device.enable_notifications() is False  # avail_event = 2
    rig.add(3, spec)
    rig.add(4, spec)
    assert rig.driver.publish() is True  # idx 2 -> 4 passes avail_event 2
    # used side: used_event = 0 at start, so the first use notifies, then used_event follows
    rig.driver.disable_callbacks()
    for chain in chains:
        assert chain is not None
        rig.device.push(chain, 1)
    assert rig.device.publish() is True  # used_event 0 is in [0, 2)
    assert [u.token for u in rig.driver.collect()] == [1, 2]
    chains = [rig.device.pop(), rig.device.pop()]
    assert chains[0] is not None and chains[1] is not None
    rig.device.push(chains[0], 1)
    assert rig.device.publish() is False  # callbacks disabled: used_event stayed at 0
    assert rig.driver.enable_callbacks() is True  # used_event = 2, and one is waiting
    assert [u.token for u in rig.driver.collect()] == [3]
    rig.device.push(chains[1], 1)
    assert rig.device.publish() is True  # used_event 3 passed


def test_delayed_callbacks_wait_for_three_quarters() -> None:
    rig = Rig(8, event_idx=True)
    spec = ChainSpec((1,), ())
    for token in range(8):
        rig.add(token, spec)
    rig.driver.publish()
    assert rig.driver.enable_callbacks_delayed() is False  # used_event = 0 + 6
    notified = []
    for _ in range(8):
        chain = rig.device.pop()
        assert chain is not None
        rig.device.push(chain, 0)
        notified.append(rig.device.publish())
    assert notified == [False] * 6 + [True, False]


def test_detach_hands_back_what_was_not_used() -> None:
    rig = Rig(8)
    spec = ChainSpec((1,), ())
    for token in range(4):
        rig.add(token, spec)
    rig.driver.publish()
    chain = rig.device.pop()
    assert chain is not None
    rig.device.push(chain, 0)
    rig.device.publish()
    assert [u.token for u in rig.driver.collect()] == [0]
    assert rig.driver.detach() == [1, 2, 3]
    with pytest.raises(LocalProtocolError):
        rig.add(9, spec)


def test_statistics_count_what_happened() -> None:
    rig = Rig(4, event_idx=True)
    roundtrip(rig, 1, ChainSpec((1,), (1,)), 1)
    assert rig.driver.statistics() == DriverRingStatistics(
        chains_added=1, publishes=1, kicks=1, chains_used=1
    )
    assert rig.device.statistics() == DeviceRingStatistics(
        chains_popped=1, chains_pushed=1, publishes=1, notifications=1
    )
