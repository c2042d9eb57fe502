"""The per-frame helpers of ira.venet.netspec against plain references built on the wire spec.

``Offloads.refuse`` (what a sender checks of its own stack's frames) and
``with_num_buffers`` are on every frame's path and written for speed; here
they are held, over generated headers, offloads and lengths, to the
straightforward versions: the header decoded with ``HEADER`` and the flags
compared as ``HdrFlags``/``GsoType``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ira.venet.netspec import Offloads, check_received, with_num_buffers
from ira.venet.vnethdr import Drop, check_frame
from ira.wire.venet import (
    ETH_HLEN,
    GSO_ECN,
    GSO_TYPE_MASK,
    HEADER,
    MAX_PACKET_BYTES,
    VLAN_HLEN,
    VNET_HDR_BYTES,
    GsoType,
    HdrFlags,
)


def reference_refuse(offloads: Offloads, frame: bytes, mtu: int) -> Drop | None:
    if len(frame) < VNET_HDR_BYTES + ETH_HLEN:
        return Drop.TRUNCATED
    flags, gso_type = HEADER.unpack_from(frame)[:2]
    if flags & ~int(HdrFlags.NEEDS_CSUM | HdrFlags.DATA_VALID):
        return Drop.BAD_FLAGS
    if flags & HdrFlags.NEEDS_CSUM and not offloads.csum:
        return Drop.BAD_FLAGS
    gso = gso_type & GSO_TYPE_MASK
    if gso != GsoType.NONE and gso not in offloads.gso_types:
        return Drop.BAD_GSO_TYPE
    if gso_type & GSO_ECN and not offloads.ecn:
        return Drop.BAD_GSO_TYPE
    limit = MAX_PACKET_BYTES if gso else ETH_HLEN + VLAN_HLEN + mtu
    return Drop.OVERSIZE if len(frame) - VNET_HDR_BYTES > limit else None


offloads = st.builds(Offloads, st.booleans(), st.booleans(), st.booleans(), st.booleans())
flag_bytes = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 0x80]), st.integers(0, 255))
gso_bytes = st.one_of(st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x84, 0x80]), st.integers(0, 255))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    head = bytes([draw(flag_bytes), draw(gso_bytes)]) + draw(st.binary(min_size=10, max_size=10))
    size = draw(st.one_of(st.integers(0, 80), st.sampled_from([1500, 1514, 1518, 1519, 9000])))
    return (head + bytes(size))[: draw(st.integers(0, VNET_HDR_BYTES + size))]


@given(offloads, frames(), st.sampled_from([68, 1500, 9000]))
def test_refuse_matches_the_reference(o: Offloads, frame: bytes, mtu: int) -> None:
    assert o.refuse(frame, mtu) == reference_refuse(o, frame, mtu)
    expected = reference_refuse(o, frame, mtu) or check_frame(frame, o.policy(mtu))
    assert check_received(frame, o, mtu) == expected


@given(st.binary(min_size=VNET_HDR_BYTES, max_size=200), st.integers(0, 0xFFFF))
def test_with_num_buffers_sets_only_that_field(frame: bytes, num_buffers: int) -> None:
    fields = list(HEADER.unpack_from(frame))
    fields[-1] = num_buffers
    expected = HEADER.pack(*fields) + frame[VNET_HDR_BYTES:]
    assert with_num_buffers(frame, num_buffers) == expected
    assert with_num_buffers(bytearray(frame), num_buffers) == expected
    assert type(with_num_buffers(frame, num_buffers)) is bytes


def test_with_num_buffers_refuses_a_frame_without_a_header() -> None:
    with pytest.raises(struct.error):
        with_num_buffers(bytes(VNET_HDR_BYTES - 1), 1)
