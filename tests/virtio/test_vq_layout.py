"""The split virtqueue layout against the spec's sizes, offsets and alignments (virtio 1.2 §2.7)."""

from __future__ import annotations

import struct

import pytest
from vqrig import IN, OUT, RING, Rig

from ira.errors import LocalProtocolError
from ira.virtio import (
    Buffer,
    MemoryMap,
    QueueAddresses,
    Region,
    VirtqueueDevice,
    make_addr,
    split_addr,
    split_layout,
)
from ira.virtio.ring import (
    DescFlags,
    Descriptor,
    avail_event_offset,
    check_queue_size,
    legacy_layout,
    used_event_offset,
)

SIZES = [1 << k for k in range(16)]  # 1 ... 32768


def align(x: int, a: int) -> int:
    return -(-x // a) * a


@pytest.mark.parametrize("n", SIZES)
def test_split_layout_matches_the_spec_table(n: int) -> None:
    lay = split_layout(n)
    # §2.7: Descriptor Table 16*n @16, Available Ring 6+2n @2, Used Ring 6+8n @4
    assert (lay.desc_offset, lay.desc_bytes) == (0, 16 * n)
    assert (lay.avail_offset, lay.avail_bytes) == (16 * n, 6 + 2 * n)
    assert lay.used_offset == align(16 * n + 6 + 2 * n, 4)
    assert lay.used_bytes == 6 + 8 * n
    assert lay.size_bytes == lay.used_offset + 6 + 8 * n
    assert lay.desc_offset % 16 == 0 and lay.avail_offset % 2 == 0 and lay.used_offset % 4 == 0
    # used_event is the last field of the available ring, avail_event of the used ring
    assert used_event_offset(n) == 4 + 2 * n == lay.avail_bytes - 2
    assert avail_event_offset(n) == 4 + 8 * n == lay.used_bytes - 2


@pytest.mark.parametrize("n", SIZES)
def test_legacy_layout_is_the_spec_virtq_size(n: int) -> None:
    lay = legacy_layout(n)
    # §2.7.2: ALIGN(sizeof(desc)*qsz + sizeof(u16)*(3+qsz)) + ALIGN(sizeof(u16)*3 + 8*qsz)
    assert lay.used_offset == align(16 * n + 2 * (3 + n), 4096)
    assert lay.size_bytes == align(16 * n + 2 * (3 + n), 4096) + align(2 * 3 + 8 * n, 4096)
    assert lay.avail_offset == 16 * n and lay.used_offset % 4096 == 0


# (queue size, avail offset, used offset, total) computed by hand from the table
GOLDEN = [
    (1, 16, 24, 38),
    (2, 32, 44, 66),
    (4, 64, 80, 118),
    (8, 128, 152, 222),
    (256, 4096, 4616, 6670),
    (1024, 16384, 18440, 26638),
    (32768, 524288, 589832, 851982),
]


@pytest.mark.parametrize(("n", "avail", "used", "total"), GOLDEN)
def test_split_layout_golden(n: int, avail: int, used: int, total: int) -> None:
    lay = split_layout(n)
    assert (lay.avail_offset, lay.used_offset, lay.size_bytes) == (avail, used, total)


def test_legacy_layout_golden() -> None:
    lay = legacy_layout(256)
    assert (lay.avail_offset, lay.used_offset, lay.size_bytes) == (4096, 8192, 12288)
    assert legacy_layout(1).size_bytes == 8192


@pytest.mark.parametrize("n", [0, 3, 6, 100, 32767, 65536, -1])
def test_queue_sizes_must_be_powers_of_two_up_to_32768(n: int) -> None:
    with pytest.raises(LocalProtocolError):
        check_queue_size(n)
    with pytest.raises(LocalProtocolError):
        split_layout(n)


def test_descriptor_golden_bytes() -> None:
    desc = Descriptor(make_addr(0x01020304, 0x0A0B0C0D), 0x11223344, 0x0007, 0x5566)
    raw = desc.encode()
    assert raw.hex() == "0d0c0b0a040302014433221107006655"
    assert Descriptor.decode(raw) == desc
    assert split_addr(desc.addr) == (0x01020304, 0x0A0B0C0D)
    assert [f.value for f in DescFlags] == [1, 2, 4]


def test_addresses_name_a_window_and_an_offset() -> None:
    assert make_addr(3, 0x10) == 0x3_0000_0010
    assert split_addr(0xFFFF_FFFF_FFFF_FFFF) == (0xFFFF_FFFF, 0xFFFF_FFFF)
    for bad in ((-1, 0), (1 << 32, 0), (0, 1 << 32)):
        with pytest.raises(LocalProtocolError):
            make_addr(*bad)


def test_fields_land_at_the_spec_offsets() -> None:
    """A chain written by the driver and used by the device, read back as raw bytes."""
    n = 8
    rig = Rig(n, event_idx=True)
    lay = rig.layout
    raw = rig.ring.data
    rig.out.driver.write(0, b"abc")
    head = rig.driver.add([Buffer.at(OUT, 0, 3)], [Buffer.at(IN, 0, 5)], 1)
    rig.driver.publish()
    # descriptors: head -> next, readable then WRITE
    first = Descriptor.decode(bytes(raw[16 * head : 16 * head + 16]))
    assert first == Descriptor(make_addr(OUT, 0), 3, DescFlags.NEXT, first.next)
    second = Descriptor.decode(bytes(raw[16 * first.next : 16 * first.next + 16]))
    assert second == Descriptor(make_addr(IN, 0), 5, DescFlags.WRITE, 0)
    a = lay.avail_offset
    flags, idx, ring0 = struct.unpack_from("<HHH", raw, a)
    assert (flags, idx, ring0) == (0, 1, head)
    chain = rig.device.pop()
    assert chain is not None
    rig.device.write(chain, b"12345")
    rig.device.push(chain, 5)
    rig.device.publish()
    u = lay.used_offset
    assert struct.unpack_from("<HHII", raw, u) == (0, 1, head, 5)
    # avail_event follows the used ring's entries; the device asks for the next chain
    assert struct.unpack_from("<H", raw, u + 4 + 8 * n)[0] == 1
    rig.driver.collect()
    # used_event follows the available ring's entries; the driver asks for the next use
    assert struct.unpack_from("<H", raw, a + 4 + 2 * n)[0] == 1


def test_parts_must_be_aligned_inside_and_the_right_writer() -> None:
    n = 4
    lay = split_layout(n)
    ring = Region(
        RING, lay.size_bytes + 64, device_offset=lay.used_offset, device_length=lay.used_bytes
    )
    memory = MemoryMap([ring.device])

    def device(desc: int, avail: int, used: int) -> None:
        addrs = QueueAddresses(make_addr(RING, desc), make_addr(RING, avail), make_addr(RING, used))
        VirtqueueDevice(memory, n, addrs)

    device(lay.desc_offset, lay.avail_offset, lay.used_offset)
    bad = [
        (8, lay.avail_offset, lay.used_offset),  # descriptor table not 16-aligned
        (0, lay.avail_offset + 1, lay.used_offset),  # available ring not 2-aligned
        (0, lay.avail_offset, lay.used_offset + 2),  # used ring not 4-aligned
        (0, lay.avail_offset, lay.used_offset + 4),  # used ring not all the device's
        (0, lay.used_offset, lay.used_offset),  # overlapping
        (0, lay.size_bytes + 64, lay.used_offset),  # outside the window
    ]
    for parts in bad:
        with pytest.raises(LocalProtocolError):
            device(*parts)
    with pytest.raises(LocalProtocolError):  # a window that is not mapped
        VirtqueueDevice(memory, n, QueueAddresses.in_window(9, lay))
