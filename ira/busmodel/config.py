"""Configuration of the bus model: one frozen dataclass per core.

Every field is documented where it is defined; the defaults are what a board
and a host on a serial link want.  Values are validated on construction
(``ConfigError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ira.errors import ConfigError
from ira.wire.bus import (
    BUS_VERSION_MAX,
    BUS_VERSION_MIN,
    DEFAULT_MAX_DEVICES,
    MAX_CALL_PAYLOAD_BYTES,
    MAX_HOST_DEVICES,
    MAX_WINDOW_BYTES,
)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True, slots=True)
class ContainerLimits:
    """Per-container limits (DESIGN §4); what a hostile host can make the board hold."""

    #: most devices in the container at once
    max_devices: int = 256
    #: most open handles (DEVOPEN without DEVCLOSE)
    max_handles: int = 64
    #: most attached windows
    max_windows: int = 64
    #: largest single window, bytes (at most ``ira.wire.bus.MAX_WINDOW_BYTES``)
    max_window_bytes: int = MAX_WINDOW_BYTES
    #: largest sum of attached window sizes, bytes
    max_total_window_bytes: int = 4 * MAX_WINDOW_BYTES
    #: largest DEVCALL payload, bytes (at most ``ira.wire.bus.MAX_CALL_PAYLOAD_BYTES``)
    max_call_payload_bytes: int = MAX_CALL_PAYLOAD_BYTES

    def __post_init__(self) -> None:
        _check(1 <= self.max_devices <= 0xFFFF, "max_devices must be 1..65535")
        _check(1 <= self.max_handles <= 0xFFFF, "max_handles must be 1..65535")
        _check(0 <= self.max_windows <= 0xFFFF, "max_windows must be 0..65535")
        _check(
            1 <= self.max_window_bytes <= MAX_WINDOW_BYTES,
            f"max_window_bytes must be 1..{MAX_WINDOW_BYTES}",
        )
        _check(
            self.max_window_bytes <= self.max_total_window_bytes <= 0xFFFFFFFF,
            "max_total_window_bytes must be at least max_window_bytes",
        )
        _check(
            0 <= self.max_call_payload_bytes <= MAX_CALL_PAYLOAD_BYTES,
            f"max_call_payload_bytes must be 0..{MAX_CALL_PAYLOAD_BYTES}",
        )


def _versions_ok(low: int, high: int) -> bool:
    return BUS_VERSION_MIN <= low <= high <= BUS_VERSION_MAX


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """Board side (``Connector``)."""

    limits: ContainerLimits = field(default_factory=ContainerLimits)
    #: seeds the opaque handle numbering (no other randomness is used)
    seed: int = 0
    #: bus versions offered, inclusive
    version_min: int = BUS_VERSION_MIN
    version_max: int = BUS_VERSION_MAX

    def __post_init__(self) -> None:
        _check(_versions_ok(self.version_min, self.version_max), "unsupported bus version range")


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Host side (``Bus``)."""

    #: timeout of a request (DEVOPEN, DEVCALL, SHM) that names none, seconds
    call_timeout_s: float = 5.0
    #: most proxy devices kept for one link (bounds what a hostile board can make us hold:
    #: a DEVADD holds at most MAX_TYPE_BYTES + MAX_ATTRS x (MAX_ATTR_KEY_BYTES +
    #: MAX_ATTR_VALUE_BYTES) bytes, ~9 KiB, so ~2.5 MiB at this default); a DEVADD past it
    #: is refused and counted (``refused_limit``); the board's own default is the same.
    #: Announced to a bus v3 board in BUS_LIMITS, which then withholds the devices past it
    max_devices: int = DEFAULT_MAX_DEVICES
    #: bus versions offered in BUS_HELLO, inclusive
    version_min: int = BUS_VERSION_MIN
    version_max: int = BUS_VERSION_MAX

    def __post_init__(self) -> None:
        _check(self.call_timeout_s > 0, "call_timeout_s must be positive")
        _check(
            1 <= self.max_devices <= MAX_HOST_DEVICES,
            f"max_devices must be 1..{MAX_HOST_DEVICES}",
        )
        _check(_versions_ok(self.version_min, self.version_max), "unsupported bus version range")
