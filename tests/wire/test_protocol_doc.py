"""docs/PROTOCOL.md is generated from docs/spec/*.md and the wire modules and must not drift."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest
from construct import Int8ul, Struct

from ira.busmodel.device import Device
from ira.busmodel.devices import BoardInfo, CountingDevice, Echo, RingLoopback
from ira.link.framing import StreamDeframer, encode_frames
from ira.wire import MessageSpec, WireSpec, gendoc
from ira.wire.link import Feature
from ira.wire.link2 import ACK_HOLD_S

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def test_protocol_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == gendoc.render(), (
        "docs/PROTOCOL.md is out of date: run `python -m ira.wire.gendoc`"
    )


def test_every_listed_module_that_exists_is_documented() -> None:
    text = gendoc.render()
    for module in gendoc.wire_modules():
        assert module.SPEC.title in text
        for msg in module.SPEC.messages:
            assert f"### {msg.name} (tag {msg.tag:#04x})" in text


def test_check_mode(tmp_path: Path) -> None:
    out = tmp_path / "PROTOCOL.md"
    assert gendoc.main(["--check", "--output", str(out)]) == 1
    assert gendoc.main(["--output", str(out)]) == 0
    assert gendoc.main(["--check", "--output", str(out)]) == 0


def test_render_of_a_minimal_spec() -> None:
    schema = Struct("tag" / Int8ul * "the tag", "value" / Int8ul * "a | value")
    spec = WireSpec(
        title="Toy",
        summary="A toy protocol.",
        encode=lambda msg: bytes([1, msg]),
        messages=(MessageSpec("PING", 1, schema, "Ping.", 7),),
    )
    text = gendoc.render_spec(spec)
    assert "| 1 | 1 | `value` | u8 | a \\| value |" in text
    assert "0000  01 07" in text


def _fragments(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.md").write_text(text, encoding="utf-8")
    return tmp_path


def _all_wire_modules() -> str:
    return "".join(f"<!-- gendoc: wire {m.__name__} -->\n" for m in gendoc.wire_modules())


def test_fragments_in_file_name_order_with_contents(tmp_path: Path) -> None:
    directory = _fragments(
        tmp_path,
        b20="## Second\n\nprose b\n",
        a10="# Title\n\n<!-- gendoc: contents -->\n\n## First\n\nprose a\n",
        c30=_all_wire_modules(),
    )
    text = gendoc.render(directory)
    assert text.index("prose a") < text.index("prose b") < text.index("## Link frames")
    assert "- [First](#first)\n- [Second](#second)\n- [Link frames" in text


def test_a_fragment_that_misses_a_wire_module_is_refused(tmp_path: Path) -> None:
    directory = _fragments(tmp_path, a="# Title\n")
    with pytest.raises(gendoc.FragmentError, match="no fragment includes"):
        gendoc.render(directory)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("<!-- gendoc: wire ira.wire.nothing -->", "no wire module"),
        ("<!-- gendoc: states ira.wire.link:NOTHING -->", "cannot find"),
        ("<!-- gendoc: frobnicate -->", "unknown directive"),
    ],
)
def test_a_bad_directive_names_the_fragment_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    directory = _fragments(tmp_path, a="# Title\n\n" + line + "\n" + _all_wire_modules())
    with pytest.raises(gendoc.FragmentError, match=f"a.md:3: {message}|{message}"):
        gendoc.render(directory)


class Light(enum.Enum):
    RED = "red"
    GREEN = "green"


class Press(enum.Enum):
    GO = 1
    STOP = 2


class Colour(enum.IntEnum):
    """A registry."""

    RED = 1
    GREEN = 2


def test_render_transitions_in_enum_order() -> None:
    table = {
        (Light.GREEN, Press.STOP): Light.RED,
        (Light.RED, Press.GO): Light.GREEN,
    }
    text = gendoc.render_transitions(table)
    assert text.splitlines()[2:] == [
        "| RED | GO | GREEN |",
        "| GREEN | STOP | RED |",
    ]


class Bits(enum.IntFlag):
    LOW = 1
    HIGH = 4


def test_render_registry() -> None:
    text = gendoc.render_registry(Colour, {Colour.RED: "stop"})
    assert "| 1 | `RED` | stop |" in text
    assert "| 2 | `GREEN` |  |" in text
    assert "| bit 2 | `HIGH` |  |" in gendoc.render_registry(Bits)


def test_render_mapping_of_flags() -> None:
    text = gendoc.render_mapping({Bits.HIGH: Bits.LOW | Bits.HIGH, Bits.LOW: Bits(0)}, "bit,needs")
    assert text.splitlines() == [
        "| bit | needs |",
        "|---|---|",
        "| `HIGH` | `LOW` + `HIGH` |",
        "| `LOW` | — |",
    ]


# --- the prose's claims, held to the code --------------------------------------------

COBS_EXAMPLES = [
    ("11 22 00 33", "03 11 22 02 33"),
    ("00", "01 01"),
    (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
    (bytes(range(1, 255)).hex() + "0005", "ff" + bytes(range(1, 255)).hex() + "010205"),
]


@pytest.mark.parametrize(("frame", "encoded"), COBS_EXAMPLES)
def test_the_cobs_examples_of_the_spec(frame: str, encoded: str) -> None:
    raw, wire = bytes.fromhex(frame), bytes.fromhex(encoded)
    assert encode_frames([raw]) == b"\x00" + wire + b"\x00"
    assert StreamDeframer(65536).feed(b"\x00" + wire + b"\x00") == [raw]
    # a decoder accepts the code byte 01 after a final FF block, too
    if wire[0] == 0xFF and len(wire) == 255:
        assert StreamDeframer(65536).feed(b"\x00" + wire + b"\x01\x00") == [raw]
    if len(raw) < 10:
        assert f"| `{frame}` | `{encoded}` |" in DOC.read_text(encoding="utf-8")


def test_every_link_feature_bit_is_in_the_registry() -> None:
    text = DOC.read_text(encoding="utf-8")
    for feature in Feature:
        assert f"| {feature.value.bit_length() - 1} | `{feature.name}` |" in text


@pytest.mark.parametrize("device", [Echo, BoardInfo, CountingDevice, RingLoopback])
def test_every_standard_device_is_specified(device: type[Device]) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"| `{device.type}` | {device.version} |" in text
    assert f"### {device.type}\n" in text


def test_the_ack_hold_of_version_2_is_the_one_the_spec_gives() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"| ack hold (version 2) | {round(ACK_HOLD_S * 1000)} ms |" in text
    assert f"up to the *ack hold*, {round(ACK_HOLD_S * 1000)} ms" in text
