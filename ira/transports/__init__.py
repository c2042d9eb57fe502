"""Transports: the byte pipes under a link, found by the scheme of a link spec.

A link spec names its transport by URL scheme; a bare path is a serial port::

    /dev/ttyUSB0, /dev/pts/7            a serial port (pyserial)
    serial:///dev/ttyS1?baud=921600&rtscts=1
    loop://, socket://host:port, rfc2217://..., spy://...   any pyserial URL
    usb://VID:PID[/SERIAL], usb://BUS-PORT.PORT   a board in USB gadget mode (pyusb)
    ffs://NAME                          the board's side: a FunctionFS gadget

The registry maps a scheme to an *opener* (``"module:function"``, imported only
when a spec of that scheme is opened, as python-can finds its interfaces), so an
optional backend costs nothing until it is used, and a backend whose library is
missing fails with one line naming the package to install.  Third-party
packages add schemes through the entry-point group ``ira.transports``: an entry
named after the scheme whose object is an opener ``(spec: str) -> Transport``::

    [project.entry-points."ira.transports"]
    can = "ira_can:open_can"

A built-in scheme cannot be replaced by an entry point.  Every ``Transport``
implements the protocol in ``ira.transports.base``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from ira.errors import ConfigError
from ira.transports.base import Transport

#: the entry-point group third-party transports register in
ENTRY_POINT_GROUP = "ira.transports"


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a scheme's opener lives and what to install when it cannot be imported."""

    #: ``"module:function"``
    target: str
    #: the distribution(s) that provide the module's imports, for the error line
    requires: str


_SERIAL = Backend("ira.transports.serial:open_serial", "pyserial")

#: scheme -> backend, the built-in transports
BUILTIN: dict[str, Backend] = {
    "serial": _SERIAL,
    "loop": _SERIAL,
    "socket": _SERIAL,
    "rfc2217": _SERIAL,
    "spy": _SERIAL,
    "alt": _SERIAL,
    "hwgrep": _SERIAL,
    "usb": Backend("ira.transports.usb:open_usb", "pyusb libusb-package"),
    "ffs": Backend("ira.transports.ffs:open_ffs", "construct"),
}

Opener = Callable[[str], Transport]

#: schemes whose transports carry one frame per transfer (``Transport.packet``)
PACKET_SCHEMES = frozenset({"usb", "ffs"})


def scheme_of(spec: str) -> str:
    """The URL scheme of a link spec; a bare path is a serial port."""
    if "://" not in spec:
        return "serial"
    return spec.split("://", 1)[0].lower()


def packet_scheme(spec: str) -> bool:
    """True when a spec's transport is a packet transport, known before it is opened."""
    return scheme_of(spec) in PACKET_SCHEMES


def schemes() -> list[str]:
    """Every scheme a link spec may use: the built-in ones and the entry points'."""
    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def opener_for(spec: str) -> Opener:
    """The opener of a spec's scheme, imported now; ``ConfigError`` (one line) if none."""
    scheme = scheme_of(spec)
    backend = BUILTIN.get(scheme)
    if backend is not None:
        module_name, func_name = backend.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"link scheme {scheme}:// needs {backend.requires} "
                f"(pip install {backend.requires}): {exc}"
            ) from exc
        opener: Opener = getattr(module, func_name)
        return opener
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        dist = ep.dist.name if ep.dist is not None else ep.value
        try:
            loaded: Opener = ep.load()
        except ImportError as exc:
            raise ConfigError(
                f"link scheme {scheme}:// (from {dist}) cannot be loaded: {exc}"
            ) from exc
        return loaded
    raise ConfigError(
        f"unknown link scheme {scheme!r} in {spec!r}; "
        f"use a device path or one of: {', '.join(schemes())}"
    )


def open_transport(spec: str) -> Transport:
    """Open a transport by its link spec."""
    return opener_for(spec)(spec)


__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "PACKET_SCHEMES",
    "Backend",
    "Opener",
    "Transport",
    "open_transport",
    "opener_for",
    "packet_scheme",
    "scheme_of",
    "schemes",
]
