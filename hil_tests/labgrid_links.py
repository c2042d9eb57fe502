"""The rig's two links from a labgrid environment (``pytest hil_tests --lg-env env.yaml``).

labgrid's pytest plugin reads the environment file (local resources, or a place
on a coordinator); this module picks the rig's two serial ports out of its
targets and turns each into an ira link spec:

* ``RawSerialPort`` (a port on this machine): ``serial://PORT?baud=SPEED``;
* ``USBSerialPort`` (a USB-serial adapter found by udev): its device node, likewise;
* ``NetworkSerialPort`` (a port exported by a labgrid exporter through ser2net):
  ``rfc2217://HOST:PORT?ign_set_control``, or ``socket://HOST:PORT`` for protocol raw.

Which port is which end: resources named ``board`` and ``host`` (labgrid's
``name:`` key) when there are such, else the first two serial resources in the
order the environment lists its targets and their resources — the first is
the board's end (A), the second the host's (B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: labgrid's serial resources ira can use as links
PORT_CLASSES = ("RawSerialPort", "USBSerialPort", "NetworkSerialPort")


@dataclass(frozen=True, slots=True)
class LabgridLinks:
    link_a: str
    link_b: str
    #: the line rate both resources declare (their ``speed``), the slower of the two
    baud: int
    #: for the report header
    description: str


def _spec(resource: Any) -> str:
    kind = type(resource).__name__
    if kind == "NetworkSerialPort":
        if resource.protocol == "raw":
            return f"socket://{resource.host}:{resource.port}"
        if resource.protocol == "rfc2217":
            return f"rfc2217://{resource.host}:{resource.port}?ign_set_control"
        raise ValueError(f"NetworkSerialPort protocol {resource.protocol!r}: use rfc2217 or raw")
    if not resource.port:
        raise ValueError(f"{kind} {resource.name or ''} has no device yet (not plugged in?)")
    return f"serial://{resource.port}?baud={resource.speed}"


def links_from_environment(env: Any, config_file: str) -> LabgridLinks:
    """The rig's links; ``ValueError`` with one line naming the fix when there are not two."""
    found: list[tuple[str, Any]] = []
    for target_name in env.config.get_targets():
        target = env.get_target(target_name)
        for resource in target.resources:
            if type(resource).__name__ in PORT_CLASSES:
                found.append((target_name, resource))
    named = {r.name: (t, r) for t, r in found if r.name in ("board", "host")}
    if len(named) == 2:
        chosen = [named["board"], named["host"]]
    elif len(found) >= 2:
        chosen = found[:2]
    else:
        raise ValueError(
            f"labgrid environment {config_file} has {len(found)} serial port resource(s) "
            f"({', '.join(PORT_CLASSES)}); the ira HIL suite needs two, the board's end and "
            "the host's: add them, named 'board' and 'host'"
        )
    specs = [_spec(r) for _, r in chosen]
    where = ", ".join(
        f"{end} {type(r).__name__} of target {t!r} -> {s}"
        for end, (t, r), s in zip(("A (board)", "B (host)"), chosen, specs, strict=True)
    )
    baud = min(int(getattr(r, "speed", 115200) or 115200) for _, r in chosen)
    return LabgridLinks(specs[0], specs[1], baud, f"labgrid {config_file}: {where}")
