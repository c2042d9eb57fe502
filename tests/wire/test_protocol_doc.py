"""docs/PROTOCOL.md is generated from the wire modules and must not drift."""

from __future__ import annotations

import types
from pathlib import Path

from construct import Int8ul, Struct

from ira.wire import MessageSpec, WireSpec, gendoc

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
    module = types.ModuleType("toy")
    module.SPEC = spec  # type: ignore[attr-defined]
    text = gendoc.render([module])
    assert "| 1 | 1 | `value` | u8 | a \\| value |" in text
    assert "0000  01 07" in text
