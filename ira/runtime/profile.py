"""Board profiles: everything a board needs, in one TOML file (docs/PROFILES.md).

::

    board = "bb-1"                # the board's name (board-info reports it)

    [link]                        # how the board reaches its host
    spec = "/dev/ttyUSB0"         # a device path or link URL (``ira board serve LINK``)
    baud = 115200                 # serial ports: line rate
    flow_control = "rtscts"       # serial ports: "none" or "rtscts"

    [net]                         # a TAP bridged to the board's virtio-net device
    tap = "ira0"
    address = "10.0.0.1/24"
    mtu = 1500

    [[device]]
    type = "echo"

    [[device]]
    type = "virtio-net"
    options = { header_delta = true }

Device types come from a ``DeviceTypes`` registry that each layer fills in
(``standard_device_types()``); each ``[[device]]`` is checked against its type
(options, their types and ranges) here, before anything is built or opened.
Each device is known by its ``name`` (default: its type), unique in the
profile.  Reloading a profile on a running board (``ira board serve`` does it
on SIGHUP) removes the devices whose name is gone or whose entry changed and
adds the new ones; the others stay as they are, handles and all.

Parsing is pure: ``parse_profile(text, source=...)``; ``load_profile(path)``
reads the file first.  A malformed profile raises ``ConfigError`` with one
line ``FILE:LINE: KEY: what is wrong``.
"""

from __future__ import annotations

import enum
import re
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path

from ira.busmodel import devices
from ira.busmodel.registry import DeviceContext, DeviceSpec, DeviceTypes, OptionValue
from ira.errors import ConfigError, LocalProtocolError
from ira.runtime.tap import TAP_MAX_MTU, TapConfig, parse_cidr
from ira.runtime.tomlkeys import KeyPath, format_key, key_lines, line_of
from ira.venet import device as venet_device
from ira.venet.device import NetPortFor, PacingFor
from ira.virtio import entropy
from ira.wire.bus import MAX_ATTR_VALUE_BYTES, Attribute, DevAdd, encode
from ira.wire.venet import MIN_MTU

__all__ = [
    "DEFAULT_BOARD",
    "DEFAULT_PROFILE",
    "DeviceSpec",
    "FlowControl",
    "LinkSettings",
    "NetSettings",
    "Profile",
    "load_profile",
    "parse_profile",
    "standard_device_types",
]

#: the entry-point group other packages register device types in
ENTRY_POINT_GROUP = "ira.device_types"
#: the board name when a profile names none
DEFAULT_BOARD = "ira-board"
#: line rates a profile may ask for (bits per second)
MIN_BAUD, MAX_BAUD = 50, 12_000_000


class FlowControl(enum.Enum):
    """Flow control of a serial link."""

    NONE = "none"
    #: RTS/CTS hardware flow control
    RTSCTS = "rtscts"


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """``[link]``: how the board reaches its host."""

    #: a device path or link URL; None: the command line must give one
    spec: str | None = None
    #: serial ports: line rate; None: the spec's (else 115200)
    baud: int | None = None
    #: serial ports: None: the spec's (else none)
    flow_control: FlowControl | None = None
    #: a USB gadget board (``ffs://``): the vendor and product ids and the serial number
    #: it announces; None: the spec's (else ira's test ids, no serial)
    usb_vid: int | None = None
    usb_pid: int | None = None
    usb_serial: str | None = None
    #: the pre-shared key's file (``--psk-file``); a relative path is the profile's directory's
    psk_file: str | None = None

    def link_spec(self, spec: str | None = None) -> str:
        """The link spec to open: ``spec`` (a command line's) else ours, with the serial
        settings added as ``serial://`` options and the USB ones as ``ffs://`` options;
        ``ConfigError`` if there is no spec or a setting does not apply to it."""
        spec = spec or self.spec
        if not spec:
            raise ConfigError(
                "no link: give LINK on the command line or spec in the profile's [link]"
            )
        serial = [
            (key, value)
            for key, value in (
                ("baud", None if self.baud is None else str(self.baud)),
                ("rtscts", _rtscts(self.flow_control)),
            )
            if value is not None
        ]
        usb = [
            (key, value)
            for key, value in (
                ("vid", None if self.usb_vid is None else f"0x{self.usb_vid:04x}"),
                ("pid", None if self.usb_pid is None else f"0x{self.usb_pid:04x}"),
                ("serial", self.usb_serial),
            )
            if value is not None
        ]
        scheme = spec.split("://", 1)[0].lower() if "://" in spec else "serial"
        for options, wanted, what in (
            (serial, "serial", "baud and flow_control apply to serial ports"),
            (usb, "ffs", "usb_vid, usb_pid and usb_serial apply to a USB gadget (ffs://)"),
        ):
            if options and scheme != wanted:
                raise ConfigError(f"{what}, not to {spec!r}: leave them out of [link]")
        options = serial + usb
        if not options:
            return spec
        if "://" not in spec:
            spec = f"serial://{spec}"
        given = urllib.parse.parse_qsl(urllib.parse.urlsplit(spec).query)
        twice = sorted({k for k, _ in given} & {k for k, _ in options})
        if twice:
            raise ConfigError(f"{twice[0]} is given both in {spec!r} and in [link]: give it once")
        sep = "&" if "?" in spec.split("://", 1)[1] else "?"
        return f"{spec}{sep}{urllib.parse.urlencode(options)}"


def _rtscts(flow_control: FlowControl | None) -> str | None:
    if flow_control is None:
        return None
    return "1" if flow_control is FlowControl.RTSCTS else "0"


@dataclass(frozen=True, slots=True)
class NetSettings:
    """``[net]``: a TAP interface bridged to the board's ``virtio-net`` device."""

    #: the TAP's name (1-15 bytes)
    tap: str
    #: its address with prefix length; None: no address
    address: str | None = None
    #: its MTU, which the device then offers the host too; None: the device's option
    mtu: int | None = None
    #: carry virtio-net headers and offer checksum/GSO offloads
    offloads: bool = True


#: the values of a profile's ``role``
ROLES = ("board", "host")


@dataclass(frozen=True, slots=True)
class Profile:
    """A board: its name, its link, its network interface and its devices, in order."""

    board: str = DEFAULT_BOARD
    devices: tuple[DeviceSpec, ...] = ()
    link: LinkSettings = field(default_factory=LinkSettings)
    net: NetSettings | None = None
    #: which side the machine that has this profile runs: "board" (``ira board serve``) or
    #: "host" (``ira host serve`` on the link: a board that is the host of another, as
    #: ``ira flash`` installs it)
    role: str = "board"

    def device(self, name: str) -> DeviceSpec | None:
        for spec in self.devices:
            if spec.name == name:
                return spec
        return None


#: what a board exposes when no profile is given
DEFAULT_PROFILE = Profile(
    board=DEFAULT_BOARD,
    devices=tuple(
        DeviceSpec(name=t, type=t) for t in ("board-info", "echo", "counter", "ring-loopback")
    ),
)


def standard_device_types(
    net_port: NetPortFor | None = None, pacing: PacingFor | None = None
) -> DeviceTypes:
    """Every layer's device types, then those of other packages (each entry point of the
    group ``ira.device_types`` is a ``register_device_types(types)`` function);
    ``virtio-net`` devices bridge to ``net_port(spec)`` and pace themselves by
    ``pacing()``, the link's backlog."""
    types = DeviceTypes()
    devices.register_device_types(types)
    entropy.register_device_types(types)
    venet_device.register_device_types(types, net_port, pacing)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.value
        try:
            register: Callable[[DeviceTypes], None] = ep.load()
        except ImportError as exc:
            raise ConfigError(f"device types of {dist} cannot be loaded: {exc}") from exc
        register(types)
    return types


class _Reader:
    """One profile text being checked: every error names the source, line and key."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.text = text
        self._lines: dict[KeyPath, int] | None = None

    def error(self, path: KeyPath, why: str) -> ConfigError:
        if self._lines is None:
            self._lines = key_lines(self.text)
        line = line_of(self._lines, path)
        key = format_key(path)
        return ConfigError(f"{self.source}:{line}: {key}: {why}")

    def table(self, data: dict[str, object], path: KeyPath, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                raise self.error((*path, key), f"unknown key; expected {', '.join(allowed)}")

    def string(self, data: dict[str, object], path: KeyPath, key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error((*path, key), "must be a non-empty string")
        return value

    def integer(
        self, data: dict[str, object], path: KeyPath, key: str, low: int, high: int
    ) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error((*path, key), f"must be an integer ({low}..{high})")
        if not low <= value <= high:
            raise self.error((*path, key), f"{value} is out of range ({low}..{high})")
        return value

    def boolean(self, data: dict[str, object], path: KeyPath, key: str) -> bool | None:
        value = data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.error((*path, key), "must be true or false")
        return value


def parse_profile(
    text: str, *, source: str = "profile", types: DeviceTypes | None = None
) -> Profile:
    """Parse and check a profile against ``types`` (default: ``standard_device_types()``);
    ``ConfigError`` (one line: source, line, key) when it is not valid."""
    types = types or standard_device_types()
    reader = _Reader(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(text, source, exc) from None
    reader.table(data, (), ("board", "role", "link", "net", "device"))
    board = reader.string(data, (), "board") or DEFAULT_BOARD
    role = reader.string(data, (), "role") or "board"
    if role not in ROLES:
        raise reader.error(("role",), f"{role!r}; expected {' or '.join(map(repr, ROLES))}")
    if len(board.encode()) > MAX_ATTR_VALUE_BYTES:
        raise reader.error(
            ("board",),
            f"{len(board.encode())} bytes long; at most {MAX_ATTR_VALUE_BYTES} (board-info "
            "announces it): choose a shorter name",
        )
    profile = Profile(
        board=board,
        devices=_devices(reader, data.get("device", []), types),
        link=_link(reader, data.get("link", {})),
        net=_net(reader, data.get("net")),
        role=role,
    )
    for index, spec in enumerate(profile.devices):
        _check_announceable(spec, board, types, f"{source}: device[{index}]")
    return profile


def _check_announceable(spec: DeviceSpec, board: str, types: DeviceTypes, where: str) -> None:
    """Build the device once (no link, no interface) and encode its DEVADD, so that a
    type or attributes longer than the bus can announce are refused at start, not at
    the first ``ira host list``."""
    device = types.build(spec, DeviceContext(board, started_at=0.0))
    attrs = tuple(Attribute(k, v) for k, v in device.attributes().items())
    try:
        encode(DevAdd(0, device.version, device.type, attrs))
    except LocalProtocolError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _syntax_error(text: str, source: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """tomllib's message ends "(at line L, column C)" or "(at end of document)": lead
    with the line and the key written on it."""
    message = str(exc)
    lines = text.splitlines()
    found = re.search(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$", message)
    if found is None:
        return ConfigError(f"{source}:1: not valid TOML: {message}")
    number = int(found.group(1)) if found.group(1) else max(len(lines), 1)
    what = message[: found.start()]
    if found.group(2):
        what += f" (column {found.group(2)})"
    written = lines[number - 1] if 0 < number <= len(lines) else ""
    key = re.match(r"\s*([^=\s\[\]]+)\s*=", written)
    where = f" {key.group(1)}:" if key else ""
    return ConfigError(f"{source}:{number}:{where} not valid TOML: {what}")


def _link(reader: _Reader, data: object) -> LinkSettings:
    path: KeyPath = ("link",)
    if not isinstance(data, dict):
        raise reader.error(path, "must be a table ([link])")
    reader.table(
        data, path, ("spec", "baud", "flow_control", "usb_vid", "usb_pid", "usb_serial", "psk_file")
    )
    flow = data.get("flow_control")
    if flow is not None and flow not in {f.value for f in FlowControl}:
        why = (
            "xonxoff cannot carry binary frames (they contain the XON/XOFF bytes)"
            if flow == "xonxoff"
            else "must be one of"
        )
        raise reader.error((*path, "flow_control"), f'{why}: use "none" or "rtscts"')
    link = LinkSettings(
        spec=reader.string(data, path, "spec"),
        baud=reader.integer(data, path, "baud", MIN_BAUD, MAX_BAUD),
        flow_control=None if flow is None else FlowControl(flow),
        usb_vid=reader.integer(data, path, "usb_vid", 0, 0xFFFF),
        usb_pid=reader.integer(data, path, "usb_pid", 0, 0xFFFF),
        usb_serial=reader.string(data, path, "usb_serial"),
        psk_file=reader.string(data, path, "psk_file"),
    )
    if link.spec is not None:  # the settings must apply to the spec: each group on its own
        for keys, alone in (
            (("baud", "flow_control"), replace(link, usb_vid=None, usb_pid=None, usb_serial=None)),
            (("usb_vid", "usb_pid", "usb_serial"), replace(link, baud=None, flow_control=None)),
        ):
            try:
                alone.link_spec()
            except ConfigError as exc:
                key = next(k for k in keys if k in data)
                raise reader.error((*path, key), str(exc)) from None
    return link


def _net(reader: _Reader, data: object) -> NetSettings | None:
    path: KeyPath = ("net",)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise reader.error(path, "must be a table ([net])")
    reader.table(data, path, ("tap", "address", "mtu", "offloads"))
    tap = reader.string(data, path, "tap")
    if tap is None:
        raise reader.error((*path, "tap"), 'missing: name the TAP interface, e.g. tap = "ira0"')
    try:
        TapConfig(name=tap)
    except ConfigError as exc:
        raise reader.error((*path, "tap"), str(exc)) from None
    address = reader.string(data, path, "address")
    if address is not None:
        try:
            parse_cidr(address)
        except ConfigError as exc:
            raise reader.error((*path, "address"), str(exc)) from None
    offloads = reader.boolean(data, path, "offloads")
    return NetSettings(
        tap=tap,
        address=address,
        mtu=reader.integer(data, path, "mtu", MIN_MTU, TAP_MAX_MTU),
        offloads=True if offloads is None else offloads,
    )


def _devices(reader: _Reader, entries: object, types: DeviceTypes) -> tuple[DeviceSpec, ...]:
    if not isinstance(entries, list):
        raise reader.error(("device",), "must be an array of tables ([[device]])")
    specs: list[DeviceSpec] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        path: KeyPath = ("device", index)
        spec = _device_spec(reader, entry, path, types)
        if spec.name in names:
            raise reader.error(
                (*path, "name"),
                f"{spec.name!r} is used twice; give each device of one type its own name",
            )
        names.add(spec.name)
        specs.append(spec)
    return tuple(specs)


def _device_spec(reader: _Reader, entry: object, path: KeyPath, types: DeviceTypes) -> DeviceSpec:
    if not isinstance(entry, dict):
        raise reader.error(path, "must be a table")
    reader.table(entry, path, ("type", "name", "options"))
    dtype = entry.get("type")
    if not isinstance(dtype, str):
        raise reader.error((*path, "type"), f"missing; one of {', '.join(types.names())}")
    name = entry.get("name", dtype)
    if not isinstance(name, str) or not name:
        raise reader.error((*path, "name"), "must be a non-empty string")
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise reader.error((*path, "options"), "must be a table")
    given: list[tuple[str, OptionValue]] = []
    for key, value in sorted(options.items()):
        if not isinstance(value, str | int | float | bool):
            raise reader.error((*path, "options", key), "must be a string, number or boolean")
        given.append((key, value))
    spec = DeviceSpec(name=name, type=dtype, options=tuple(given))
    problem = types.problem(spec)
    if problem is not None:
        keys, why = problem
        raise reader.error((*path, *keys), why)
    return spec


def load_profile(path: str | Path, *, types: DeviceTypes | None = None) -> Profile:
    """Read and parse a profile file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the profile: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the profile is not UTF-8 text") from None
    profile = parse_profile(text, source=str(p), types=types)
    psk_file = profile.link.psk_file
    if psk_file is not None:
        profile = replace(profile, link=replace(profile.link, psk_file=str(p.parent / psk_file)))
    return profile
