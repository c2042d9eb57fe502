"""ira: a transport stack for boards joined by UART and USB links.

Layers, top to bottom: ``ira.venet`` (virtio-net), ``ira.virtio`` (virtqueues in
shared windows), ``ira.busmodel`` (devices, discovery, DEVCALL, windows, signals),
``ira.wire`` (construct schemas of every message), ``ira.link`` (framing,
reliable sessions, transports).  See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
