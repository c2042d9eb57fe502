"""The bus model: containers, devices, discovery, hotswap, DEVCALL, windows, signals.

Sans-I/O (DESIGN §4).  The board runs a ``Connector`` (it owns the container
and the device models), the host runs a ``Bus`` per link (proxy devices and
drivers).  Both consume the link's events and produce ``(Channel, bytes)``
messages for it; neither touches the link.  Modules, one concern each:

``config``     frozen configuration (``ContainerLimits``, ``ConnectorConfig``, ``BusConfig``)
``state``      the session state machines and their transition tables
``container``  ids, handles, windows and signals of one container; limits; refusals
``device``     the device author's API (``Device``, ``Handle``, ``Attachment``)
``window``     replicated shared windows
``signal``     shm-signal over messages
``outbox``     encoded messages and the channel each takes
``requests``   the host's requests in flight, with deadlines
``drivers``    host drivers and the registry binding them by type string
``connector``  the board-side core
``bus``        the host-side core
``events``     everything the cores report
``devices``    devices boards offer out of the box
"""

from ira.busmodel.bus import Bus
from ira.busmodel.config import BusConfig, ConnectorConfig, ContainerLimits
from ira.busmodel.connector import Connector
from ira.busmodel.device import Attachment, Device, Handle
from ira.busmodel.drivers import Driver, DriverRegistry
from ira.busmodel.events import (
    BusEvent,
    BusReady,
    CallCompleted,
    CallFailed,
    ConnectorEvent,
    DeviceAdded,
    DeviceEvent,
    DeviceInfo,
    DeviceOpened,
    DeviceRemoved,
    HostRegistered,
    RegistrationRefused,
    SignalReceived,
    WindowAttached,
    WindowDetached,
    WindowUpdated,
)
from ira.busmodel.signal import Signal
from ira.busmodel.state import BusState, ConnectorState
from ira.busmodel.window import Side, Window

__all__ = [
    "Attachment",
    "Bus",
    "BusConfig",
    "BusEvent",
    "BusReady",
    "BusState",
    "CallCompleted",
    "CallFailed",
    "Connector",
    "ConnectorConfig",
    "ConnectorEvent",
    "ConnectorState",
    "ContainerLimits",
    "Device",
    "DeviceAdded",
    "DeviceEvent",
    "DeviceInfo",
    "DeviceOpened",
    "DeviceRemoved",
    "Driver",
    "DriverRegistry",
    "Handle",
    "HostRegistered",
    "RegistrationRefused",
    "Side",
    "Signal",
    "SignalReceived",
    "Window",
    "WindowAttached",
    "WindowDetached",
    "WindowUpdated",
]
