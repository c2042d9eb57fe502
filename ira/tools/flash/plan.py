"""What ``ira flash`` will do to a board: the board's checks and the install plan.

Pure functions (no console, no files): ``read_profile`` takes what flashing
needs from a profile's text, ``parse_probe`` reads the board's answer to
``probe_command``, ``check_board`` turns a probe into one line per problem,
``install_plan`` builds the JSON plan the installer carries out (on the board
through the stub, or on a mounted root filesystem for ``--rootfs``).
"""

from __future__ import annotations

import base64
import json
import tomllib
import zlib
from dataclasses import dataclass

from ira.errors import ConfigError
from ira.runtime.profile import parse_profile

#: the oldest Python the payload runs on (tomllib, typing of ira)
MIN_PYTHON = (3, 11)
#: room the install needs beyond the stream and two copies of the payload
SPARE_BYTES = 1 << 20
PROFILE_PATH = "/etc/ira/board.toml"
UNIT_PATH = "/etc/systemd/system/ira-board.service"
UNIT_WANTS = "/etc/systemd/system/multi-user.target.wants/ira-board.service"
INITD_PATH = "/etc/init.d/S90ira-board"
WRAPPER_PATH = "/usr/local/bin/ira"


@dataclass(frozen=True, slots=True)
class BoardProfile:
    """What flashing reads from a profile."""

    text: str
    board: str
    link: str | None
    device_types: tuple[str, ...]
    #: "board" (the service is ``ira board serve``) or "host" (``ira host serve LINK``)
    role: str = "board"
    baud: int | None = None
    #: a host profile's ``[net]``: ``ira host serve``'s ``--tap NAME --ip CIDR``
    host_args: tuple[str, ...] = ()


def read_profile(text: str, *, source: str, known_types: tuple[str, ...]) -> BoardProfile:
    """The board's name, link and device types; ``ConfigError`` (one line) if the profile
    does not parse or names a device type the payload cannot serve."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not a TOML profile: {exc}") from exc
    link = data.get("link", {})
    spec = link.get("spec") if isinstance(link, dict) else None
    devices = data.get("device", [])
    types = tuple(str(d.get("type")) for d in devices if isinstance(d, dict))
    for dtype in types:
        if dtype not in known_types:
            raise ConfigError(
                f"{source}: device type {dtype!r} is not in the payload "
                f"(it serves {', '.join(known_types)}): fix the profile's [[device]] type"
            )
    parsed = parse_profile(text, source=source)  # the whole profile, as the board reads it
    if parsed.role == "host" and not spec:
        raise ConfigError(f"{source}: role = 'host' needs the link: give [link] spec")
    board = str(data.get("board", "ira-board"))
    net = parsed.net
    host_args: tuple[str, ...] = ()
    if parsed.role == "host" and net is not None:
        host_args = ("--tap", net.tap, *(("--ip", net.address) if net.address else ()))
    return BoardProfile(text, board, spec, types, parsed.role, parsed.link.baud, host_args)


_PROBE = """\
import sys, os, json, shutil, platform, hashlib
r = sys.argv[1]
d = r
while not os.path.isdir(d):
    d = os.path.dirname(d) or "/"
def sha(n):
    p = os.path.join(r, "opt/ira", n)
    try:
        want = open(os.path.join(p, "SHA256")).read().strip()
        got = hashlib.sha256(open(os.path.join(p, "ira.pyz"), "rb").read()).hexdigest()
        return want if want == got else "damaged"
    except OSError:
        return None
try:
    import lzma
    lz = True
except ImportError:
    lz = False
print("__IRA_PROBE__" + json.dumps({"python": list(sys.version_info[:3]),
    "machine": platform.machine(), "free": shutil.disk_usage(d).free,
    "systemd": os.path.isdir("/run/systemd/system"), "lzma": lz,
    "current": sha("current"), "previous": sha("previous")}))
"""


#: the longest line a board's shell takes: busybox ash's line editing cuts at 1024
MAX_LINE = 1000


def probe_command(python: str, root: str) -> str:
    """One shell line that prints the board's facts as ``__IRA_PROBE__{json}``; compressed,
    so that with ``Console.run``'s markers it stays below ``MAX_LINE``."""
    code = base64.b64encode(zlib.compress(_PROBE.encode(), 9)).decode()
    return (
        f"{python} -c \"import base64,zlib;exec(zlib.decompress(base64.b64decode('{code}')))\""
        f" '{root}'"
    )


@dataclass(frozen=True, slots=True)
class Probe:
    python: tuple[int, int, int]
    machine: str
    free: int
    systemd: bool
    lzma: bool
    current: str | None
    previous: str | None


def parse_probe(rc: int, output: str, *, python: str) -> Probe | str:
    """The probe, or one line saying what is wrong with the board's Python."""
    if rc == 127 or "not found" in output:
        return f"no {python} on the board: install Python >= 3.11 there (or give --python PATH)"
    start = output.find("__IRA_PROBE__")
    if rc != 0 or start < 0:
        return f"{python} on the board failed to run the probe: {output[-120:]!r}"
    try:
        d = json.loads(output[start + len("__IRA_PROBE__") :].splitlines()[0])
        py = d["python"]
        return Probe(
            (int(py[0]), int(py[1]), int(py[2])),
            str(d["machine"]),
            int(d["free"]),
            bool(d["systemd"]),
            bool(d["lzma"]),
            d["current"],
            d["previous"],
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return f"the board's probe answer is unreadable: {output[-120:]!r}"


def check_board(probe: Probe, *, stream_bytes: int, payload_bytes: int) -> list[str]:
    """One line per reason the board cannot take the payload (empty: it can)."""
    problems = []
    if probe.python[:2] < MIN_PYTHON:
        have = ".".join(map(str, probe.python))
        problems.append(f"the board's Python is {have}; ira needs >= 3.11: upgrade it")
    need = stream_bytes + 2 * payload_bytes + SPARE_BYTES
    if probe.free < need:
        problems.append(
            f"the board has {probe.free} bytes free where ira goes; it needs {need}: make room"
        )
    return problems


def serve_command(wrapper: str, profile_path: str, profile: BoardProfile) -> list[str]:
    """``ira board serve --profile FILE``: the link and everything else is in the profile;
    on a profile whose role is host, ``ira host serve LINK`` on the profile's link."""
    if profile.role == "host" and profile.link:
        link = profile.link
        if link.startswith("/") and profile.baud:
            link = f"serial://{link}?baud={profile.baud}"
        return [wrapper, "host", "serve", link, *profile.host_args]
    return [wrapper, "board", "serve", "--profile", profile_path]


def install_plan(
    *,
    profile: BoardProfile,
    version_id: str,
    sha256_hex: str,
    python: str,
    board_root: str,
    start: str,
    action: str = "install",
) -> dict[str, object]:
    """The plan: files, links and how to start the service.  ``board_root`` prefixes the
    paths *inside* the files (``/`` on a board; the install root in tests); ``start``
    is ``systemd``, ``initd``, ``process`` (a detached process: install roots) or
    ``none`` (a root filesystem that is not running)."""
    root = board_root.rstrip("/")
    wrapper, prof = root + WRAPPER_PATH, root + PROFILE_PATH
    serve = serve_command(wrapper, prof, profile)
    gadget = profile.link is not None and profile.link.startswith("ffs://")
    unit = "\n".join(
        [
            "[Unit]",
            "Description=ira board side (ira board serve)",
            "After=local-fs.target",
            "",
            "[Service]",
            *(["ExecStartPre=-/sbin/modprobe libcomposite"] if gadget else []),
            "ExecStart=" + " ".join(serve),
            "Restart=always",
            "RestartSec=2",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
    initd = "\n".join(
        [
            "#!/bin/sh",
            "# ira board side: started at boot by rcS (S90), written by ira flash",
            f"PID={root}/run/ira-board.pid",
            'case "$1" in',
            "  start)",
            *(["    modprobe libcomposite 2>/dev/null"] if gadget else []),
            f"    {' '.join(serve)} >{root}/var/log/ira-board.log 2>&1 &",
            '    echo $! > "$PID" ;;',
            '  stop) [ -f "$PID" ] && kill "$(cat "$PID")" 2>/dev/null; rm -f "$PID" ;;',
            '  restart) "$0" stop; sleep 1; "$0" start ;;',
            '  *) echo "usage: $0 start|stop|restart"; exit 2 ;;',
            "esac",
            "",
        ]
    )
    files = [
        {"path": PROFILE_PATH, "mode": 0o644, "text": profile.text},
        {
            "path": WRAPPER_PATH,
            "mode": 0o755,
            "text": wrapper_script(python, root),
        },
        {"path": UNIT_PATH, "mode": 0o644, "text": unit},
        {"path": INITD_PATH, "mode": 0o755, "text": initd},
        {"path": "/var/log/ira-board.log", "mode": 0o644, "text": ""},
    ]
    return {
        "action": action,
        "version": version_id,
        "sha256": sha256_hex,
        "files": files,
        "links": [[UNIT_WANTS, UNIT_PATH]],
        "start": start,
        "unit": "ira-board.service",
        "initd": INITD_PATH,
        "serve": ["/bin/sh", wrapper, *serve[1:]],
    }


def wrapper_script(python: str, root: str) -> str:
    """``/usr/local/bin/ira``: the current version unpacked (its compiled modules kept
    between starts), or its zipapp where a version installed before had no ``app/``."""
    here = f"{root}/opt/ira/current"
    return (
        "#!/bin/sh\n"
        f'[ -f {here}/app/__main__.py ] && exec {python} {here}/app "$@"\n'
        f'exec {python} {here}/ira.pyz "$@"\n'
    )


def describe_plan(plan: dict[str, object], *, target: str) -> list[str]:
    """The plan as lines for ``--dry-run``."""
    lines = [f"plan for {target}: {plan['action']} {plan.get('version', '')}".rstrip()]
    if plan["action"] == "install":
        lines.append(
            f"  unpack /opt/ira/versions/{plan['version']}/ira.pyz, check its SHA-256, "
            "unzip it beside (app/)"
        )
        for f in plan["files"]:  # type: ignore[attr-defined]
            lines.append(f"  write {f['path']} (mode {f['mode']:o})")
        for link, dest in plan["links"]:  # type: ignore[attr-defined]
            lines.append(f"  link {link} -> {dest}")
        lines.append(f"  switch /opt/ira/current -> versions/{plan['version']} (one rename)")
        lines.append("  keep the version before it as /opt/ira/previous")
    elif plan["action"] == "rollback":
        lines.append("  swap /opt/ira/current and /opt/ira/previous")
    lines.append(f"  start the service: {plan['start']} ({' '.join(plan['serve'][2:])})")  # type: ignore[index]
    return lines
