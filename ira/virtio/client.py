"""The host's driver for one virtio device type, as the binding sees it.

A ``VirtioClient`` names what it can use (features, queue sizes, data
windows, configuration bytes) and is called by its ``VirtioBinding``
(``ira.virtio.binding``) when the device is ready, buffers come back, the
configuration changes, the device fails or is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ira.virtio.driver import UsedBuffer
from ira.virtio.features import TRANSPORT_FEATURES

if TYPE_CHECKING:
    from ira.virtio.binding import VirtioBinding


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A data window the client wants attached: ``device_writable`` bytes go device-side."""

    name: str
    size_bytes: int
    device_writable: bool = False


class VirtioClient:
    """A host-side driver for one virtio device type; override what is needed."""

    #: features this driver can use (device-type bits and transport bits)
    supported_features: int = TRANSPORT_FEATURES
    #: the queue sizes wanted (each is cut to what the device allows)
    queue_sizes: tuple[int, ...] = ()
    #: data windows to attach before DRIVER_OK
    windows: tuple[WindowSpec, ...] = ()
    #: bytes of configuration space to read (from offset 0) before DRIVER_OK and after changes
    config_bytes: int = 0

    def ready(self, binding: VirtioBinding, *, now: float) -> None:
        """DRIVER_OK is set: queues and windows are usable."""

    def used(self, binding: VirtioBinding, index: int, used: list[UsedBuffer[object]]) -> None:
        """Chains came back on queue ``index``."""

    def ring_updated(self, binding: VirtioBinding, index: int) -> None:
        """The device's flush of queue ``index`` arrived while the client has its
        notifications off (bus v2, ``binding.ring_updates``): a client that polls the
        ring may look now, at no cost on the link."""

    def config_changed(self, binding: VirtioBinding) -> None:
        """The device's configuration generation moved (``binding.config`` is re-read)."""

    def failed(self, binding: VirtioBinding, reason: str) -> None:
        """Initialisation failed, or the device needs a reset."""

    def removed(self, binding: VirtioBinding) -> None:
        """The device is gone (DEVDROP, session reset); nothing of the binding is usable."""
