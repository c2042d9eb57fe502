"""Board profiles: which devices a board exposes (a small TOML file).

::

    board = "bb-1"              # the board's name (board-info reports it)

    [[device]]
    type = "board-info"

    [[device]]
    type = "echo"

    [[device]]
    type = "counter"
    name = "counter-a"          # optional; tells two devices of one type apart

    [[device]]
    type = "counter"
    name = "counter-b"
    options = {}                # per-type options (the stock devices take none)

    [[device]]
    type = "virtio-net"         # a network interface on each end (ira.venet)
    options = { mtu = 9000 }    # mac (the host's; default derived from the board's
                                # name), mtu (68..65535, default 1500), offloads,
                                # header_delta (true: offer header compression)

    [[device]]
    type = "virtio-rng"         # virtio entropy (ira.virtio.entropy): `ira virtio rng LINK`
    options = { seed = 1 }      # optional: repeatable bytes; default: the OS's entropy

Each device is known by its ``name`` (default: its type), which must be unique
in the profile.  Reloading a profile on a running board (``ira board serve``
does it on SIGHUP) removes the devices whose name is gone or whose entry
changed and adds the new ones; the others stay as they are, handles and all.

Parsing is pure: ``parse_profile(text)``; ``load_profile(path)`` reads the
file first.  A malformed profile raises ``ConfigError`` with one line naming
the key.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ira.busmodel.device import Device
from ira.busmodel.devices import BoardInfo, CountingDevice, Echo, RingLoopback
from ira.errors import ConfigError
from ira.venet.device import VirtioNetDevice
from ira.venet.netspec import DEFAULT_MTU, NetPort, generated_mac, parse_mac
from ira.virtio.entropy import Entropy

#: the board name when a profile names none
DEFAULT_BOARD = "ira-board"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One ``[[device]]`` entry."""

    #: unique within the profile; what a reload matches devices by
    name: str
    #: the device type string (a key of ``DEVICE_TYPES``)
    type: str
    #: per-type options, sorted by key
    options: tuple[tuple[str, str | int | float | bool], ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    """A board's name and the devices it exposes, in order."""

    board: str = DEFAULT_BOARD
    devices: tuple[DeviceSpec, ...] = ()

    def device(self, name: str) -> DeviceSpec | None:
        for spec in self.devices:
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What a device factory may use besides its options."""

    board: str
    #: monotonic seconds when the board started
    started_at: float
    #: the link core's statistics, for board-info
    link_statistics: Callable[[], Mapping[str, int | float]] | None = None
    #: the network interface a ``virtio-net`` device bridges to, if the board has one
    net_port: Callable[[DeviceSpec], NetPort | None] | None = None


DeviceFactory = Callable[[DeviceSpec, DeviceContext], Device]


def _board_info(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    return BoardInfo(ctx.board, started_at=ctx.started_at, link_statistics=ctx.link_statistics)


def _virtio_net(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    options = dict(spec.options)
    mac, mtu, offloads, header_delta = (
        options.get("mac"),
        options.get("mtu", DEFAULT_MTU),
        options.get("offloads", True),
        options.get("header_delta", True),
    )
    if not isinstance(mtu, int) or isinstance(mtu, bool):
        raise ConfigError(f"{spec.name}: options.mtu must be an integer")
    if not isinstance(offloads, bool):
        raise ConfigError(f"{spec.name}: options.offloads must be true or false")
    if not isinstance(header_delta, bool):
        raise ConfigError(f"{spec.name}: options.header_delta must be true or false")
    if mac is not None and not isinstance(mac, str):
        raise ConfigError(f"{spec.name}: options.mac must be a string like 02:00:00:00:00:01")
    return VirtioNetDevice(
        generated_mac(ctx.board, spec.name) if mac is None else parse_mac(mac),
        mtu=mtu,
        port=ctx.net_port(spec) if ctx.net_port is not None else None,
        offloads=offloads,
        header_delta=header_delta,
    )


def _virtio_rng(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    seed = dict(spec.options).get("seed")
    if seed is None:
        return Entropy(random.SystemRandom())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{spec.name}: options.seed must be an integer")
    return Entropy(random.Random(seed))


#: device type -> (factory, allowed option names)
DEVICE_TYPES: dict[str, tuple[DeviceFactory, frozenset[str]]] = {
    "board-info": (_board_info, frozenset()),
    "echo": (lambda spec, ctx: Echo(), frozenset()),
    "counter": (lambda spec, ctx: CountingDevice(), frozenset()),
    "ring-loopback": (lambda spec, ctx: RingLoopback(), frozenset()),
    "virtio-net": (_virtio_net, frozenset({"mac", "mtu", "offloads", "header_delta"})),
    "virtio-rng": (_virtio_rng, frozenset({"seed"})),
}

#: what a board exposes when no profile is given
DEFAULT_PROFILE = Profile(
    board=DEFAULT_BOARD,
    devices=tuple(
        DeviceSpec(name=t, type=t) for t in ("board-info", "echo", "counter", "ring-loopback")
    ),
)


def build_device(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    """A new device model for ``spec``."""
    factory, _ = DEVICE_TYPES[spec.type]
    return factory(spec, ctx)


def parse_profile(text: str, *, source: str = "profile") -> Profile:
    """Parse a profile; ``ConfigError`` (one line naming the key) when malformed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"board", "device"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; expected 'board' and [[device]]")
    board = data.get("board", DEFAULT_BOARD)
    if not isinstance(board, str) or not board:
        raise ConfigError(f"{source}: 'board' must be a non-empty string")
    entries = data.get("device", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'device' must be an array of tables ([[device]])")
    devices: list[DeviceSpec] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        spec = _device_spec(entry, f"{source}: device[{index}]")
        if spec.name in names:
            raise ConfigError(
                f"{source}: device[{index}].name: {spec.name!r} is used twice; "
                "give each device of one type its own name"
            )
        names.add(spec.name)
        devices.append(spec)
    return Profile(board=board, devices=tuple(devices))


def _device_spec(entry: object, where: str) -> DeviceSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = sorted(set(entry) - {"type", "name", "options"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; use type, name and options")
    dtype = entry.get("type")
    if not isinstance(dtype, str):
        raise ConfigError(f"{where}.type: missing; one of {', '.join(sorted(DEVICE_TYPES))}")
    if dtype not in DEVICE_TYPES:
        raise ConfigError(
            f"{where}.type: unknown device type {dtype!r}; one of {', '.join(sorted(DEVICE_TYPES))}"
        )
    name = entry.get("name", dtype)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: must be a non-empty string")
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options: must be a table")
    allowed = DEVICE_TYPES[dtype][1]
    for key, value in sorted(options.items()):
        if key not in allowed:
            shown = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"{where}.options.{key}: not an option of {dtype!r} (options: {shown})"
            )
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(f"{where}.options.{key}: must be a string, number or boolean")
    return DeviceSpec(name=name, type=dtype, options=tuple(sorted(options.items())))


def load_profile(path: str | Path) -> Profile:
    """Read and parse a profile file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the profile: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the profile is not UTF-8 text") from None
    return parse_profile(text, source=str(p))
