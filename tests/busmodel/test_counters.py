"""Typed counters: the flat names are PROTOCOL.md's, and a snapshot does not move."""

from __future__ import annotations

from pathlib import Path

from busharness import Pair

from ira.busmodel import Connector
from ira.busmodel.counters import Refusal
from ira.busmodel.devices import Echo
from ira.link.events import Channel, MessageReceived
from ira.wire.bus import BusHello, SignalNotify, encode

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def test_every_refusal_reason_is_a_counter_protocol_md_names() -> None:
    text = PROTOCOL.read_text()
    bus_table = text[text.index("### Bus layer") : text.index("### virtio and virtio-net")]
    undocumented = {r.value for r in Refusal if f"`{r.value}`" not in bus_table}
    # the host's refusals of a board's replies that PROTOCOL.md leaves to the host
    assert undocumented <= {"duplicate_device", "bad_handle"}, undocumented


def test_the_flat_names_are_the_documented_ones_and_a_snapshot_stays_put() -> None:
    board = Connector()
    board.add_device(Echo(), now=0.0)
    pair = Pair(board)
    pair.start()
    before = board.statistics()
    board.handle_link_event(MessageReceived(Channel.CONTROL, encode(BusHello(1, 1))), now=0.0)
    after = board.statistics()
    assert before.refused == {} and after.refused == {Refusal.UNEXPECTED_HELLO: 1}
    flat = after.as_dict()
    assert flat["refused_unexpected_hello"] == 1 and flat["refused"] == 1
    assert flat["devices"] == 1 and flat["messages_received"] == after.messages_received
    assert flat["messages_sent"] == sum(after.sent.values()) > 0
    assert all(name.startswith("sent_") for name in flat if "Dev" in name or "Bus" in name)
    host = pair.host.statistics().as_dict()
    assert host["refused"] == 0 and host["devices"] == 1
    assert host.get("sent_SignalNotify", 0) == pair.host.statistics().sent.get(SignalNotify, 0)
