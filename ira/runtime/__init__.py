"""The runtimes: everything that runs the sans-I/O cores over real I/O.

``link`` (``LinkRuntime``: a link core over a transport, its loop and timers),
``port`` (a link's port as it comes and goes: reopened with a backoff),
``board`` and ``host`` (the bus model over a link), ``network`` (venet's device
and driver bridged to a TAP or an in-process endpoint), ``tap``, ``endpoint`` and
``netns`` (the network ports and namespaces), ``profile`` (board profiles).

The bus model over real links: a board service and host clients, thread-safe.

``BoardService`` runs a ``Connector`` (the board's container of devices, built
from a ``Profile``) over one link; ``HostClient`` runs a ``Bus`` over one link
and offers blocking calls; ``HostService`` runs one ``HostClient`` per link in
one process.  Each link is one ``LinkRuntime``: one thread at a time runs its
link core and bus-model core (the runtime's owner lock: the loop thread, or a
caller that found the loop asleep), so neither core needs locks, and "on the
loop thread" below means with that lock held.  The methods here may be called
from any thread: they hand a function to the runtime (``runtime.call``/``post``)
and wait on a future, which is completed when the bus reports the outcome
(``CallCompleted``, ``DeviceOpened``, ``CallFailed``).  Every wait has a timeout.

Both services are context managers: the loop starts on entry and is stopped on
exit, and an exception that stopped the loop is re-raised to the caller.  A link
given as a spec is reopened when its port goes away (``port``): the services
keep running meanwhile, and ``HostService`` serves its other links.
"""

from ira.runtime.board import BoardService, ProfileChange
from ira.runtime.host import (
    VIRTIO_CLIENTS,
    CallResult,
    HostClient,
    HostListener,
    HostService,
    PortListener,
    VirtioClients,
)

__all__ = [
    "VIRTIO_CLIENTS",
    "BoardService",
    "CallResult",
    "HostClient",
    "HostListener",
    "HostService",
    "PortListener",
    "ProfileChange",
    "VirtioClients",
]
