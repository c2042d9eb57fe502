"""Flash frames: the board's struct codecs (ira.flash.receiver) equal the construct
schemas (ira.wire.flash), byte for byte, both ways."""

from __future__ import annotations

import pytest
from cobs import cobs

from ira.errors import RemoteProtocolError
from ira.flash import receiver as rx
from ira.wire import flash as wire


def _unframe(data: bytes) -> list[bytes]:
    return [cobs.decode(c) for c in data.split(b"\x00") if c]


@pytest.mark.parametrize(
    ("board_body", "message"),
    [
        (rx.hello_body(65536), wire.Hello(wire.VERSION, 65536)),
        (rx.state_body(2048, 9000), wire.State(2048, 9000)),
        (rx.ack_body(3072, True), wire.Ack(3072, True)),
        (rx.ack_body(0, False), wire.Ack(0, False)),
        (rx.result_body(rx.ST_BAD_SHA, "différent"), wire.Result(wire.Status.BAD_SHA, "différent")),
    ],
)
def test_board_frames_equal_the_schemas(board_body: bytes, message: wire.Message) -> None:
    (frame,) = _unframe(rx.frame(board_body))
    assert frame == wire.encode(message)
    assert wire.decode(frame) == message


def test_golden_frames() -> None:
    assert wire.encode(wire.Ack(0x0C00, True)).hex() == "82000c0000015e9b6bdf"
    assert wire.encode(wire.Data(1024, b"abc")).hex() == "02000400000300616263b154f0ee"


@pytest.mark.parametrize(
    "message",
    [
        wire.Open(bytes(range(32)), 1000, 4000, wire.Codec.LZMA),
        wire.Data(1024, b"\x00abc\x00"),
        wire.Install('{"action": "rollback"}'),
        wire.Quit(),
    ],
)
def test_host_frames_decode_on_the_board(message: wire.Message) -> None:
    r = rx.Receiver(now=0.0)
    r.size = 4096  # as if OPEN had come (DATA needs a stream)
    r.have = 4096 if isinstance(message, wire.Install) else 1024
    encoded = b"\x00" + cobs.encode(wire.encode(message)) + b"\x00"
    events = r.receive_data(encoded, now=1.0)
    assert r.statistics().bad_frames == 0
    match message:
        case wire.Open():
            assert events == [rx.Opened(message.sha256, 1000, 4000, 2)]
        case wire.Data():
            assert events == [rx.Stored(1024, message.data)]
        case wire.Install():
            assert events == [rx.InstallAsked(message.plan)]
        case wire.Quit():
            assert events == [rx.QuitAsked()]


def test_every_schema_round_trips() -> None:
    for spec in wire.SPEC.messages:
        encoded = wire.encode(spec.example)  # type: ignore[arg-type]
        assert wire.decode(encoded) == spec.example
        assert len(encoded) == len(spec.schema.build({**_fields(spec.example)}))


def _fields(msg: object) -> dict[str, object]:
    _kind, fields = wire._fields(msg)  # type: ignore[arg-type]
    return {**fields, "crc": 0}


def test_decode_refuses_bad_crc_unknown_type_and_bad_codec() -> None:
    good = wire.encode(wire.Ack(5, False))
    with pytest.raises(RemoteProtocolError):
        wire.decode(good[:-1] + bytes([good[-1] ^ 1]))
    body = b"\x7f"
    with pytest.raises(RemoteProtocolError):
        wire.decode(body + wire.crc32(body).to_bytes(4, "little"))
    body = wire.encode(wire.Open(bytes(32), 1, 1, wire.Codec.ZLIB))[:-4][:-1] + b"\x09"
    with pytest.raises(RemoteProtocolError):
        wire.decode(body + wire.crc32(body).to_bytes(4, "little"))
