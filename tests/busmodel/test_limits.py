"""What a hostile board can make a host hold, and print, is bounded."""

from __future__ import annotations

import tracemalloc

from ira.busmodel import Bus, BusConfig, DeviceInfo
from ira.busmodel.events import DeviceAdded
from ira.cli.host import describe
from ira.link.events import Channel, MessageReceived, SessionStarted
from ira.wire.bus import (
    MAX_ATTR_KEY_BYTES,
    MAX_ATTR_VALUE_BYTES,
    MAX_ATTRS,
    Attribute,
    BusSynced,
    BusWelcome,
    DevAdd,
    encode,
)

BIG_ATTRS = tuple(
    Attribute(f"{i:0{MAX_ATTR_KEY_BYTES}d}", chr(ord("a") + i % 26) * MAX_ATTR_VALUE_BYTES)
    for i in range(MAX_ATTRS)
)


def test_a_board_announcing_devices_without_end_fills_a_bounded_table() -> None:
    host = Bus()
    host.handle_link_event(SessionStarted(1, 2, 0, 4096, 1), now=0.0)
    welcome = BusWelcome(0, 2, 65536, 64, 64, 1 << 20, 4 << 20)
    host.handle_link_event(MessageReceived(Channel.CONTROL, encode(welcome)), now=0.0)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for device_id in range(1, 801):
            devadd = encode(DevAdd(device_id, 1, "evil", BIG_ATTRS))
            host.handle_link_event(MessageReceived(Channel.CONTROL, devadd), now=0.0)
            while host.next_event() is not None:
                pass
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limit = BusConfig().max_devices
    stats = host.statistics().as_dict()
    assert stats["devices"] == limit
    assert stats["refused_limit"] == 800 - limit
    assert held - before < 5 << 20, held - before  # ~9 KiB of attributes a device, no more
    host.handle_link_event(MessageReceived(Channel.CONTROL, encode(BusSynced(800))), now=0.0)
    assert len(host.devices()) == limit


def test_a_device_line_of_host_serve_is_bounded() -> None:
    info = DeviceInfo(7, "evil", 1, tuple((a.key, a.value) for a in BIG_ATTRS))
    line = describe(DeviceAdded(info, replayed=False))
    assert line is not None
    assert line.startswith("+ device 7 evil v1 ")
    assert len(line) < 300
    assert "more characters; ira host list shows all" in line
