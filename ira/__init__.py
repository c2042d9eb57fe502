"""ira: a transport stack for boards joined by UART and USB links.

Layers, top to bottom: ``ira.venet`` (virtio-net), ``ira.virtio`` (virtqueues in
shared windows), ``ira.busmodel`` (devices, discovery, DEVCALL, windows, signals),
``ira.wire`` (construct schemas of every message), ``ira.link`` (framing,
reliable sessions, transports).  See docs/ARCHITECTURE.md.
"""

from ira import native as _native

__version__ = "0.1.0"

# before any hot module is imported: their compiled build only if it matches the sources
_native.guard()
