"""Registration, DEVADD replay, hotswap, drivers, link and session events."""

from __future__ import annotations

import pytest
from busharness import Pair

from ira.busmodel import (
    Bus,
    BusReady,
    BusState,
    CallCompleted,
    Connector,
    ConnectorState,
    DeviceAdded,
    DeviceInfo,
    DeviceRemoved,
    Driver,
    DriverRegistry,
    HostRegistered,
    RegistrationRefused,
)
from ira.busmodel.counters import Refusal
from ira.busmodel.devices import BoardInfo, CountingDevice, Echo
from ira.busmodel.events import DeviceEvent
from ira.errors import ConfigError, LocalProtocolError
from ira.link.events import (
    Channel,
    LinkDown,
    LinkUp,
    MessageReceived,
    PeerRestarted,
    SessionStarted,
)
from ira.wire.bus import (
    BUS_VERSION_MAX,
    BusHello,
    BusWelcome,
    DevCall,
    DevCallReply,
    DevOpen,
    DevOpenReply,
    Status,
    decode,
    encode,
)


def board_with(*devices: object) -> Connector:
    board = Connector()
    for device in devices:
        board.add_device(device, now=0.0)  # type: ignore[arg-type]
    return board


def test_registration_replays_every_device_then_ready() -> None:
    pair = Pair(board_with(Echo(), BoardInfo("bb-1", started_at=0.0), CountingDevice()))
    pair.start()
    events = pair.host_events
    assert [type(e) for e in events] == [DeviceAdded, DeviceAdded, DeviceAdded, BusReady]
    assert all(e.replayed for e in events if isinstance(e, DeviceAdded))
    assert events[-1] == BusReady(version=BUS_VERSION_MAX, device_count=3)
    assert [(d.device_id, d.type, d.version) for d in pair.host.devices()] == [
        (1, "echo", 1),
        (2, "board-info", 1),
        (3, "counter", 1),
    ]
    assert pair.host.devices()[1].attributes == {"board": "bb-1", "ira_version": "0.1.0"}
    assert pair.host.ready and pair.host.state is BusState.READY
    assert pair.board.registered and pair.board.state is ConnectorState.REGISTERED
    assert pair.board_events == [HostRegistered(version=BUS_VERSION_MAX, device_count=3)]
    limits = pair.host.limits
    assert limits is not None and limits.max_handles == pair.board.config.limits.max_handles


def test_empty_board_registers() -> None:
    pair = Pair()
    pair.start()
    assert pair.host_events == [BusReady(version=BUS_VERSION_MAX, device_count=0)]


def test_hotswap_add_and_remove_at_runtime() -> None:
    pair = Pair(board_with(Echo()))
    pair.start()
    pair.take_events()
    counter_id = pair.board.add_device(CountingDevice(), now=0.0)
    pair.pump()
    added = pair.take_events()
    assert added == [DeviceAdded(DeviceInfo(counter_id, "counter", 1), replayed=False)]
    pair.board.remove_device(counter_id, now=0.0)
    pair.pump()
    assert pair.take_events() == [DeviceRemoved(DeviceInfo(counter_id, "counter", 1), "dropped")]
    assert [d.type for d in pair.host.devices()] == ["echo"]


def test_device_ids_are_never_reused() -> None:
    board = Connector()
    ids = []
    for _ in range(5):
        device_id = board.add_device(Echo(), now=0.0)
        ids.append(device_id)
        board.remove_device(device_id, now=0.0)
    assert ids == sorted(set(ids))


def test_add_device_refuses_what_devadd_cannot_carry() -> None:
    board = Connector()

    class Nameless(Echo):
        type = ""

    class Wordy(Echo):
        def attributes(self) -> dict[str, str]:
            return {str(i): "x" for i in range(100)}

    for device in (Nameless(), Wordy()):
        with pytest.raises(LocalProtocolError):
            board.add_device(device, now=0.0)
    echo = Echo()
    board.add_device(echo, now=0.0)
    with pytest.raises(LocalProtocolError):
        board.add_device(echo, now=0.0)
    with pytest.raises(LocalProtocolError):
        board.remove_device(99, now=0.0)
    assert len(board.devices()) == 1


class RecordingDriver(Driver):
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.events: list[DeviceEvent] = []

    def probe(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        self.log.append(("probe", device.device_id))

    def remove(self, bus: Bus, device: DeviceInfo, *, now: float) -> None:
        self.log.append(("remove", device.device_id))

    def handle_event(self, bus: Bus, event: DeviceEvent, *, now: float) -> None:
        self.events.append(event)


def test_drivers_bind_by_exact_type_string() -> None:
    drivers = DriverRegistry()
    echo_driver, other = RecordingDriver(), RecordingDriver()
    drivers.register("echo", echo_driver)
    drivers.register("Echo", other)
    drivers.register("ech", other)
    with pytest.raises(ConfigError):
        drivers.register("echo", other)
    pair = Pair(board_with(Echo(), CountingDevice()), Bus(drivers=drivers))
    pair.start()
    assert echo_driver.log == [("probe", 1)]
    hot = pair.board.add_device(Echo(), now=0.0)
    pair.pump()
    assert echo_driver.log == [("probe", 1), ("probe", hot)]
    handle = pair.open(1)
    pair.call(handle, 0, b"hi")
    assert [type(e).__name__ for e in echo_driver.events] == ["DeviceOpened", "CallCompleted"]
    pair.board.remove_device(1, now=0.0)
    pair.pump()
    assert echo_driver.log[-1] == ("remove", 1)
    assert other.log == []
    assert drivers.types() == ["Echo", "ech", "echo"]


def test_peer_restart_drops_every_device_and_rediscovers() -> None:
    drivers = DriverRegistry()
    driver = RecordingDriver()
    drivers.register("echo", driver)
    pair = Pair(board_with(Echo(), CountingDevice()), Bus(drivers=drivers))
    pair.start()
    handle = pair.open(1)
    pair.take_events()
    pair.restart_board(board_with(Echo(), CountingDevice()))
    kinds = [type(e).__name__ for e in pair.take_events()]
    assert kinds == [
        "PeerRestarted",
        "DeviceRemoved",
        "DeviceRemoved",
        "DeviceAdded",
        "DeviceAdded",
        "BusReady",
    ]
    assert driver.log == [("probe", 1), ("remove", 1), ("probe", 1)]
    assert not pair.host.is_open(handle)
    with pytest.raises(LocalProtocolError):
        pair.host.call(handle, 0, now=pair.now)


def test_board_sees_host_restart_and_closes_handles() -> None:
    pair = Pair(board_with(Echo()))
    pair.start()
    pair.open(1)
    assert pair.board.statistics().handles == 1
    pair.board.handle_link_event(PeerRestarted(1, 9, 0), now=0.0)
    assert pair.board.statistics().handles == 0
    assert pair.board.state is ConnectorState.NO_SESSION
    pair.host = Bus()
    pair.start()
    assert pair.board.registered and pair.host.ready


def test_session_lost_removes_devices() -> None:
    pair = Pair(board_with(Echo()))
    pair.start()
    pair.take_events()
    pair.lose_session()
    assert [type(e).__name__ for e in pair.take_events()] == ["SessionLost", "DeviceRemoved"]
    assert pair.host.devices() == [] and pair.host.state is BusState.NO_SESSION
    pair.start()
    assert [d.type for d in pair.host.devices()] == ["echo"]


def test_link_down_keeps_devices_and_calls_resume() -> None:
    pair = Pair(board_with(Echo()))
    pair.start()
    handle = pair.open(1)
    pair.take_events()
    pair.link_down()
    call_id = pair.host.call(handle, 0, b"later", now=pair.now)
    assert pair.pump() == 0
    pair.link_up()
    outcome = pair.outcome(call_id)
    assert isinstance(outcome, CallCompleted) and outcome.payload == b"later"
    kinds = [type(e) for e in pair.host_events]
    assert kinds[:2] == [LinkDown, LinkUp]
    assert [d.type for d in pair.host.devices()] == ["echo"]
    assert [type(e) for e in pair.board_events[-2:]] == [LinkDown, LinkUp]


def test_version_negotiation_refusal() -> None:
    board = board_with(Echo())
    pair = Pair(board)
    pair.start()
    # A second HELLO in the same session is refused and counted.
    board.handle_link_event(MessageReceived(Channel.CONTROL, encode(BusHello(1, 1))), now=0.0)
    assert board.statistics().refused[Refusal.UNEXPECTED_HELLO] == 1
    # A fresh connector offered only versions it does not speak refuses.
    fresh = Connector()
    fresh.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    fresh.handle_link_event(
        MessageReceived(Channel.CONTROL, encode(BusHello(BUS_VERSION_MAX + 1, 7))), now=0.0
    )
    [(_channel, data)] = fresh.messages_to_send()
    welcome = decode(data)
    assert isinstance(welcome, BusWelcome) and welcome.status == Status.EPROTONOSUPPORT
    assert fresh.state is ConnectorState.AWAITING_HELLO
    # The host side of a refusal.
    host = Bus()
    host.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    host.handle_link_event(MessageReceived(Channel.CONTROL, data), now=0.0)
    assert host.next_event() == RegistrationRefused(Status.EPROTONOSUPPORT)
    assert host.state is BusState.REFUSED
    with pytest.raises(LocalProtocolError):
        host.open(1, now=0.0)


def test_requests_before_registration_get_enotconn() -> None:
    board = board_with(Echo())
    board.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    for msg in (DevOpen(1, 1, 1), DevCall(2, 5, 0, 0, b"")):
        board.handle_link_event(MessageReceived(Channel.CONTROL, encode(msg)), now=0.0)
    replies = [decode(data) for _, data in board.messages_to_send()]
    assert replies == [DevOpenReply(1, Status.ENOTCONN, 0), DevCallReply(2, Status.ENOTCONN, b"")]
    assert board.statistics().refused[Refusal.NOT_REGISTERED] == 2
