"""The bus model over real links: a board service and host clients, thread-safe.

``BoardService`` runs a ``Connector`` (the board's container of devices, built
from a ``Profile``) over one link; ``HostClient`` runs a ``Bus`` over one link
and offers blocking calls; ``HostService`` runs one ``HostClient`` per link in
one process.  Each link is one ``LinkRuntime``: its loop thread owns the link
core and the bus-model core, so neither needs locks.  The methods here may be
called from any thread: they hand a function to the loop thread
(``runtime.call``/``post``) and wait on a future, which the loop completes
when the bus reports the outcome (``CallCompleted``, ``DeviceOpened``,
``CallFailed``).  Every wait has a timeout.

Both services are context managers: the loop starts on entry and is stopped on
exit, and an exception that stopped the loop is re-raised to the caller.
"""

from ira.busrt.board import BoardService, ProfileChange
from ira.busrt.host import (
    VIRTIO_CLIENTS,
    CallResult,
    HostClient,
    HostListener,
    HostService,
    VirtioClients,
)

__all__ = [
    "VIRTIO_CLIENTS",
    "BoardService",
    "CallResult",
    "HostClient",
    "HostListener",
    "HostService",
    "ProfileChange",
    "VirtioClients",
]
