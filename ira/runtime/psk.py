"""The pre-shared key file of a link (``--psk-file``, the profile's ``[link] psk_file``).

The file holds the key (at least 16 bytes; surrounding whitespace is not part
of it), e.g. ``head -c 32 /dev/urandom | base64 > link.psk``.  Both ends need
the same file; an end with a key refuses a peer without one.  Commands read and
check it before they open any port.
"""

from __future__ import annotations

from pathlib import Path

from ira.errors import ConfigError
from ira.link.config import LinkConfig
from ira.wire.link import PSK_MIN_BYTES


def read_psk(path: str | Path) -> bytes:
    """The key in ``path``; ``ConfigError`` naming the fix when it is unusable."""
    p = Path(path)
    try:
        key = p.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the pre-shared key: {exc.strerror or exc}") from None
    if len(key) < PSK_MIN_BYTES:
        raise ConfigError(
            f"{p}: a pre-shared key needs at least {PSK_MIN_BYTES} bytes, not {len(key)}: "
            f"make one with `head -c 32 /dev/urandom | base64 > {p}`"
        )
    return key


def link_config(path: str | Path | None) -> LinkConfig | None:
    """A link configuration carrying the key in ``path``, or None (the defaults) without one."""
    return None if path is None else LinkConfig(psk=read_psk(path))
