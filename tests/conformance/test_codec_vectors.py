"""conformance/codec.json: stateless vectors (COBS, CRC-32, LEB128, every message's golden
bytes), generated from ira's codecs and the wire modules' examples; the file must be current.

Regenerate it with ``python tests/conformance/test_codec_vectors.py``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from ira.link.framing import StreamDeframer, encode_frames, encode_varint
from ira.wire import gendoc

FILE = Path(__file__).resolve().parents[2] / "conformance" / "codec.json"

COBS_FRAMES = [
    "",
    "00",
    "0000",
    "11220033",
    "11223344",
    bytes(range(1, 255)).hex(),
    bytes(range(1, 255)).hex() + "0005",
    bytes(range(1, 256)).hex(),
    "01" * 600,
]
CRC_DATA = ["", "313233343536373839", "00", "ffffffff", "0102030405060708090a"]
LEB128_VALUES = [0, 1, 127, 128, 300, 16383, 16384, 65536, 2**28 - 1, 2**32 - 1, 2**35 - 1]


def render() -> dict[str, Any]:
    messages = []
    for module in gendoc.wire_modules():
        spec = module.SPEC
        for msg in spec.messages:
            messages.append(
                {
                    "section": spec.title,
                    "name": msg.name,
                    "tag": msg.tag,
                    "hex": spec.encode(msg.example).hex(),
                    "example": repr(msg.example),
                }
            )
    return {
        "about": "Stateless vectors; see README.md. cobs: a frame and its COBS encoding "
        "(no delimiters). crc32: data and its CRC-32 as it ends a frame (little-endian). "
        "leb128: a message length and its prefix. messages: the golden bytes of each message "
        "of PROTOCOL.md, which a decoder accepts and an encoder reproduces.",
        "cobs": [
            {"frame": f, "encoded": encode_frames([bytes.fromhex(f)])[1:-1].hex()}
            for f in COBS_FRAMES
        ],
        "crc32": [
            {"data": d, "crc": zlib.crc32(bytes.fromhex(d)).to_bytes(4, "little").hex()}
            for d in CRC_DATA
        ],
        "leb128": [{"value": v, "encoded": encode_varint(v).hex()} for v in LEB128_VALUES],
        "messages": messages,
    }


def test_codec_json_is_current() -> None:
    assert json.loads(FILE.read_text(encoding="utf-8")) == render(), (
        "conformance/codec.json is out of date: run python tests/conformance/test_codec_vectors.py"
    )


def test_the_cobs_vectors_decode() -> None:
    for case in json.loads(FILE.read_text(encoding="utf-8"))["cobs"]:
        stream = b"\x00" + bytes.fromhex(case["encoded"]) + b"\x00"
        assert StreamDeframer(1 << 16).feed(stream) == [bytes.fromhex(case["frame"])]
        assert 0 not in bytes.fromhex(case["encoded"])


def test_the_crc_check_value() -> None:
    crcs = {c["data"]: c["crc"] for c in json.loads(FILE.read_text(encoding="utf-8"))["crc32"]}
    assert crcs["313233343536373839"] == "2639f4cb"  # CBF43926, little-endian


if __name__ == "__main__":
    FILE.write_text(json.dumps(render(), indent=1) + "\n", encoding="utf-8")
