"""What a board service and a host client share: one link driven by one loop thread."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

from ira.errors import LocalProtocolError
from ira.link.config import LinkConfig
from ira.runtime.link import LinkRuntime, Upper
from ira.runtime.port import PortEvent, PortState, TransportOpener
from ira.transports.base import Transport


def link_opener(link: str | Transport) -> TransportOpener | Transport:
    """A spec becomes a way to (re)open its transport; an open transport stays as it is."""
    return TransportOpener.for_spec(link) if isinstance(link, str) else link


def link_numbers(runtime: LinkRuntime) -> Mapping[str, int | float]:
    """The link core's numeric statistics (call on the loop thread)."""
    stats = dataclasses.asdict(runtime.core.statistics())
    return {
        k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


class LinkService:
    """What a board service and a host client share: one link, one loop thread
    (a ``LinkRuntime`` driving the link core and the service's bus core)."""

    _role = "service"

    def __init__(
        self,
        link: str | Transport,
        link_config: LinkConfig | None,
        rng: random.Random | None,
        give_up_after_s: float | None = None,
    ) -> None:
        """``give_up_after_s``: stop when the port stayed away this long (default: wait
        for it forever; a link given as an open ``Transport`` is never reopened)."""
        self.name = link if isinstance(link, str) else link.name
        self._link = link
        self._link_config = link_config
        self._rng = rng
        self._give_up_after_s = give_up_after_s
        self._runtime: LinkRuntime | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runtime = self._runtime
        if runtime is not None:
            runtime.__exit__(exc_type, exc, tb)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the loop and close the link (the peer sees this end go)."""
        if self._runtime is not None:
            self._runtime.stop()

    @property
    def runtime(self) -> LinkRuntime:
        if self._runtime is None:
            raise LocalProtocolError(f"{self.name}: the {self._role} is not started")
        return self._runtime

    @property
    def port(self) -> PortState:
        """Whether the link's port is open, since when, and why not."""
        return self.runtime.port

    def _new_runtime(
        self,
        upper: Upper,
        on_upper_event: Callable[[object], None],
        on_port_event: Callable[[PortEvent], None] | None = None,
    ) -> LinkRuntime:
        """Open the link (or start waiting for its port) and build (not start) the
        runtime that drives ``upper``."""
        self._runtime = LinkRuntime(
            link_opener(self._link),
            self._link_config,
            upper=upper,
            rng=self._rng,
            on_upper_event=on_upper_event,
            on_port_event=on_port_event,
            give_up_after_s=self._give_up_after_s,
        )
        return self._runtime
