"""The one error tree of ira.

``IraError`` is the root.  Protocol cores raise ``LocalProtocolError`` when the
local caller misuses them and ``RemoteProtocolError`` when the peer sent
something that cannot be accepted; line noise (bad CRC, garbage between
frames) is *counted*, never raised.  Transports wrap pyserial/pyusb/OS errors
in ``TransportError`` (``raise ... from exc``) with a message that names the
fix.  Configuration problems (bad profile, bad URL, bad option) are
``ConfigError``.
"""

from __future__ import annotations


class IraError(Exception):
    """Root of every error ira raises on purpose."""


class ProtocolError(IraError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """The local caller asked a core to do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that cannot be accepted."""


class TransportError(IraError):
    """A transport could not be opened, read or written."""


class LinkClosed(TransportError):
    """The link was closed, locally or because the session was torn down."""


class PortGone(LinkClosed):
    """The port went away or is not there yet: hung up, EIO, ENODEV, a vanished path.

    A transport raises it when reopening the same spec later may cure it (a
    USB-serial adapter pulled and plugged back, a gadget re-enumerating, a board
    whose port appears after it boots).  A link runtime that knows how to reopen
    its transport closes it, reports the link down and reopens it with a backoff.
    Errors a reopen cannot cure (permission denied, not a tty, a bad URL) are
    plain ``TransportError`` or ``ConfigError``.
    """


class ConfigError(IraError):
    """A configuration value (URL, option, profile) is invalid."""


class SessionReset(IraError):
    """The session reset (peer restarted or torn down) while a request was pending.

    The request may or may not have been carried out by the peer.
    """


class DevcallError(IraError):
    """A DEVCALL completed with a negative status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DevcallTimeout(IraError):
    """A DEVCALL did not complete within its timeout."""
