"""Devices every board offers out of the box (board side, sans-I/O).

* ``Echo`` (``echo``): returns its payload; what ``ira ping`` times.
* ``BoardInfo`` (``board-info``): board name, ira version, uptime, link statistics.
* ``RingLoopback`` (``ring-loopback``): copies a host-written window into a
  board-written one and signals, proving windows and signals end to end.
* ``CountingDevice`` (``counter``): counts calls and posts counted events; for tests.
"""

from ira.busmodel.device import Device
from ira.busmodel.devices.board_info import BoardInfo
from ira.busmodel.devices.counting import CountingDevice
from ira.busmodel.devices.echo import Echo
from ira.busmodel.devices.ring_loopback import RingLoopback
from ira.busmodel.registry import DeviceContext, DeviceSpec, DeviceType, DeviceTypes

__all__ = ["BoardInfo", "CountingDevice", "Echo", "RingLoopback", "register_device_types"]


def _board_info(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    return BoardInfo(ctx.board, started_at=ctx.started_at, link_statistics=ctx.link_statistics)


def _echo(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    return Echo()


def _counter(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    return CountingDevice()


def _ring_loopback(spec: DeviceSpec, ctx: DeviceContext) -> Device:
    return RingLoopback()


def register_device_types(types: DeviceTypes) -> None:
    """Add the stock devices (none takes options)."""
    types.register(
        DeviceType("board-info", _board_info, "board name, ira version, uptime, link statistics")
    )
    types.register(DeviceType("echo", _echo, "returns its payload (what ira ping times)"))
    types.register(DeviceType("counter", _counter, "counts calls and posts events; for tests"))
    types.register(
        DeviceType("ring-loopback", _ring_loopback, "copies a host window into a board window")
    )
