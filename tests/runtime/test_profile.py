"""Board profiles: parsing, one-line errors naming the key, and hotswap by reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from ira.busmodel.registry import DeviceContext
from ira.errors import ConfigError
from ira.runtime.profile import (
    DEFAULT_BOARD,
    DEFAULT_PROFILE,
    DeviceSpec,
    FlowControl,
    LinkSettings,
    NetSettings,
    Profile,
    load_profile,
    parse_profile,
    standard_device_types,
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
    ("text", "where"),
    [
        ("board = 3", "p.toml:1: board:"),
        ("bord = 'x'", "p.toml:1: bord:"),
        ("device = 1", "p.toml:1: device:"),
        ("[[device]]\nname = 'x'", "p.toml:1: device[0].type:"),
        ("[[device]]\ntype = 'toaster'", "p.toml:2: device[0].type:"),
        ("[[device]]\ntype = 'echo'\ncolour = 1", "p.toml:3: device[0].colour:"),
        ("[[device]]\ntype = 'echo'\nname = ''", "p.toml:3: device[0].name:"),
        ("[[device]]\ntype = 'echo'\noptions = 3", "p.toml:3: device[0].options:"),
        ("[[device]]\ntype = 'echo'\noptions = {speed = 1}", "p.toml:3: device[0].options.speed:"),
        ("[[device]]\ntype = 'echo'\n[[device]]\ntype = 'echo'", "p.toml:3: device[1].name:"),
        ("board = ", "p.toml:1: board: not valid TOML"),
        ("board = 'b'\n\n[link]\nspec = 'x'\n'baud' = \n", "p.toml:5: 'baud': not valid TOML"),
        ("link = 3", "p.toml:1: link:"),
        ("[link]\nbaud = 10", "p.toml:2: link.baud: 10 is out of range (50..12000000)"),
        ("link.baud = 'fast'", "p.toml:1: link.baud: must be an integer"),
        ("[link]\nflow_control = 'xonxoff'", "p.toml:2: link.flow_control: xonxoff cannot"),
        ("[link]\nflow_control = 'cts'", "p.toml:2: link.flow_control:"),
        ("[link]\nspec = ''", "p.toml:2: link.spec: must be a non-empty string"),
        ("[link]\nspec = 'mem://a'\nbaud = 9600", "p.toml:3: link.baud: baud and flow_control"),
        (
            "[link]\nspec = '/dev/ttyS1'\nbaud = 9600\nusb_pid = 1",
            "p.toml:4: link.usb_pid: usb_vid, usb_pid and usb_serial apply to a USB gadget",
        ),
        ("[link]\nspec = 'ffs://b'\nusb_vid = 0x10000", "p.toml:3: link.usb_vid: 65536 is out"),
        (
            "[link]\nspec = 'serial:///dev/ttyS1?rtscts=1'\nflow_control = 'none'",
            "p.toml:3: link.flow_control: rtscts is given both",
        ),
        ("[link]\nspec = 'x'\nparity = 'e'", "p.toml:3: link.parity: unknown key"),
        ("[net]\naddress = '10.0.0.1/24'", "p.toml:1: net.tap: missing"),
        ("[net]\ntap = 'a/b'", "p.toml:2: net.tap: bad TAP name"),
        ("[net]\ntap = 'ira0'\naddress = '10.0.0.1'", "p.toml:3: net.address: address"),
        ("[net]\ntap = 'ira0'\naddress = '10.0.0.300/24'", "p.toml:3: net.address: bad"),
        ("[net]\ntap = 'ira0'\nmtu = 70000", "p.toml:3: net.mtu: 70000 is out of range"),
        ("[net]\ntap = 'ira0'\noffloads = 1", "p.toml:3: net.offloads: must be true or false"),
        ("net = { tap = 'ira0', mtu = 1 }", "p.toml:1: net.mtu: 1 is out of range (68..65521)"),
        (
            "board = 'b'\n[[device]]\ntype = 'echo'\n\n[[device]]\ntype = 'virtio-net'\n"
            "name = 'n'\noptions = { mtu = 9000, mac = '01:00:00:00:00:01' }",
            "p.toml:8: device[1].options.mac: '01:00:00:00:00:01' is not valid: bad MAC",
        ),
        (
            "[[device]]\ntype = 'echo'\n[[device]]\ntype = 'virtio-net'\n"
            "[device.options]\nmtu = 10",
            "p.toml:6: device[1].options.mtu: 10 is out of range (68..65535)",
        ),
        (
            "[[device]]\ntype = 'virtio-rng'\noptions.seed = 'x'",
            "p.toml:3: device[0].options.seed:",
        ),
    ],
)
def test_a_malformed_profile_is_one_line_naming_file_line_and_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(text, source="p.toml")
    message = str(info.value)
    assert message.startswith(where), message
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
    ctx = DeviceContext(board="b", started_at=0.0)
    device = standard_device_types().build(profile.devices[0], ctx)
    assert bool(device.device_features & HDR_DELTA) is offered  # type: ignore[attr-defined]


def test_a_header_compression_option_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"^p:3: device\[0\]\.options\.header_delta: must be true"
    ):
        parse_profile("[[device]]\ntype = 'virtio-net'\noptions = {header_delta = 1}", source="p")
    spec = DeviceSpec("net0", "virtio-net", (("header_delta", 1),))
    with pytest.raises(ConfigError, match=r"options\.header_delta: must be true or false"):
        standard_device_types().build(spec, DeviceContext(board="b", started_at=0.0))


BOARD = """
board = "bb-1"

[link]
spec = "/dev/ttyUSB0"
baud = 921600
flow_control = "rtscts"

[net]
tap = "ira0"
address = "10.0.0.1/24"
mtu = 9000
offloads = false

[[device]]
type = "virtio-net"
"""


def test_link_and_net_parse_to_their_settings() -> None:
    profile = parse_profile(BOARD)
    assert profile.link == LinkSettings("/dev/ttyUSB0", 921600, FlowControl.RTSCTS)
    assert profile.net == NetSettings("ira0", "10.0.0.1/24", 9000, offloads=False)
    assert parse_profile("[net]\ntap = 'ira1'\n").net == NetSettings("ira1")
    assert parse_profile("").link == LinkSettings() and parse_profile("").net is None


@pytest.mark.parametrize(
    ("link", "given", "spec"),
    [
        (LinkSettings("/dev/ttyUSB0"), None, "/dev/ttyUSB0"),
        (LinkSettings("/dev/ttyUSB0"), "/dev/ttyS1", "/dev/ttyS1"),
        (LinkSettings("/dev/ttyUSB0", 9600), None, "serial:///dev/ttyUSB0?baud=9600"),
        (
            LinkSettings("/dev/ttyUSB0", None, FlowControl.RTSCTS),
            "/dev/ttyS1",
            "serial:///dev/ttyS1?rtscts=1",
        ),
        (
            LinkSettings("serial:///dev/ttyS1?xonxoff=0", 9600, FlowControl.NONE),
            None,
            "serial:///dev/ttyS1?xonxoff=0&baud=9600&rtscts=0",
        ),
        (LinkSettings("socket://localhost:5000"), None, "socket://localhost:5000"),
        (
            LinkSettings("ffs://board1?acm=1", usb_vid=0x1D6B, usb_pid=0x104, usb_serial="b 1"),
            None,
            "ffs://board1?acm=1&vid=0x1d6b&pid=0x0104&serial=b+1",
        ),
    ],
)
def test_the_link_spec_carries_baud_and_flow_control(
    link: LinkSettings, given: str | None, spec: str
) -> None:
    assert link.link_spec(given) == spec


@pytest.mark.parametrize(
    ("link", "message"),
    [
        (LinkSettings(), "no link"),
        (LinkSettings("mem://x", 9600), "apply to serial ports"),
        (LinkSettings("serial:///dev/ttyS1?baud=9600", 9600), "baud is given both in"),
    ],
)
def test_a_link_that_cannot_be_opened_as_written_is_refused(
    link: LinkSettings, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        link.link_spec()


def test_every_device_type_and_option_is_documented() -> None:
    """docs/PROFILES.md names every device type the layers register and each option."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "PROFILES.md").read_text()
    for dtype in standard_device_types():
        assert f"`{dtype.name}`" in text, dtype.name
        for option in dtype.options:
            assert f"`{option.name}`" in text, f"{dtype.name}.{option.name}"


def test_other_packages_add_device_types_through_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "ira_toaster-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ira-toaster\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ira.device_types]\ntoaster = ira_toaster:register_device_types\n"
    )
    (tmp_path / "ira_toaster.py").write_text(
        "from ira.busmodel.devices import Echo\n"
        "from ira.busmodel.registry import DeviceType, Option\n"
        "def register_device_types(types):\n"
        "    types.register(DeviceType('toaster', lambda spec, ctx: Echo(), 'toasts',\n"
        "        (Option('slots', int, 'slots', default=2, minimum=1, maximum=4),)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    profile = parse_profile("[[device]]\ntype = 'toaster'\noptions = { slots = 4 }")
    assert profile.devices == (DeviceSpec("toaster", "toaster", (("slots", 4),)),)
    with pytest.raises(ConfigError, match=r"p:3: device\[0\]\.options\.slots: 5 is out of range"):
        parse_profile("[[device]]\ntype = 'toaster'\noptions = { slots = 5 }", source="p")
