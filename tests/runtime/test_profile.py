"""Board profiles: parsing, one-line errors naming the key, and hotswap by reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from ira.errors import ConfigError
from ira.runtime.profile import (
    DEFAULT_BOARD,
    DEFAULT_PROFILE,
    DeviceContext,
    DeviceSpec,
    Profile,
    build_device,
    load_profile,
    parse_profile,
)
from ira.venet.netspec import HDR_DELTA

GOOD = """
board = "bb-1"

[[device]]
type = "board-info"

[[device]]
type = "counter"
name = "counter-a"

[[device]]
type = "counter"
name = "counter-b"
options = {}
"""


def test_a_profile_parses_to_named_devices() -> None:
    profile = parse_profile(GOOD)
    assert profile == Profile(
        "bb-1",
        (
            DeviceSpec("board-info", "board-info"),
            DeviceSpec("counter-a", "counter"),
            DeviceSpec("counter-b", "counter"),
        ),
    )
    assert profile.device("counter-b") == DeviceSpec("counter-b", "counter")
    assert profile.device("nope") is None


def test_an_empty_profile_is_a_board_without_devices() -> None:
    assert parse_profile("") == Profile(DEFAULT_BOARD, ())


def test_the_default_profile_has_the_stock_devices() -> None:
    assert [s.type for s in DEFAULT_PROFILE.devices] == [
        "board-info",
        "echo",
        "counter",
        "ring-loopback",
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("board = 3", "'board'"),
        ("bord = 'x'", "'bord'"),
        ("device = 1", "'device'"),
        ("[[device]]\nname = 'x'", "device[0].type"),
        ("[[device]]\ntype = 'toaster'", "device[0].type"),
        ("[[device]]\ntype = 'echo'\ncolour = 1", "device[0].colour"),
        ("[[device]]\ntype = 'echo'\nname = ''", "device[0].name"),
        ("[[device]]\ntype = 'echo'\noptions = 3", "device[0].options"),
        ("[[device]]\ntype = 'echo'\noptions = {speed = 1}", "device[0].options.speed"),
        ("[[device]]\ntype = 'echo'\n[[device]]\ntype = 'echo'", "device[1].name"),
        ("board = ", "not valid TOML"),
    ],
)
def test_a_malformed_profile_is_one_line_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(text, source="p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: ") and key in message
    assert "\n" not in message


def test_load_profile_reads_the_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_profile(path).board == "bb-1"
    with pytest.raises(ConfigError, match="cannot read the profile"):
        load_profile(tmp_path / "missing.toml")


@pytest.mark.parametrize(("value", "offered"), [("true", True), ("false", False)])
def test_a_network_device_offers_header_compression_as_its_profile_says(
    value: str, offered: bool
) -> None:
    profile = parse_profile(
        f"[[device]]\ntype = 'virtio-net'\noptions = {{header_delta = {value}}}"
    )
    device = build_device(profile.devices[0], DeviceContext(board="b", started_at=0.0))
    assert bool(device.device_features & HDR_DELTA) is offered  # type: ignore[attr-defined]


def test_a_header_compression_option_that_is_not_a_boolean_is_refused() -> None:
    profile = parse_profile("[[device]]\ntype = 'virtio-net'\noptions = {header_delta = 1}")
    with pytest.raises(ConfigError, match=r"options\.header_delta must be true or false"):
        build_device(profile.devices[0], DeviceContext(board="b", started_at=0.0))
