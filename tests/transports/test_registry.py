"""The transport registry: schemes to openers, entry points, one-line errors."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import ira.transports as transports
from ira.errors import ConfigError
from ira.transports import Backend, open_transport, opener_for, scheme_of, schemes
from ira.transports.serial import open_serial


@pytest.mark.parametrize(
    ("spec", "scheme"),
    [
        ("/dev/ttyUSB0", "serial"),
        ("/dev/serial/by-id/usb-FTDI_A1-if00-port0", "serial"),
        ("serial:///dev/ttyS1?baud=921600", "serial"),
        ("SOCKET://localhost:7000", "socket"),
        ("rfc2217://localhost:7000", "rfc2217"),
        ("loop://", "loop"),
    ],
)
def test_a_spec_names_its_scheme(spec: str, scheme: str) -> None:
    assert scheme_of(spec) == scheme


def test_builtin_serial_schemes_open_with_pyserial() -> None:
    for scheme in ("serial", "loop", "socket", "rfc2217", "spy"):
        assert opener_for(f"{scheme}://x") is open_serial
    assert {"serial", "loop", "socket", "rfc2217"} <= set(schemes())


def test_an_unknown_scheme_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        open_transport("carrier-pigeon://coop")
    message = str(info.value)
    assert "\n" not in message
    assert "'carrier-pigeon'" in message and "serial" in message


def test_a_backend_whose_library_is_missing_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin = dict(transports.BUILTIN)
    builtin["gadget"] = Backend("ira_no_such_module_xyz:open_it", "ira-gadget-extra")
    monkeypatch.setattr(transports, "BUILTIN", builtin)
    with pytest.raises(ConfigError) as info:
        opener_for("gadget://g1")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install ira-gadget-extra" in message
    assert "gadget://" in message


def _install_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, scheme: str = "fake"
) -> None:
    """A distribution on sys.path that registers ``scheme`` in ``ira.transports``."""
    dist = tmp_path / "ira_fake_transport-1.0.dist-info"
    dist.mkdir()
    metadata = "Metadata-Version: 2.1\nName: ira-fake-transport\nVersion: 1.0\n"
    (dist / "METADATA").write_text(metadata)
    (dist / "entry_points.txt").write_text(f"[ira.transports]\n{scheme} = {value}\n")
    (tmp_path / "ira_fake_transport.py").write_text(
        "from ira.transports.mem import mem_pair\n"
        "def open_fake(spec):\n"
        "    a, _b = mem_pair(packet=True)\n"
        "    a.name = spec\n"
        "    return a\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ira_fake_transport", raising=False)


def test_a_third_party_scheme_comes_from_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_entry_point(tmp_path, monkeypatch, "ira_fake_transport:open_fake")
    assert "fake" in schemes()
    transport = open_transport("fake://bench-3")
    try:
        assert transport.name == "fake://bench-3"
        assert transport.packet
    finally:
        transport.close()


def test_a_broken_entry_point_is_one_line_naming_its_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_entry_point(tmp_path, monkeypatch, "ira_fake_transport_gone:open_fake")
    with pytest.raises(ConfigError) as info:
        open_transport("fake://x")
    message = str(info.value)
    assert "\n" not in message
    assert "ira-fake-transport" in message


def test_an_entry_point_cannot_take_a_builtin_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_entry_point(tmp_path, monkeypatch, "ira_fake_transport:open_fake", "serial")
    (ep,) = entry_points(group="ira.transports", name="serial")
    assert ep.load().__name__ == "open_fake"  # it would load, but the built-in wins
    assert opener_for("serial:///dev/null") is open_serial
