"""The board side over a real link: ``BoardService`` runs a ``Connector`` (the board's
container of devices, built from a ``Profile``) on one ``LinkRuntime``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ira.busmodel.config import ConnectorConfig
from ira.busmodel.connector import Connector
from ira.busmodel.counters import ConnectorStatistics
from ira.busmodel.device import Device
from ira.busmodel.events import ConnectorEvent, HostRegistered
from ira.busmodel.registry import DeviceContext, DeviceSpec
from ira.link.config import LinkConfig
from ira.link.events import LinkDown, LinkUp, PeerRestarted, SessionLost
from ira.runtime.base import LinkService, link_numbers
from ira.runtime.port import PortEvent
from ira.runtime.profile import DEFAULT_PROFILE, Profile, standard_device_types
from ira.transports.base import Transport
from ira.venet.netspec import NetPort

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """What applying a profile did, by device name."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


class BoardService(LinkService):
    """A board: the devices of a profile, exposed over one link."""

    def __init__(
        self,
        link: str | Transport,
        profile: Profile = DEFAULT_PROFILE,
        *,
        link_config: LinkConfig | None = None,
        connector_config: ConnectorConfig | None = None,
        on_event: Callable[[ConnectorEvent], None] | None = None,
        rng: random.Random | None = None,
        net_port: Callable[[DeviceSpec], NetPort | None] | None = None,
        on_port_event: Callable[[PortEvent], None] | None = None,
        give_up_after_s: float | None = None,
    ) -> None:
        """``net_port``: the network interface for the profile's ``virtio-net`` devices;
        ``on_port_event``: told when the port goes, is waited for or is back (on the
        loop thread); ``give_up_after_s``: see ``LinkService``."""
        super().__init__(link, link_config, rng, give_up_after_s)
        self._on_port_event = on_port_event
        # a network device paces itself by what the link has not yet had acknowledged
        self._types = standard_device_types(net_port, lambda: self.runtime.backlog)
        self._profile = profile
        self._on_event = on_event
        self.connector = Connector(connector_config)
        self._started_at = time.monotonic()
        #: device name -> (spec, board name it was built for, device id); loop thread only
        self._installed: dict[str, tuple[DeviceSpec, str, int]] = {}

    _role = "board service"

    # -- lifecycle ------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        runtime = self._new_runtime(self.connector, self._connector_event, self._on_port_event)
        # install the devices before the loop runs (no other thread touches the
        # connector yet), so a host never meets this board with an empty container
        try:
            self._apply(self._profile)
        except BaseException:
            runtime.stop()  # closes the transport
            raise
        runtime.start()

    # -- devices --------------------------------------------------------

    @property
    def profile(self) -> Profile:
        return self._profile

    def apply_profile(self, profile: Profile) -> ProfileChange:
        """Make the container match ``profile`` (hotswap); returns what changed."""
        change = self.runtime.call(lambda: self._apply(profile))
        self._profile = profile
        return change

    def devices(self) -> dict[str, int]:
        """Device name -> device id, of the devices the profile put in the container."""
        return self.runtime.call(lambda: {n: e[2] for n, e in self._installed.items()})

    def call(self, fn: Callable[[Connector], T]) -> T:
        """Run ``fn(connector)`` on the loop thread (to reach device models safely)."""
        return self.runtime.call(lambda: fn(self.connector))

    def statistics(self) -> ConnectorStatistics:
        return self.runtime.call(self.connector.statistics)

    def _apply(self, profile: Profile) -> ProfileChange:
        now = time.monotonic()
        runtime = self.runtime
        ctx = DeviceContext(
            board=profile.board,
            started_at=self._started_at,
            link_statistics=lambda: link_numbers(runtime),
        )
        removed: list[str] = []
        for name, (spec, board, device_id) in list(self._installed.items()):
            wanted = profile.device(name)
            stale_board = spec.type == "board-info" and board != profile.board
            if wanted != spec or stale_board:
                self.connector.remove_device(device_id, now=now)
                del self._installed[name]
                removed.append(name)
        added: list[str] = []
        for spec in profile.devices:
            if spec.name in self._installed:
                continue
            device: Device = self._types.build(spec, ctx)
            device_id = self.connector.add_device(device, now=now)
            self._installed[spec.name] = (spec, profile.board, device_id)
            added.append(spec.name)
        return ProfileChange(tuple(added), tuple(removed))

    def _connector_event(self, event: object) -> None:
        # the connector and the link runtime log these themselves
        match event:
            case HostRegistered() | LinkDown() | LinkUp() | PeerRestarted() | SessionLost():
                if self._on_event is not None:
                    self._on_event(event)
