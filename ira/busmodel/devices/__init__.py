"""Devices every board offers out of the box (board side, sans-I/O).

* ``Echo`` (``echo``): returns its payload; what ``ira ping`` times.
* ``BoardInfo`` (``board-info``): board name, ira version, uptime, link statistics.
* ``RingLoopback`` (``ring-loopback``): copies a host-written window into a
  board-written one and signals, proving windows and signals end to end.
* ``CountingDevice`` (``counter``): counts calls and posts counted events; for tests.
"""

from ira.busmodel.devices.board_info import BoardInfo
from ira.busmodel.devices.counting import CountingDevice
from ira.busmodel.devices.echo import Echo
from ira.busmodel.devices.ring_loopback import RingLoopback

__all__ = ["BoardInfo", "CountingDevice", "Echo", "RingLoopback"]
