"""Authenticated link frames (Feature.AUTH): the MAC as PROTOCOL.md specifies it,
computed here from the standard library alone, and the schemas of the trailers."""

from __future__ import annotations

import hashlib
import hmac
import struct

import construct as cs
import pytest

from ira.wire.link import (
    CRC_BYTES,
    EXAMPLE_PSK,
    MAC_BYTES,
    SPEC,
    Authenticated,
    FrameAuth,
    HelloAuth,
    check_crc,
    derive_key,
    encode,
    mac_key,
    verify,
    verify_hello,
)

EXAMPLES = {m.name: m for m in SPEC.messages}


def spec_mac(psk: bytes, sender: int, receiver: int, data: bytes) -> bytes:
    """The MAC exactly as the Authentication section of PROTOCOL.md words it."""
    key = hmac.new(psk.strip(), b"ira link psk 1", hashlib.sha256).digest()
    epochs = struct.pack("<QQ", sender, receiver)
    return hmac.new(key, epochs + data, hashlib.sha256).digest()[:16]


@pytest.mark.parametrize("name", ["HELLO, authenticated", "HELLO_ACK, authenticated"])
def test_authenticated_hello_examples_verify_by_the_spec(name: str) -> None:
    example = EXAMPLES[name].example
    assert isinstance(example, Authenticated)
    wire = encode(example)
    body = bytes(check_crc(wire))
    hello = example.frame
    assert body[-MAC_BYTES:] == spec_mac(
        EXAMPLE_PSK,
        hello.epoch,
        hello.peer_epoch,
        body[:-MAC_BYTES],  # type: ignore[union-attr]
    )
    opened = verify_hello(memoryview(body), mac_key(EXAMPLE_PSK))
    assert opened is not None
    assert (opened[1], opened[2]) == (example.nonce, example.peer_nonce)
    parsed = EXAMPLES[name].schema.parse(wire)
    assert (parsed.nonce, parsed.peer_nonce, parsed.mac) == (
        example.nonce,
        example.peer_nonce,
        body[-MAC_BYTES:],
    )


def test_authenticated_data_example_verifies_by_the_spec_and_only_for_its_session() -> None:
    example = EXAMPLES["DATA, authenticated"].example
    assert isinstance(example, Authenticated)
    body = bytes(check_crc(encode(example)))
    s, r = example.sender_epoch, example.receiver_epoch
    assert body[-MAC_BYTES:] == spec_mac(EXAMPLE_PSK, s, r, body[:-MAC_BYTES])
    key = mac_key(EXAMPLE_PSK)
    assert verify(memoryview(body), key, s, r) == body[:-MAC_BYTES]
    assert verify(memoryview(body), key, r, s) is None  # reflected back to its sender
    assert verify(memoryview(body), key, s, r ^ 1) is None  # another session
    assert verify(memoryview(body), mac_key(b"x" + EXAMPLE_PSK), s, r) is None
    for i in range(len(body)):
        damaged = bytearray(body)
        damaged[i] ^= 0x80
        assert verify(memoryview(bytes(damaged)), key, s, r) is None, i


def test_trailer_schemas_have_the_documented_sizes() -> None:
    assert HelloAuth.sizeof() == 16 + MAC_BYTES
    assert FrameAuth.sizeof() == MAC_BYTES
    assert CRC_BYTES == 4
    with pytest.raises(cs.StreamError):
        HelloAuth.parse(bytes(HelloAuth.sizeof() - 1))


def test_a_key_shorter_than_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        derive_key(b"fifteen bytes!!")
