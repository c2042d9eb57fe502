"""TAP interfaces: configuration, creation in a namespace, errors that name the fix, removal."""

from __future__ import annotations

import os
import select
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from venetrig import missing_root_support, require_root_support

from ira.busmodel.registry import DeviceContext, DeviceSpec
from ira.errors import ConfigError, TransportError
from ira.runtime import tap as tap_module
from ira.runtime.netns import NetNs
from ira.runtime.profile import standard_device_types
from ira.runtime.tap import TAP_MAX_MTU, TCP_OFFLOADS, Offload, Tap, TapConfig
from ira.venet.netspec import parse_mac
from ira.venet.vnethdr import Drop
from ira.wire.venet import VNET_HDR_BYTES

# --- configuration (no root needed) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "bad TAP name"),
        ({"name": "x" * 16}, "bad TAP name"),
        ({"name": "a/b"}, "bad TAP name"),
        ({"name": "a b"}, "bad TAP name"),
        ({"mtu": 67}, "outside 68..65535"),
        ({"mtu": 65536}, "outside 68..65535"),
        ({"mtu": TAP_MAX_MTU + 1}, "the most Linux allows on a TAP"),
        ({"offloads": Offload.CSUM}, "offloads need vnet_hdr=True"),
        ({"vnet_hdr": True, "offloads": Offload.TSO4}, "need Offload.CSUM"),
        ({"addresses": ("192.0.2.1",)}, "no prefix length"),
        ({"addresses": ("192.0.2.300/24",)}, "bad address"),
        ({"addresses": ("192.0.2.1/24", "198.51.100.1/24")}, "at most one IPv4"),
        ({"mac": "02:00:00:00:01"}, "bad MAC"),
        ({"mac": "01:00:5e:00:00:01"}, "bad MAC .* unicast"),
        ({"mac": "00:00:00:00:00:00"}, "bad MAC .* not all zero"),
    ],
)
def test_bad_configurations_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TapConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mac", ["02:00:00:00:01", "02-00-00-00-00-01", "01:00:5e:00:00:01", "0:0:0:0:0:0"]
)
def test_a_bad_mac_gets_one_message_wherever_it_is_written(mac: str) -> None:
    with pytest.raises(ConfigError) as in_tap:
        TapConfig(mac=mac)
    spec = DeviceSpec("net0", "virtio-net", (("mac", mac),))
    with pytest.raises(ConfigError) as in_profile:
        standard_device_types().build(spec, DeviceContext(board="b", started_at=0.0))
    assert str(in_profile.value).endswith(str(in_tap.value))
    assert str(in_tap.value) == (
        f"bad MAC {mac!r}: write a unicast MAC as six colon-separated hex pairs with "
        "an even first byte, not all zero, e.g. 02:00:00:00:00:01"
    )
    assert parse_mac("02:AB:00:00:00:01") == bytes.fromhex("02ab00000001")


def test_good_configurations_are_accepted() -> None:
    TapConfig(name="ira%d", mtu=68, addresses=("192.0.2.1/24", "2001:db8::1/64", "fd00::1/8"))
    TapConfig(mtu=TAP_MAX_MTU, vnet_hdr=True, offloads=TCP_OFFLOADS, mac="02:00:00:00:00:01")


def test_no_tun_device_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tap_module, "TUN_DEVICE", str(tmp_path / "no-tun"))
    with pytest.raises(TransportError, match=r"^no .*no-tun: load the tun module") as info:
        Tap(TapConfig(name="ira-none"))
    assert "\n" not in str(info.value)


# --- real TAPs (root) -------------------------------------------------------------------------


@pytest.fixture
def ns() -> Iterator[NetNs]:
    require_root_support()
    with NetNs() as netns:
        yield netns


def _link(ns: NetNs, name: str) -> str:
    return ns.run(["ip", "-d", "addr", "show", name]).stdout.decode()


@pytest.mark.root
def test_a_tap_is_created_configured_and_removed(ns: NetNs) -> None:
    config = TapConfig(
        name="ira0",
        netns=ns,
        mtu=9000,
        addresses=("192.0.2.1/24", "2001:db8::1/64"),
        mac="02:00:00:00:00:01",
    )
    with Tap(config) as tap:
        assert tap.name == "ira0"
        assert tap.mtu == 9000
        assert tap.mac == "02:00:00:00:00:01"
        assert tap.is_up
        assert tap.ifindex > 1
        assert not tap.vnet_hdr
        shown = _link(ns, "ira0")
        for expected in (
            "mtu 9000",
            "link/ether 02:00:00:00:00:01",
            "inet 192.0.2.1/24 brd 192.0.2.255",
            "inet6 2001:db8::1/64",
            "tun type tap pi off vnet_hdr off",
            ",UP,",
        ):
            assert expected in shown, (expected, shown)
        tap.set_mtu(1280)
        assert tap.mtu == 1280 and "mtu 1280" in _link(ns, "ira0")
        tap.set_mac("02:00:00:00:00:02")
        assert tap.mac == "02:00:00:00:00:02"
        tap.add_address("192.0.2.7/28")  # replaces the IPv4 address
        assert "inet 192.0.2.7/28" in _link(ns, "ira0")
    assert ns.run(["ip", "link", "show", "ira0"], check=False).returncode != 0
    assert tap.closed
    tap.close()  # idempotent
    with pytest.raises(TransportError, match="closed"):
        tap.read_frame()
    with pytest.raises(TransportError, match="closed"):
        tap.write_frame(bytes(60))


@pytest.mark.root
def test_vnet_hdr_and_offloads_are_set(ns: NetNs) -> None:
    config = TapConfig(name="ira0", netns=ns, vnet_hdr=True, offloads=TCP_OFFLOADS, up=False)
    with Tap(config) as tap:
        assert tap.vnet_hdr and not tap.is_up
        assert "vnet_hdr on" in _link(ns, "ira0")
        tap.set_up()
        assert tap.is_up
        tap.set_offloads(Offload.CSUM)  # what the negotiated features allow, later
        tap.set_offloads(Offload.NONE)
        with pytest.raises(ConfigError, match=r"need Offload\.CSUM"):
            tap.set_offloads(Offload.TSO4)
    with Tap(TapConfig(name="ira1", netns=ns)) as plain:
        plain.set_offloads(Offload.NONE)
        with pytest.raises(ConfigError, match="need vnet_hdr=True"):
            plain.set_offloads(Offload.CSUM)


@pytest.mark.root
def test_frames_the_kernel_sends_are_read(ns: NetNs) -> None:
    """An ARP request for an address on the link comes out of the TAP, header first."""
    require_root_support(ping=True)
    config = TapConfig(name="ira0", netns=ns, addresses=("192.0.2.1/24",), vnet_hdr=True)
    with Tap(config) as tap:
        assert tap.read_frame() is None  # non-blocking
        ns.run(["ping", "-c", "1", "-W", "0.2", "192.0.2.9"], check=False)
        frame = _read_until(
            tap, lambda f: f[VNET_HDR_BYTES + 12 : VNET_HDR_BYTES + 14] == b"\x08\x06"
        )
        flags, gso_type, *_, num_buffers = struct.unpack_from("<BBHHHHH", frame)
        assert (flags, gso_type, num_buffers) == (0, 0, 0)
        eth = frame[VNET_HDR_BYTES:]
        assert eth[:6] == b"\xff" * 6 and eth[6:12].hex(":") == tap.mac
        assert tap.statistics().frames_read >= 1


def _read_until(tap: Tap, wanted: Callable[[bytes], bool], timeout_s: float = 3.0) -> bytes:
    while True:
        ready, _, _ = select.select([tap], [], [], timeout_s)
        assert ready, "no frame came out of the TAP"
        while (frame := tap.read_frame()) is not None:
            if wanted(frame):
                return frame


@pytest.mark.root
def test_names_taken_and_names_numbered(ns: NetNs) -> None:
    with Tap(TapConfig(name="ira0", netns=ns)):
        with pytest.raises(TransportError, match=r"name ira0 is taken: .*ip link del ira0") as info:
            Tap(TapConfig(name="ira0", netns=ns))
        assert "\n" not in str(info.value)
        with pytest.raises(TransportError, match="name lo is taken"):
            Tap(TapConfig(name="lo", netns=ns))
        with Tap(TapConfig(name="ira%d", netns=ns)) as numbered:
            assert numbered.name == "ira1"


@pytest.mark.root
def test_the_same_name_in_two_namespaces(ns: NetNs) -> None:
    with (
        NetNs() as other,
        Tap(TapConfig(name="ira0", netns=ns)),
        Tap(TapConfig(name="ira0", netns=other)),
    ):
        assert "ira0" in _link(ns, "ira0") and "ira0" in _link(other, "ira0")


@pytest.mark.root
def test_failed_configuration_leaves_no_interface(ns: NetNs) -> None:
    # two taps, the second one's address exists already: refused, and the interface is gone
    with Tap(TapConfig(name="ira0", netns=ns, addresses=("2001:db8::1/64",))):
        with pytest.raises(TransportError, match="adding 2001:db8::1/64 to ira1"):
            Tap(TapConfig(name="ira1", netns=ns, addresses=("2001:db8::1/64", "2001:db8::1/64")))
        assert ns.run(["ip", "link", "show", "ira1"], check=False).returncode != 0


@pytest.mark.root
def test_a_tap_deleted_from_outside_says_so(ns: NetNs) -> None:
    with Tap(TapConfig(name="ira0", netns=ns)) as tap:
        ns.run(["ip", "link", "del", "ira0"])
        with pytest.raises(TransportError, match="deleted from outside ira"):
            tap.read_frame()


@pytest.mark.root
def test_mtu_limits_frames_written(ns: NetNs) -> None:
    eth = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x08\x06"
    with Tap(TapConfig(name="ira0", netns=ns, mtu=1280)) as tap:
        assert tap.write_frame(eth + bytes(1280 + 4))
        assert not tap.write_frame(eth + bytes(1280 + 5))
        tap.set_mtu(1500)
        assert tap.write_frame(eth + bytes(1280 + 5))
        assert not tap.write_frame(eth[:13])
        assert tap.statistics().dropped == {Drop.OVERSIZE: 1, Drop.TRUNCATED: 1}
        assert tap.statistics().frames_written == 2


def _as_nobody(fn: Callable[[], None]) -> str:
    """Run ``fn`` in a child process as user nobody; the message of its error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            fn()
            message = "no error"
        except TransportError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"unexpected {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.mark.root
@pytest.mark.skipif(missing_root_support() is not None, reason="needs root to drop to nobody")
def test_not_root_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _as_nobody(lambda: Tap(TapConfig(name="ira-nobody")).close())
    assert message.endswith("run as root"), message
    # a TUN device node open to everyone (as on most systems): the kernel refuses TUNSETIFF
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        node = Path(tmp) / "tun"
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(10, 200))
        os.chmod(node, 0o666)
        monkeypatch.setattr(tap_module, "TUN_DEVICE", str(node))
        message = _as_nobody(lambda: Tap(TapConfig(name="ira-nobody")).close())
    assert message == "creating TAP ira-nobody needs CAP_NET_ADMIN: run as root", message
