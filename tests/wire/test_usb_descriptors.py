"""USB descriptors and FunctionFS blobs: golden bytes (accepted by Linux 6.1's FunctionFS)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ira.errors import RemoteProtocolError
from ira.wire.usb import (
    EVENT_BYTES,
    FFS_DESCRIPTORS,
    FFS_STRINGS,
    EndpointDescriptor,
    FfsEvent,
    FfsEventType,
    FfsStrings,
    InterfaceDescriptor,
    SsCompanion,
    decode_event,
    decode_interface,
    encode,
    vendor_function,
)

GOLDEN_DESCRIPTORS = bytes.fromhex(
    "0300000069000000070000000300000003000000050000000904000002ff000001070501024000000705"
    "82024000000904000002ff00000107050102000200070582020002000904000002ff0000010705010200"
    "040006300000000007058202000400063000000000"
)


def test_descriptors_blob_golden() -> None:
    assert encode(vendor_function()) == GOLDEN_DESCRIPTORS
    parsed = FFS_DESCRIPTORS.parse(GOLDEN_DESCRIPTORS)
    assert (parsed.fs_count, parsed.hs_count, parsed.ss_count) == (3, 3, 5)
    assert parsed.length == len(GOLDEN_DESCRIPTORS)


def test_descriptors_per_speed_packet_sizes() -> None:
    fn = vendor_function()
    sizes = [
        [d.max_packet_bytes for d in speed if isinstance(d, EndpointDescriptor)]
        for speed in (fn.fs, fn.hs, fn.ss)
    ]
    assert sizes == [[64, 64], [512, 512], [1024, 1024]]
    assert sum(isinstance(d, SsCompanion) for d in fn.ss) == 2


def test_strings_blob_golden() -> None:
    blob = encode(FfsStrings(("ira",)))
    assert blob == bytes.fromhex("02000000160000000100000001000000090469726100")
    assert FFS_STRINGS.parse(blob).strings == b"ira\0"


def test_interface_round_trip() -> None:
    data = encode(InterfaceDescriptor())
    assert data == bytes.fromhex("0904000002ff000001")
    assert decode_interface(data) == InterfaceDescriptor()


def test_endpoint_golden() -> None:
    assert encode(EndpointDescriptor(0x82, 512)) == bytes.fromhex("07058202000200")


@pytest.mark.parametrize("kind", list(FfsEventType))
def test_event_round_trip(kind: FfsEventType) -> None:
    event = FfsEvent(kind, 0x80 if kind is FfsEventType.SETUP else 0, 6, 0x100, 0, 18)
    data = encode(event)
    assert len(data) == EVENT_BYTES
    assert decode_event(data) == event


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_event(bytes(8) + bytes([7, 0, 0, 0]))
    with pytest.raises(RemoteProtocolError):
        decode_event(bytes(5))


@given(st.binary(max_size=40))
def test_decoders_only_raise_remote_protocol_error(data: bytes) -> None:
    for decoder in (decode_event, decode_interface):
        with contextlib.suppress(RemoteProtocolError):
            decoder(data)
