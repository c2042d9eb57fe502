"""ira: a transport stack for boards joined by UART and USB links.

Packages, bottom to top (a module imports only from its own package and those
below it; ``tests/test_import_contract.py`` checks it):

* the sans-I/O protocol cores: ``ira.wire`` (construct schemas of every message),
  ``ira.link`` (framing, reliable sessions), ``ira.busmodel`` (devices, discovery,
  DEVCALL, windows, signals), ``ira.virtio`` (virtqueues in shared windows, the
  virtio transport), ``ira.venet`` (virtio-net device and driver);
* ``ira.transports``: the byte pipes under a link (serial, in-process), by scheme;
* ``ira.runtime``: the I/O around the cores: link, board, host and network
  runtimes, TAP interfaces, network namespaces, board profiles;
* ``ira.tools``: the virtual null-modem and the cable test, for tests, benches
  and the CLI;
* ``ira.cli``: the ``ira`` command.

See docs/ARCHITECTURE.md.
"""

from ira import native as _native

__version__ = "0.1.0"

# before any hot module is imported: their compiled build only if it matches the sources
_native.guard()
