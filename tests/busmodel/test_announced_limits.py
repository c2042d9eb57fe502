"""Bus v3: the host announces its device limit (BUS_LIMITS) and the board keeps to it;
a v2 peer on either side still registers, and the host's own limit still holds."""

from __future__ import annotations

from busharness import Pair

from ira.busmodel import (
    Bus,
    BusConfig,
    BusReady,
    Connector,
    ConnectorConfig,
    ConnectorState,
    DeviceAdded,
    DeviceRemoved,
    HostRegistered,
)
from ira.busmodel.devices import CountingDevice, Echo
from ira.link.events import Channel, MessageReceived, SessionStarted
from ira.wire.bus import (
    BUS_VERSION_LIMITS,
    BusHello,
    BusLimits,
    BusSynced,
    BusWelcome,
    DevAdd,
    DevCall,
    DevCallReply,
    Status,
    decode,
    encode,
)


def board_with(count: int, config: ConnectorConfig | None = None) -> Connector:
    board = Connector(config)
    for _ in range(count):
        board.add_device(Echo(), now=0.0)
    return board


def sent(board: Connector) -> list[object]:
    return [decode(data) for _, data in board.messages_to_send()]


def deliver(board: Connector, msg: object) -> None:
    board.handle_link_event(MessageReceived(Channel.CONTROL, encode(msg)), now=0.0)  # type: ignore[arg-type]


def test_a_v3_board_announces_no_more_devices_than_the_host_keeps() -> None:
    pair = Pair(
        board_with(5, ConnectorConfig(version_max=BUS_VERSION_LIMITS)),
        Bus(BusConfig(max_devices=3)),
    )
    pair.start()
    assert pair.host.version == BUS_VERSION_LIMITS
    assert [d.device_id for d in pair.host.devices()] == [1, 2, 3]
    assert pair.host_events[-1] == BusReady(version=BUS_VERSION_LIMITS, device_count=3)
    assert pair.board_events == [HostRegistered(version=BUS_VERSION_LIMITS, device_count=3)]
    board = pair.board.statistics().as_dict()
    assert board["devices_withheld"] == 2
    assert board["sent_DevAdd"] == 3
    assert pair.host.statistics().as_dict().get("refused_limit", 0) == 0


def test_a_withheld_device_is_announced_when_an_announced_one_goes() -> None:
    pair = Pair(board_with(3), Bus(BusConfig(max_devices=2)))
    pair.start()
    pair.take_events()
    late = pair.board.add_device(CountingDevice(), now=0.0)  # withheld too: no room
    pair.pump()
    assert pair.take_events() == []
    assert pair.board.statistics().as_dict()["devices_withheld"] == 2
    pair.board.remove_device(1, now=0.0)
    pair.pump()
    events = pair.take_events()
    assert [type(e) for e in events] == [DeviceRemoved, DeviceAdded]
    assert isinstance(events[1], DeviceAdded) and events[1].device.device_id == 3
    pair.board.remove_device(3, now=0.0)
    pair.pump()
    assert [d.device_id for d in pair.host.devices()] == [2, late]
    pair.board.remove_device(late, now=0.0)
    pair.pump()
    assert [d.device_id for d in pair.host.devices()] == [2]


def test_removing_a_withheld_device_sends_nothing() -> None:
    pair = Pair(board_with(2), Bus(BusConfig(max_devices=1)))
    pair.start()
    pair.take_events()
    pair.board.remove_device(2, now=0.0)
    pair.pump()
    assert pair.take_events() == []
    assert "sent_DevDrop" not in pair.board.statistics().as_dict()


def test_a_v2_host_registers_with_a_v3_board_without_limits() -> None:
    pair = Pair(board_with(4), Bus(BusConfig(version_max=2, max_devices=3)))
    pair.start()
    assert pair.host.version == 2 and pair.board.version == 2
    assert "sent_BusLimits" not in pair.host.statistics().as_dict()
    # the v2 board side replays everything; the host's own limit refuses the fourth, counted
    assert len(pair.host.devices()) == 3
    assert pair.host.statistics().as_dict()["refused_limit"] == 1
    assert pair.board.statistics().as_dict()["devices_withheld"] == 0


def test_a_v2_board_registers_a_v3_host() -> None:
    pair = Pair(board_with(2, ConnectorConfig(version_max=2)), Bus())
    pair.start()
    assert pair.host.ready and pair.host.version == 2
    assert len(pair.host.devices()) == 2
    assert "sent_BusLimits" not in pair.host.statistics().as_dict()


def test_the_v3_replay_waits_for_bus_limits_and_requests_before_it_are_refused() -> None:
    board = board_with(2)
    board.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    deliver(board, BusHello(1, 3))
    welcome = sent(board)
    assert len(welcome) == 1 and isinstance(welcome[0], BusWelcome)
    assert welcome[0].version == 3 and welcome[0].status == 0
    assert board.state is ConnectorState.AWAITING_LIMITS and not board.registered
    deliver(board, DevCall(5, 1, 0, 0, b"x"))
    assert sent(board) == [DevCallReply(5, Status.ENOTCONN, b"")]
    deliver(board, BusLimits(max_devices=1))
    replay = sent(board)
    assert [type(m) for m in replay] == [DevAdd, BusSynced]
    assert replay[-1] == BusSynced(1)
    assert board.registered
    deliver(board, BusLimits(max_devices=9))  # a second one changes nothing, counted
    assert sent(board) == []
    stats = board.statistics().as_dict()
    assert stats["refused_unexpected"] == 1
    assert stats["refused_not_registered"] == 1


def test_bus_limits_before_bus_hello_is_refused_and_counted() -> None:
    board = board_with(1)
    board.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    deliver(board, BusLimits(max_devices=1))
    assert sent(board) == []
    assert board.statistics().as_dict()["refused_unexpected"] == 1
    deliver(board, BusHello(1, 3))
    deliver(board, BusLimits(max_devices=4))
    assert [type(m) for m in sent(board)] == [BusWelcome, DevAdd, BusSynced]


def test_the_host_limit_resets_with_the_session() -> None:
    board = board_with(3)
    board.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    deliver(board, BusHello(1, 3))
    deliver(board, BusLimits(max_devices=1))
    sent(board)
    board.handle_link_event(SessionStarted(3, 4, 0, 4096, 1), now=0.0)
    deliver(board, BusHello(1, 2))  # a v2 host this time: no limit announced, all replayed
    assert [type(m) for m in sent(board)] == [BusWelcome, DevAdd, DevAdd, DevAdd, BusSynced]
