"""udev rules for a host that serves ira boards: stable names, group access, a tag.

What the rules do, for every board a host may see:

* **USB gadget boards** (``ffs://`` on the board): the USB device whose
  manufacturer string is ``ira`` and whose VID:PID is one of the gadget ids
  (1d6b:0104 by default, the configfs composite gadget's) gets
  ``/dev/ira/<serial>`` (its usbfs node, what libusb opens), the group's
  read/write permission (mode 0660, never world-writable) and the tag ``ira``;
  the gadget's CDC-ACM port, if it has one, gets ``/dev/ira/acm/<serial>`` (in a
  folder of its own: the same board through another port, which the watching
  host leaves alone, as it serves the board over its USB interface).
* **USB-serial adapters named in a board list** (a TOML file of ``[[board]]``
  tables with ``name``, ``serial`` and optionally ``vid``/``pid``): the tty
  gets ``/dev/ira/<name>``, the group's permission and the tag.

The tag is what ``ira host serve --watch`` follows.  ``render_rules`` makes
the file; ``check_rules`` parses a rules file with udev's own grammar (one
rule a line, ``KEY[{attr}] OP "value"`` pairs separated by commas,
backslash-newline continuations) and names the line and the fix of the first
thing udev would refuse; ``install``/``uninstall`` put the file in place and
reload udev.  udev's own tools check the same file in the tests.
"""

from __future__ import annotations

import grp
import re
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ira.errors import ConfigError

#: where ``install`` puts the rules; 70: after the distribution's 60-serial.rules
RULES_DIR = Path("/etc/udev/rules.d")
RULES_NAME = "70-ira.rules"
#: the tag ``ira host serve --watch`` follows
TAG = "ira"
#: the group that gets access when none is named (Debian's group for removable devices)
DEFAULT_GROUP = "plugdev"
#: the configfs composite gadget's ids, what ``ffs://`` uses by default
DEFAULT_GADGET_IDS = ((0x1D6B, 0x0104),)
#: the manufacturer string every ira gadget announces
GADGET_MANUFACTURER = "ira"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SERIAL = re.compile(r"[\x21-\x7e]{1,126}")


@dataclass(frozen=True, slots=True)
class Adapter:
    """A USB-serial adapter of a board list: its serial number and the name it gets."""

    #: ``/dev/ira/<name>``
    name: str
    #: the adapter's iSerialNumber (udev's ATTRS{serial})
    serial: str
    vid: int | None = None
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """What the rules grant and to whom."""

    group: str = DEFAULT_GROUP
    gadget_ids: tuple[tuple[int, int], ...] = DEFAULT_GADGET_IDS
    adapters: tuple[Adapter, ...] = field(default_factory=tuple)


def _quote_check(text: str, what: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ConfigError(f"{what} {text!r} may not contain quotes, backslashes or newlines")
    return text


def render_rules(config: RulesConfig) -> str:
    """The rules file for ``config``."""
    group = _quote_check(config.group, "group")
    grant = f'MODE="0660", GROUP="{group}", TAG+="{TAG}"'
    lines = [
        "# ira boards: stable names under /dev/ira, access for one group, the tag the",
        "# host service follows. Made by `ira udev install`; `ira udev uninstall` removes it.",
        "",
        'ACTION=="remove", GOTO="ira_end"',
        "",
        "# USB gadget boards: the device node libusb opens, and the gadget's CDC-ACM port",
    ]
    for vid, pid in config.gadget_ids:
        ids = f'ATTR{{idVendor}}=="{vid:04x}", ATTR{{idProduct}}=="{pid:04x}"'
        lines.append(
            f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", {ids}, '
            f'ATTR{{manufacturer}}=="{GADGET_MANUFACTURER}", {grant}, '
            'SYMLINK+="ira/$attr{serial}"'
        )
        parent_ids = ids.replace("ATTR{", "ATTRS{")
        lines.append(
            f'SUBSYSTEM=="tty", {parent_ids}, ATTRS{{manufacturer}}=="{GADGET_MANUFACTURER}", '
            f'{grant}, SYMLINK+="ira/acm/$attr{{serial}}"'
        )
    if config.adapters:
        lines += ["", "# USB-serial adapters of the board list"]
    for adapter in config.adapters:
        match = [f'ATTRS{{serial}}=="{_quote_check(adapter.serial, "serial")}"']
        if adapter.vid is not None:
            match.append(f'ATTRS{{idVendor}}=="{adapter.vid:04x}"')
        if adapter.pid is not None:
            match.append(f'ATTRS{{idProduct}}=="{adapter.pid:04x}"')
        lines.append(
            f'SUBSYSTEM=="tty", {", ".join(match)}, {grant}, SYMLINK+="ira/{adapter.name}"'
        )
    lines += ["", 'LABEL="ira_end"', ""]
    return "\n".join(lines)


# --- the board list ------------------------------------------------------------------------


def _int_key(table: dict[str, object], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            raise ConfigError(f"{where}: {key} {value!r} is not a hex USB id like 0403") from None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise ConfigError(f"{where}: {key} must be a 16-bit USB id (a number or hex string)")
    return value


def load_adapters(path: Path) -> tuple[Adapter, ...]:
    """The ``[[board]]`` tables of a board list; ``ConfigError`` naming file and key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read board list {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from exc
    boards = data.get("board", [])
    if not isinstance(boards, list) or set(data) - {"board"}:
        raise ConfigError(f"{path}: a board list holds only [[board]] tables")
    adapters: list[Adapter] = []
    for index, table in enumerate(boards, start=1):
        where = f"{path}: board {index}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(table) - {"name", "serial", "vid", "pid"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {sorted(unknown)[0]!r} (name, serial, vid, pid)"
            )
        name, serial = table.get("name"), table.get("serial")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: name must be 1-64 of A-Z a-z 0-9 . _ - (got {name!r})")
        if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
            raise ConfigError(f"{where}: serial must be the adapter's printable serial number")
        if '"' in serial or "\\" in serial:
            raise ConfigError(f"{where}: serial may not contain quotes or backslashes")
        adapters.append(
            Adapter(name, serial, _int_key(table, "vid", where), _int_key(table, "pid", where))
        )
    names = [a.name for a in adapters]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{path}: board name {name!r} appears twice; names must be unique")
    return tuple(adapters)


# --- udev's grammar ------------------------------------------------------------------------

#: keys udev knows, and whether they take an {attribute}
_MATCH_KEYS = {
    "ACTION", "DEVPATH", "KERNEL", "NAME", "SYMLINK", "SUBSYSTEM", "DRIVER", "KERNELS",
    "SUBSYSTEMS", "DRIVERS", "TAG", "TAGS", "TEST", "PROGRAM", "RESULT", "CONST", "SYSCTL",
}  # fmt: skip
_ASSIGN_KEYS = {
    "NAME", "SYMLINK", "OWNER", "GROUP", "MODE", "TAG", "SECLABEL", "RUN", "LABEL", "GOTO",
    "IMPORT", "OPTIONS", "WAIT_FOR",
}  # fmt: skip
_ATTR_KEYS = {"ATTR", "ATTRS", "ENV", "SYSCTL", "TEST", "IMPORT", "RUN", "SECLABEL", "CONST"}
_PAIR = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


@dataclass(frozen=True, slots=True)
class RulePair:
    key: str
    attr: str | None
    op: str
    value: str


def parse_rule(text: str, where: str) -> list[RulePair]:
    """One rule's pairs; ``ConfigError`` naming ``where`` and what to fix."""
    pairs: list[RulePair] = []
    pos = 0
    while pos < len(text):
        m = _PAIR.match(text, pos)
        if m is None:
            snippet = text[pos : pos + 30].strip()
            raise ConfigError(
                f'{where}: cannot parse {snippet!r}: write KEY=="value" or KEY="value" pairs '
                "separated by commas, values in double quotes"
            )
        key, attr, op, value = m.groups()
        if key not in _MATCH_KEYS | _ASSIGN_KEYS | _ATTR_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}")
        if (key in _ATTR_KEYS and key not in ("IMPORT", "RUN")) and attr is None:
            raise ConfigError(f"{where}: {key} needs an attribute, as {key}{{name}}")
        if attr is not None and key not in _ATTR_KEYS:
            raise ConfigError(f"{where}: {key} takes no {{attribute}}")
        if op in ("==", "!=") and key not in _MATCH_KEYS | _ATTR_KEYS:
            raise ConfigError(f"{where}: {key} can only be assigned, not compared ({key}=)")
        if op not in ("==", "!=") and key not in _ASSIGN_KEYS | {"ENV", "ATTR", "SYSCTL"}:
            raise ConfigError(f"{where}: {key} can only be compared ({key}==), not assigned")
        if key == "MODE" and not re.fullmatch(r"0?[0-7]{3}", value):
            raise ConfigError(f"{where}: MODE {value!r} must be octal like 0660")
        pairs.append(RulePair(key, attr, op, value))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ConfigError(f"{where}: pairs must be separated by commas")
            pos += 1
    if not pairs:
        raise ConfigError(f"{where}: empty rule")
    return pairs


def check_rules(text: str, source: str) -> list[list[RulePair]]:
    """Every rule of a rules file, checked; the first error names ``source:line``."""
    rules: list[list[RulePair]] = []
    labels: set[str] = set()
    gotos: list[tuple[str, str]] = []
    logical = ""
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not logical:
            start = number
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        stripped = logical.strip()
        logical = ""
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{start}"
        pairs = parse_rule(stripped, where)
        for pair in pairs:
            if pair.key == "LABEL":
                labels.add(pair.value)
            elif pair.key == "GOTO":
                gotos.append((pair.value, where))
            elif pair.key == "MODE" and int(pair.value, 8) & 0o002:
                raise ConfigError(f"{where}: MODE {pair.value} is world-writable; use 0660")
        rules.append(pairs)
    if logical:
        raise ConfigError(f"{source}:{start}: the file ends inside a continued line")
    for label, where in gotos:
        if label not in labels:
            raise ConfigError(f"{where}: GOTO {label!r} has no LABEL of that name")
    return rules


# --- the host service ----------------------------------------------------------------------

#: where ``install_host_unit`` puts the systemd unit
UNIT_DIR = Path("/etc/systemd/system")
UNIT_NAME = "ira-host.service"


def render_host_unit(ira: str, directory: str = "/dev/ira") -> str:
    """The systemd unit that runs ``ira host serve --watch`` at boot (``ira`` is its path)."""
    for text, what in ((ira, "ira's path"), (directory, "the watched directory")):
        if not text.startswith("/") or any(c.isspace() for c in text):
            raise ConfigError(f"{what} {text!r} must be an absolute path without spaces")
    return (
        "[Unit]\n"
        "Description=ira host service: serves the ira boards plugged into this machine\n"
        "After=systemd-udevd.service network.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={ira} host serve --watch {directory}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def install_host_unit(ira: str, unit_dir: Path = UNIT_DIR, *, enable: bool = True) -> Path:
    """Write the unit; with systemd running, reload it and enable and start the service."""
    path = unit_dir / UNIT_NAME
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(render_host_unit(ira), encoding="utf-8")
    except PermissionError as exc:
        raise ConfigError(f"cannot write {path}: run as root") from exc
    if enable and Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        for args in (["daemon-reload"], ["enable", "--now", UNIT_NAME]):
            done = subprocess.run(["systemctl", *args], capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                raise ConfigError(f"{path} written, but systemctl {' '.join(args)}: {reason}")
    return path


# --- installing ----------------------------------------------------------------------------


def check_group(group: str) -> None:
    """``ConfigError`` naming the fix when the group does not exist."""
    try:
        grp.getgrnam(group)
    except KeyError:
        raise ConfigError(
            f"no group {group!r} on this machine: create it (groupadd {group}) and add "
            f"the users who run ira to it (usermod -aG {group} USER), or name another "
            "with --group"
        ) from None


def _udevadm(args: Sequence[str]) -> str | None:
    """Run udevadm; a line saying what went wrong, or None (also when there is none)."""
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        return None
    done = subprocess.run([udevadm, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return f"udevadm {' '.join(args)}: {reason}"
    return None


#: udevd's control socket: where it is missing, udev is not running (a container, a chroot)
UDEV_CONTROL = Path("/run/udev/control")


def udev_running() -> bool:
    """True when udevd runs here, so a reload reaches it."""
    return shutil.which("udevadm") is not None and UDEV_CONTROL.exists()


def install(config: RulesConfig, rules_dir: Path = RULES_DIR, *, reload: bool = True) -> Path:
    """Write the rules (checked first), reload udev and replay add events; the file's path.

    Where udev is not running the file is written and takes effect when it starts.
    """
    check_group(config.group)
    text = render_rules(config)
    path = rules_dir / RULES_NAME
    check_rules(text, str(path))
    try:
        rules_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{RULES_NAME}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(path)
    except PermissionError as exc:
        raise ConfigError(f"cannot write {path}: run as root (sudo ira udev install)") from exc
    if reload and udev_running():
        for args in (["control", "--reload"], ["trigger", "--action=add"]):
            problem = _udevadm(args)
            if problem is not None:
                raise ConfigError(f"{path} written, but {problem}")
    return path


def uninstall(rules_dir: Path = RULES_DIR, *, reload: bool = True) -> Path | None:
    """Remove the rules file; its path, or None when there was none."""
    path = rules_dir / RULES_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise ConfigError(f"cannot remove {path}: run as root (sudo ira udev uninstall)") from exc
    if reload and udev_running():
        _udevadm(["control", "--reload"])
    return path


__all__ = [
    "DEFAULT_GADGET_IDS",
    "DEFAULT_GROUP",
    "RULES_DIR",
    "RULES_NAME",
    "TAG",
    "Adapter",
    "RulePair",
    "RulesConfig",
    "check_group",
    "check_rules",
    "install",
    "install_host_unit",
    "load_adapters",
    "parse_rule",
    "render_host_unit",
    "render_rules",
    "udev_running",
    "uninstall",
]
