"""virtio-net frames (ira.wire.venet) and their checks (ira.venet.vnethdr).

Golden bytes for the header; parse/build/sizeof and compiled parity of the
schema; every reason a frame is dropped; and, over random headers and
lengths, the hand-written checks accept exactly what the construct spec
accepts.
"""

from __future__ import annotations

import os
import struct

import construct as cs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ira.errors import LocalProtocolError, RemoteProtocolError
from ira.venet.vnethdr import ALL_GSO_TYPES, PERMISSIVE, Drop, FramePolicy, check_frame
from ira.wire import venet
from ira.wire.venet import (
    ETH_HLEN,
    GSO_ECN,
    MAX_PACKET_BYTES,
    PLAIN_HEADER,
    VIRTIO_NET_FRAME,
    VIRTIO_NET_FRAME_COMPILED,
    VIRTIO_NET_HDR,
    VLAN_HLEN,
    VNET_HDR_BYTES,
    GsoType,
    HdrFlags,
    VnetFrame,
    VnetHdr,
    decode,
    decode_uncompiled,
    encode,
    pack_header,
    unpack_header,
)

#: every test here runs under `make fuzz` (-m fuzz); some scale with IRA_FUZZ_EXAMPLES
pytestmark = pytest.mark.fuzz
EXAMPLES = max(300, int(os.environ.get("IRA_FUZZ_EXAMPLES", "0")))
FAST = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)

NEEDS_CSUM = int(HdrFlags.NEEDS_CSUM)
ETH = bytes.fromhex("02000000000b02000000000a0800")


def packet(size: int) -> bytes:
    return (ETH + bytes(range(256)) * (size // 256 + 1))[:size]


# --- golden bytes ---------------------------------------------------------------------------

TSO_HDR = VnetHdr(
    flags=NEEDS_CSUM | int(HdrFlags.DATA_VALID),
    gso_type=int(GsoType.TCPV4) | GSO_ECN,
    hdr_len=66,
    gso_size=1448,
    csum_start=34,
    csum_offset=16,
    num_buffers=3,
)
TSO_BYTES = bytes.fromhex(
    "03"  # flags: NEEDS_CSUM | DATA_VALID
    "81"  # gso_type: TCPV4 | ECN
    "4200"  # hdr_len 66
    "a805"  # gso_size 1448
    "2200"  # csum_start 34
    "1000"  # csum_offset 16 (TCP's checksum field)
    "0300"  # num_buffers 3
)


def test_golden_header() -> None:
    assert pack_header(TSO_HDR) == TSO_BYTES
    assert unpack_header(TSO_BYTES) == TSO_HDR
    assert VIRTIO_NET_HDR.build(_fields(TSO_HDR)) == TSO_BYTES
    assert VIRTIO_NET_HDR.sizeof() == VNET_HDR_BYTES == len(PLAIN_HEADER)
    assert pack_header(VnetHdr()) == PLAIN_HEADER == bytes(12)


def test_golden_frame_whole_and_with_junk_after() -> None:
    frame = VnetFrame(TSO_HDR, packet(2962))
    data = encode(frame)
    assert data == TSO_BYTES + frame.packet
    assert decode(data) == frame == decode_uncompiled(data)
    # the packet runs to the end of the buffer: bytes after it are part of it
    assert decode(data + b"junk").packet == frame.packet + b"junk"


def test_decode_accepts_any_buffer_type() -> None:
    data = encode(VnetFrame(VnetHdr(), packet(60)))
    assert decode(bytearray(data)) == decode(memoryview(data)) == decode(data)


def test_the_documented_example_decodes() -> None:
    (spec,) = venet.SPEC.messages
    data = venet.SPEC.encode(spec.example)
    assert decode(data) == spec.example
    assert check_frame(data, FramePolicy(vnet_hdr=True, mtu=1500)) is None


def test_short_buffers_one_byte_at_a_time() -> None:
    data = encode(VnetFrame(VnetHdr(), packet(ETH_HLEN)))
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError, match="malformed virtio-net frame"):
            decode(data[:cut])
        assert check_frame(data[:cut], PERMISSIVE) is Drop.TRUNCATED
    with pytest.raises(RemoteProtocolError, match="no virtio-net header"):
        unpack_header(data[:11])


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode(VnetFrame(VnetHdr(gso_type=2), packet(60)))
    with pytest.raises(LocalProtocolError, match="cannot pack"):
        pack_header(VnetHdr(hdr_len=1 << 16))


# --- every reason ---------------------------------------------------------------------------


def frame(hdr: VnetHdr, size: int = 60) -> bytes:
    return pack_header(hdr) + packet(size)


TSO = VnetHdr(NEEDS_CSUM, int(GsoType.TCPV4), 54, 1448, 34, 16)
DROPPED = [
    (Drop.TRUNCATED, pack_header(VnetHdr()) + packet(13)),
    (Drop.BAD_FLAGS, frame(VnetHdr(flags=int(HdrFlags.RSC_INFO)))),
    (Drop.BAD_FLAGS, frame(VnetHdr(flags=0x80))),
    (Drop.BAD_GSO_TYPE, frame(VnetHdr(NEEDS_CSUM, 2, 54, 1448, 34, 16))),
    (Drop.BAD_GSO_TYPE, frame(VnetHdr(NEEDS_CSUM, 6, 54, 1448, 34, 16))),
    (Drop.BAD_GSO_TYPE, frame(VnetHdr(NEEDS_CSUM, 0x7F, 54, 1448, 34, 16))),
    (Drop.BAD_GSO_TYPE, frame(VnetHdr(NEEDS_CSUM, int(GsoType.UDP_L4) | GSO_ECN, 42, 1, 34, 6))),
    (Drop.BAD_GSO_TYPE, frame(VnetHdr(gso_type=GSO_ECN))),
    (Drop.BAD_GSO, frame(VnetHdr(0, int(GsoType.TCPV6), 74, 1428, 54, 16))),
    (Drop.BAD_GSO, frame(VnetHdr(NEEDS_CSUM, int(GsoType.TCPV4), 54, 0, 34, 16))),
    (Drop.OVERSIZE, frame(VnetHdr(), MAX_PACKET_BYTES + 1)),
    (Drop.OVERSIZE, frame(TSO, MAX_PACKET_BYTES + 1)),
    (Drop.BAD_HDR_LEN, frame(VnetHdr(hdr_len=61))),
    (Drop.BAD_HDR_LEN, frame(VnetHdr(NEEDS_CSUM, int(GsoType.TCPV4), 0xFFFF, 1448, 34, 16))),
    (Drop.BAD_CSUM, frame(VnetHdr(NEEDS_CSUM, 0, 0, 0, 34, 25))),
    (Drop.BAD_CSUM, frame(VnetHdr(NEEDS_CSUM, 0, 0, 0, 0xFFFF, 0xFFFF))),
]


@pytest.mark.parametrize(("reason", "data"), DROPPED, ids=[r.value for r, _ in DROPPED])
def test_each_malformed_frame_is_refused_for_its_reason(reason: Drop, data: bytes) -> None:
    assert check_frame(data, PERMISSIVE) is reason
    assert reason.malformed
    with pytest.raises(RemoteProtocolError):
        decode(data)
    with pytest.raises(RemoteProtocolError):
        decode_uncompiled(data)


ACCEPTED = [
    frame(VnetHdr()),
    frame(VnetHdr(), ETH_HLEN),
    frame(VnetHdr(), MAX_PACKET_BYTES),
    frame(VnetHdr(hdr_len=60, gso_size=99)),  # hints without GSO are ignored
    frame(VnetHdr(csum_start=0xFFFF, csum_offset=0xFFFF)),  # unused without NEEDS_CSUM
    frame(VnetHdr(NEEDS_CSUM, 0, 0, 0, 34, 24)),  # the checksum in the last two bytes
    frame(VnetHdr(flags=int(HdrFlags.DATA_VALID), num_buffers=0xFFFF)),
    frame(TSO, MAX_PACKET_BYTES),
    frame(VnetHdr(NEEDS_CSUM, int(GsoType.TCPV6) | GSO_ECN, 74, 1428, 54, 16), 3000),
    frame(VnetHdr(NEEDS_CSUM, int(GsoType.UDP), 42, 1472, 34, 6), 3000),
    frame(VnetHdr(NEEDS_CSUM, int(GsoType.UDP_L4), 42, 1472, 34, 6), 3000),
]


@pytest.mark.parametrize("data", ACCEPTED, ids=range(len(ACCEPTED)))
def test_well_formed_frames_are_accepted(data: bytes) -> None:
    assert check_frame(data, PERMISSIVE) is None
    assert encode(decode(data)) == data


def test_the_policy_adds_the_mtu_and_the_negotiated_gso_types() -> None:
    mtu = FramePolicy(vnet_hdr=True, mtu=1500)
    limit = 1500 + ETH_HLEN + VLAN_HLEN
    assert check_frame(frame(VnetHdr(), limit), mtu) is None
    assert check_frame(frame(VnetHdr(), limit + 1), mtu) is Drop.OVERSIZE
    assert check_frame(frame(TSO, 20000), mtu) is None  # a GSO segment is not bound by the MTU
    no_gso = FramePolicy(vnet_hdr=True, gso_types=frozenset())
    assert check_frame(frame(TSO), no_gso) is Drop.BAD_GSO_TYPE
    tcp4 = FramePolicy(vnet_hdr=True, gso_types=frozenset({GsoType.TCPV4}))
    assert check_frame(frame(TSO), tcp4) is None
    assert check_frame(frame(VnetHdr(NEEDS_CSUM, 4, 74, 1, 54, 16)), tcp4) is Drop.BAD_GSO_TYPE
    assert set(GsoType) - {GsoType.NONE} == ALL_GSO_TYPES


def test_plain_frames_have_only_lengths_checked() -> None:
    plain = FramePolicy(vnet_hdr=False, mtu=1500)
    assert check_frame(packet(14), plain) is None
    assert check_frame(packet(13), plain) is Drop.TRUNCATED
    assert check_frame(packet(1518), plain) is None
    assert check_frame(packet(1519), plain) is Drop.OVERSIZE
    assert check_frame(packet(MAX_PACKET_BYTES), FramePolicy()) is None
    assert check_frame(packet(MAX_PACKET_BYTES + 1), FramePolicy()) is Drop.OVERSIZE


def test_policy_mtu_range() -> None:
    with pytest.raises(ValueError, match=r"outside 68\.\.65535"):
        FramePolicy(mtu=67)


# --- the checks are the spec's --------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
small = st.integers(0, 200)
headers = st.builds(
    VnetHdr,
    flags=st.one_of(st.sampled_from([0, 1, 2, 3]), u8),
    gso_type=st.one_of(st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x84]), u8),
    hdr_len=st.one_of(small, u16),
    gso_size=st.one_of(st.just(0), small, u16),
    csum_start=st.one_of(small, u16),
    csum_offset=st.one_of(st.sampled_from([6, 16]), small, u16),
    num_buffers=u16,
)
sizes = st.one_of(st.integers(0, 300), st.sampled_from([MAX_PACKET_BYTES, MAX_PACKET_BYTES + 1]))


@FAST
@given(hdr=headers, size=sizes)
def test_checks_accept_exactly_what_the_spec_accepts(hdr: VnetHdr, size: int) -> None:
    data = pack_header(hdr) + packet(size)
    reason = check_frame(data, PERMISSIVE)
    try:
        decoded = decode(data)
    except RemoteProtocolError:
        assert reason is not None and reason.malformed
        with pytest.raises(RemoteProtocolError):
            decode_uncompiled(data)
    else:
        assert reason is None
        assert decoded == VnetFrame(hdr, packet(size)) == decode_uncompiled(data)
        assert encode(decoded) == data


@FAST
@given(data=st.binary(max_size=120))
def test_any_bytes_give_a_frame_or_one_error(data: bytes) -> None:
    try:
        decode(data)
    except RemoteProtocolError:
        assert check_frame(data, PERMISSIVE) is not None
    for policy in (PERMISSIVE, FramePolicy(), FramePolicy(vnet_hdr=True, mtu=68)):
        check_frame(data, policy)  # never raises


def test_schema_sizes() -> None:
    assert VIRTIO_NET_HDR.sizeof() == 12
    with pytest.raises(cs.SizeofError):
        VIRTIO_NET_FRAME.sizeof()
    data = frame(TSO, 100)
    assert VIRTIO_NET_FRAME.parse(data) == VIRTIO_NET_FRAME_COMPILED.parse(data)
    assert struct.calcsize("<BBHHHHH") == VNET_HDR_BYTES


def _fields(hdr: VnetHdr) -> dict[str, int]:
    return {
        "flags": hdr.flags,
        "gso_type": hdr.gso_type,
        "hdr_len": hdr.hdr_len,
        "gso_size": hdr.gso_size,
        "csum_start": hdr.csum_start,
        "csum_offset": hdr.csum_offset,
        "num_buffers": hdr.num_buffers,
    }
