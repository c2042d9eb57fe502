"""Configuration of one end of a link (a frozen dataclass, validated on creation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ira.errors import ConfigError
from ira.wire.link import (
    MIN_FRAME_BYTES,
    PSK_MIN_BYTES,
    VERSION_MAX,
    VERSION_MIN,
    WINDOW_UNIT_BYTES,
    Feature,
)

#: the environment variable that caps the link protocol version every link runtime of a
#: process offers (``IRA_LINK_VERSION_MAX=1``: speak as a version-1 end, to compare or to
#: interoperate; read by ``ira.runtime.link``, the cores do no I/O)
VERSION_MAX_ENV = "IRA_LINK_VERSION_MAX"


def parse_version_max(text: str) -> int:
    """The value of ``IRA_LINK_VERSION_MAX``, checked; ConfigError names the fix."""
    try:
        version = int(text)
    except ValueError:
        version = 0
    if not VERSION_MIN <= version <= VERSION_MAX:
        raise ConfigError(
            f"{VERSION_MAX_ENV}={text!r}: give a link protocol version, "
            f"{VERSION_MIN}..{VERSION_MAX}, or unset it"
        )
    return version


@dataclass(frozen=True, slots=True)
class LinkConfig:
    #: frames travel one per transfer (USB bulk, FunctionFS, mem) instead of COBS on a byte stream
    packet: bool = False
    #: the largest frame (CRC included, before COBS) this end accepts; advertised in HELLO
    max_frame_bytes: int = 65536
    #: receive window advertised to the peer: bytes it may send beyond what we acknowledged
    window_bytes: int = 1 << 20
    #: the largest message accepted from the peer; larger ones are skipped and counted
    max_message_bytes: int = 4 << 20
    #: send a keepalive when nothing was sent for this long
    keepalive_interval_s: float = 0.25
    #: no valid frame for this long -> LinkDown
    dead_interval_s: float = 1.5
    #: down for this long -> the session is torn down (SessionLost) and a new one offered
    session_timeout_s: float = 15.0
    #: first HELLO retransmission interval; doubles up to ``keepalive_interval_s * 4``
    hello_interval_s: float = 0.1
    #: a receiver acknowledges at most this long after data arrived
    ack_delay_s: float = 0.005
    rto_initial_s: float = 1.0
    rto_min_s: float = 0.05
    rto_max_s: float = 2.0
    #: bulk frames are sized to take at most this long on the measured line rate, so
    #: control traffic never waits longer than that behind one of them (half as long
    #: again when that finishes a message: ``sender.FINISH_SHARE``)
    frame_latency_s: float = 0.1
    #: DATA payloads are never cut smaller than this (unless the peer's frames are smaller)
    min_segment_bytes: int = 32
    #: link features offered; the session uses the AND of both sides'
    features: int = int(Feature.SACK)
    #: a pre-shared key: every frame is authenticated (``Feature.AUTH``, ira.link.auth)
    #: and a peer without it is refused; None: frames carry no MAC
    psk: bytes | None = field(default=None, repr=False)
    #: the highest link protocol version offered in HELLO (VERSION_MIN..VERSION_MAX; a
    #: link runtime caps it at ``IRA_LINK_VERSION_MAX`` when that is set)
    version_max: int = VERSION_MAX

    def __post_init__(self) -> None:
        if not MIN_FRAME_BYTES <= self.max_frame_bytes <= 1 << 24:
            raise ConfigError(
                f"max_frame_bytes {self.max_frame_bytes} out of range {MIN_FRAME_BYTES}..{1 << 24}"
            )
        if not 4 * WINDOW_UNIT_BYTES <= self.window_bytes <= 0xFFFF * WINDOW_UNIT_BYTES:
            raise ConfigError(f"window_bytes {self.window_bytes} out of range 1 KiB..16 MiB")
        if self.max_message_bytes < 1:
            raise ConfigError("max_message_bytes must be positive")
        if not 0 < self.keepalive_interval_s < self.dead_interval_s < self.session_timeout_s:
            raise ConfigError(
                "need 0 < keepalive_interval_s < dead_interval_s < session_timeout_s, got "
                f"{self.keepalive_interval_s}, {self.dead_interval_s}, {self.session_timeout_s}"
            )
        if not 0 < self.rto_min_s <= self.rto_initial_s <= self.rto_max_s:
            raise ConfigError("need 0 < rto_min_s <= rto_initial_s <= rto_max_s")
        if self.keepalive_interval_s * 1000 > 0xFFFF:
            raise ConfigError("keepalive_interval_s must be below 65 s")
        if self.hello_interval_s <= 0:
            raise ConfigError("hello_interval_s must be positive")
        if self.psk is not None and len(self.psk) < PSK_MIN_BYTES:
            raise ConfigError(
                f"a pre-shared key needs at least {PSK_MIN_BYTES} bytes, not {len(self.psk)}: "
                "make one with `head -c 32 /dev/urandom | base64 > link.psk`"
            )
        if not VERSION_MIN <= self.version_max <= VERSION_MAX:
            raise ConfigError(
                f"version_max {self.version_max} out of range {VERSION_MIN}..{VERSION_MAX}"
            )
        if self.min_segment_bytes < 1:
            raise ConfigError("min_segment_bytes must be positive")
