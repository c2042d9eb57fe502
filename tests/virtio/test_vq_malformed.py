"""A hostile driver (and a hostile device) writing raw ring bytes: refused, counted, never a crash.

The test writes the descriptor table and the available ring itself, as a
driver that does not follow the rules would, and checks that the device
refuses each kind of malformed chain with ``QueueBroken`` naming the fault,
counts it once, and stays broken (the transport then sets NEEDS_RESET).
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vqrig import IN, OUT, RING, TABLES, ChainSpec, Rig

from ira.errors import LocalProtocolError
from ira.virtio import Fault, MemoryMap, QueueBroken, VirtqueueDevice, make_addr
from ira.virtio.memory import Memory
from ira.virtio.ring import DescFlags, Descriptor

N = 8
NEXT, WRITE, INDIRECT = DescFlags.NEXT, DescFlags.WRITE, DescFlags.INDIRECT
#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
EXAMPLES = max(300, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))


def put_desc(
    rig: Rig, index: int, window: int, offset: int, length: int, flags: int, nxt: int = 0
) -> None:
    at = rig.layout.desc_offset + 16 * index
    rig.ring.data[at : at + 16] = Descriptor(make_addr(window, offset), length, flags, nxt).encode()


def put_table(rig: Rig, offset: int, entries: list[tuple[int, int, int, int, int]]) -> None:
    raw = b"".join(Descriptor(make_addr(w, o), n, f, x).encode() for w, o, n, f, x in entries)
    rig.tables.data[offset : offset + len(raw)] = raw


def offer(rig: Rig, *heads: int, idx: int | None = None) -> None:
    """Put ``heads`` in the available ring and move avail.idx past them."""
    a = rig.layout.avail_offset
    (old,) = struct.unpack_from("<H", rig.ring.data, a + 2)
    for i, head in enumerate(heads):
        struct.pack_into("<H", rig.ring.data, a + 4 + 2 * ((old + i) % rig.queue_size), head)
    struct.pack_into(
        "<H", rig.ring.data, a + 2, (old + len(heads)) & 0xFFFF if idx is None else idx
    )


def refused(rig: Rig, fault: Fault) -> None:
    with pytest.raises(QueueBroken) as info:
        rig.device.pop()
    assert info.value.fault is fault
    assert rig.device.broken is info.value
    # broken for good, counted once
    with pytest.raises(QueueBroken):
        rig.device.pop()
    with pytest.raises(QueueBroken):
        rig.device.publish()
    assert rig.device.statistics().faults[fault] == 1


def test_avail_index_running_ahead_of_the_queue() -> None:
    rig = Rig(N)
    offer(rig, 0, idx=N + 1)
    refused(rig, Fault.AVAIL_INDEX_JUMP)


def test_head_outside_the_table() -> None:
    rig = Rig(N)
    offer(rig, N)
    refused(rig, Fault.HEAD_OUT_OF_RANGE)


def test_next_outside_the_table() -> None:
    rig = Rig(N)
    put_desc(rig, 0, OUT, 0, 4, NEXT, N)
    offer(rig, 0)
    refused(rig, Fault.NEXT_OUT_OF_RANGE)


@pytest.mark.parametrize("cycle", [[0], [0, 1], [2, 5, 7, 3]])
def test_loops(cycle: list[int]) -> None:
    rig = Rig(N)
    for i, index in enumerate(cycle):
        put_desc(rig, index, OUT, 0, 4, NEXT, cycle[(i + 1) % len(cycle)])
    offer(rig, cycle[0])
    refused(rig, Fault.DESCRIPTOR_LOOP)


def test_a_chain_longer_than_the_device_allows() -> None:
    rig = Rig(N, max_chain=2)
    put_desc(rig, 0, OUT, 0, 1, NEXT, 1)
    put_desc(rig, 1, OUT, 1, 1, NEXT, 2)
    put_desc(rig, 2, OUT, 2, 1, 0)
    offer(rig, 0)
    refused(rig, Fault.CHAIN_TOO_LONG)


class HugeMemory:
    """A 4 GiB window of zeros that is never allocated, readable by the device."""

    window_id = 8
    size_bytes = 0xFFFF_FFFF

    def read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def write(self, offset: int, data: bytes) -> None:
        raise LocalProtocolError("read-only")

    def writable(self, offset: int, length: int) -> bool:
        return False

    def flush(self) -> None:
        pass


def test_more_than_four_gigabytes() -> None:
    rig = Rig(N)
    rig.device_memory.add(HugeMemory())
    put_desc(rig, 0, 8, 0, 0xFFFF_FFFF, NEXT, 1)
    put_desc(rig, 1, 8, 0, 2, 0)
    offer(rig, 0)
    refused(rig, Fault.CHAIN_TOO_MANY_BYTES)


def test_a_descriptor_the_device_still_holds() -> None:
    rig = Rig(N)
    put_desc(rig, 0, OUT, 0, 4, NEXT, 1)
    put_desc(rig, 1, IN, 0, 4, WRITE)
    put_desc(rig, 2, OUT, 0, 4, NEXT, 1)
    offer(rig, 0)
    assert rig.device.pop() is not None
    offer(rig, 2)  # shares descriptor 1 with the chain in flight
    refused(rig, Fault.DESCRIPTOR_IN_USE)


def test_writable_before_readable() -> None:
    rig = Rig(N)
    put_desc(rig, 0, IN, 0, 4, WRITE | NEXT, 1)
    put_desc(rig, 1, OUT, 0, 4, 0)
    offer(rig, 0)
    refused(rig, Fault.WRITABLE_BEFORE_READABLE)


@pytest.mark.parametrize(
    ("window", "offset", "length"),
    [(9, 0, 1), (OUT, 0, N * 64 + 1), (OUT, N * 64, 1), (OUT, 0xFFFF_FFFF, 2), (0, 0, 1)],
)
def test_outside_every_window(window: int, offset: int, length: int) -> None:
    rig = Rig(N)
    put_desc(rig, 0, window, offset, length, 0)
    offer(rig, 0)
    refused(rig, Fault.OUT_OF_WINDOW)


@pytest.mark.parametrize("window", [OUT, RING, TABLES])
def test_a_writable_buffer_the_device_may_not_write(window: int) -> None:
    rig = Rig(N)
    put_desc(rig, 0, window, 0, 4, WRITE)
    offer(rig, 0)
    refused(rig, Fault.NOT_DEVICE_WRITABLE)


def test_indirect_without_the_feature() -> None:
    rig = Rig(N)
    put_table(rig, 0, [(OUT, 0, 4, 0, 0)])
    put_desc(rig, 0, TABLES, 0, 16, INDIRECT)
    offer(rig, 0)
    refused(rig, Fault.INDIRECT_NOT_NEGOTIATED)


def test_indirect_with_next() -> None:
    rig = Rig(N, indirect=True)
    put_table(rig, 0, [(OUT, 0, 4, 0, 0)])
    put_desc(rig, 0, TABLES, 0, 16, INDIRECT | NEXT, 1)
    put_desc(rig, 1, OUT, 0, 4, 0)
    offer(rig, 0)
    refused(rig, Fault.INDIRECT_WITH_NEXT)


def test_indirect_inside_an_indirect_table() -> None:
    rig = Rig(N, indirect=True)
    put_table(rig, 0, [(OUT, 0, 4, NEXT, 1), (TABLES, 0, 32, INDIRECT, 0)])
    put_desc(rig, 0, TABLES, 0, 32, INDIRECT)
    offer(rig, 0)
    refused(rig, Fault.NESTED_INDIRECT)


@pytest.mark.parametrize("length", [0, 8, 17, 40])
def test_tables_of_broken_descriptors(length: int) -> None:
    rig = Rig(N, indirect=True)
    put_desc(rig, 0, TABLES, 0, length, INDIRECT)
    offer(rig, 0)
    refused(rig, Fault.BAD_INDIRECT_TABLE)


@pytest.mark.parametrize(
    ("entries", "fault"),
    [
        ([(OUT, 0, 4, NEXT, 1), (OUT, 0, 4, NEXT, 0)], Fault.DESCRIPTOR_LOOP),
        ([(OUT, 0, 4, NEXT, 2), (OUT, 0, 4, 0, 0)], Fault.NEXT_OUT_OF_RANGE),
        ([(IN, 0, 4, WRITE | NEXT, 1), (OUT, 0, 4, 0, 0)], Fault.WRITABLE_BEFORE_READABLE),
        ([(OUT, 0, 4, WRITE, 0)], Fault.NOT_DEVICE_WRITABLE),
        ([(5, 0, 4, 0, 0)], Fault.OUT_OF_WINDOW),
    ],
)
def test_malformed_chains_inside_indirect_tables(
    entries: list[tuple[int, int, int, int, int]], fault: Fault
) -> None:
    rig = Rig(N, indirect=True)
    put_table(rig, 0, entries)
    put_desc(rig, 0, TABLES, 0, 16 * len(entries), INDIRECT)
    offer(rig, 0)
    refused(rig, fault)


def test_indirect_tables_longer_than_the_queue_or_outside_a_window() -> None:
    rig = Rig(2, indirect=True)
    put_desc(rig, 0, TABLES, 0, 16 * 3, INDIRECT)
    offer(rig, 0)
    refused(rig, Fault.CHAIN_TOO_LONG)
    rig = Rig(2, indirect=True)
    put_desc(rig, 0, TABLES, 16 * 11, 32, INDIRECT)  # the region holds 12 descriptors
    offer(rig, 0)
    refused(rig, Fault.OUT_OF_WINDOW)


def test_what_the_spec_allows_is_accepted() -> None:
    """Direct descriptors then one indirect; WRITE on the indirect descriptor is ignored."""
    rig = Rig(N, indirect=True)
    put_desc(rig, 0, OUT, 0, 2, NEXT, 1)
    put_desc(rig, 1, TABLES, 0, 48, INDIRECT | WRITE)
    put_table(rig, 0, [(OUT, 2, 3, NEXT, 2), (IN, 0, 4, WRITE, 0), (OUT, 5, 1, NEXT, 1)])
    put_desc(rig, 2, OUT, 0, 0, 0)  # a zero-length buffer
    offer(rig, 0, 2)
    first = rig.device.pop()
    assert first is not None and first.indirect
    assert [(s.window_id, s.offset, s.length) for s in first.readable] == [
        (OUT, 0, 2),
        (OUT, 2, 3),
        (OUT, 5, 1),
    ]
    assert [(s.window_id, s.offset, s.length) for s in first.writable] == [(IN, 0, 4)]
    second = rig.device.pop()
    assert second is not None and second.readable_bytes == 0 and not second.writable
    assert rig.device.broken is None


class CountingMemory:
    """A device's view that counts reads of each 16-byte descriptor slot."""

    def __init__(self, inner: Memory, desc_end: int) -> None:
        self.inner = inner
        self.desc_end = desc_end
        self.reads: list[int] = []

    @property
    def window_id(self) -> int:
        return self.inner.window_id

    @property
    def size_bytes(self) -> int:
        return self.inner.size_bytes

    def read(self, offset: int, size: int) -> bytes:
        if offset < self.desc_end:
            self.reads.append(offset // 16)
        return self.inner.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self.inner.write(offset, data)

    def writable(self, offset: int, length: int) -> bool:
        return self.inner.writable(offset, length)

    def flush(self) -> None:
        self.inner.flush()


def test_each_descriptor_is_read_once_and_the_copy_is_what_counts() -> None:
    rig = Rig(N)
    spy = CountingMemory(rig.ring.device, rig.layout.avail_offset)
    memory = MemoryMap([spy, rig.out.device, rig.inb.device])
    device = VirtqueueDevice(memory, N, rig.addresses)
    rig.add(1, ChainSpec((1, 2, 3), (4, 5)))
    rig.driver.publish()
    chain = device.pop()
    assert chain is not None
    assert sorted(spy.reads) == sorted(set(spy.reads)) and len(spy.reads) == 5
    before = chain.writable
    rig.ring.data[: 16 * N] = bytes(16 * N)  # the driver scribbles over the table
    assert chain.writable == before
    device.push(chain, 9)


def test_a_device_that_lies_breaks_the_driver_side() -> None:
    u = Rig(N).layout.used_offset

    def lying(idx: int, head: int, length: int) -> Fault:
        rig = Rig(N)
        rig.add(1, ChainSpec((1,), (4,)))
        rig.driver.publish()
        struct.pack_into("<HII", rig.ring.data, u + 2, idx, head, length)
        with pytest.raises(QueueBroken) as info:
            rig.driver.collect()
        with pytest.raises(QueueBroken):
            rig.driver.publish()
        return info.value.fault

    assert lying(2, 0, 0) is Fault.USED_INDEX_JUMP
    assert lying(1, 5, 0) is Fault.USED_ID_UNKNOWN
    assert lying(1, 0, 5) is Fault.USED_LEN_TOO_LONG


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=st.binary(min_size=16 * N, max_size=16 * N),
    ring=st.lists(st.integers(0, 0xFFFF), min_size=N, max_size=N),
    idx=st.integers(0, 0xFFFF),
    tables=st.binary(min_size=0, max_size=128),
    indirect=st.booleans(),
    structured=st.lists(
        st.tuples(
            st.integers(0, N - 1),
            st.sampled_from([OUT, IN, TABLES, RING, 7]),
            st.integers(0, 600),
            st.integers(0, 80),
            st.integers(0, 7),
            st.integers(0, N),
        ),
        max_size=12,
    ),
)
def test_garbage_rings_only_give_chains_or_queue_broken(
    table: bytes,
    ring: list[int],
    idx: int,
    tables: bytes,
    indirect: bool,
    structured: list[tuple[int, int, int, int, int, int]],
) -> None:
    rig = Rig(N, indirect=indirect, max_chain=N)
    lay = rig.layout
    rig.ring.data[: 16 * N] = table
    for index, window, offset, length, flags, nxt in structured:  # plausible descriptors
        put_desc(rig, index, window, offset, length, flags, nxt)
    rig.tables.data[: len(tables)] = tables
    for i, head in enumerate(ring):
        struct.pack_into("<H", rig.ring.data, lay.avail_offset + 4 + 2 * i, head % (N + 2))
    struct.pack_into("<H", rig.ring.data, lay.avail_offset + 2, idx % (2 * N))
    memory = rig.device_memory
    try:
        for _ in range(N + 1):
            chain = rig.device.pop()
            if chain is None:
                break
            for seg in chain.readable + chain.writable:
                assert memory.contains(seg.addr, seg.length)
            for seg in chain.writable:
                assert memory.contains(seg.addr, seg.length, write=True)
            assert len(chain.readable) + len(chain.writable) <= N
            rig.device.read(chain)
            rig.device.write(chain, bytes(chain.writable_bytes))
            rig.device.push(chain, chain.writable_bytes)
        rig.device.publish()
    except QueueBroken as exc:
        assert rig.device.broken is exc
        assert sum(rig.device.statistics().faults.values()) == 1
    except LocalProtocolError as exc:  # pragma: no cover - would be a bug in the device
        raise AssertionError(f"the device misused itself: {exc}") from exc
