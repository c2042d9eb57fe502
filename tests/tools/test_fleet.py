"""A fleet of virtual boards: each answers on its name, and a name comes and goes with plug."""

from __future__ import annotations

from pathlib import Path

from ira.runtime import HostClient
from ira.tools.fleet import Fleet


def test_every_board_of_a_fleet_answers_on_its_name(tmp_path: Path) -> None:
    with Fleet(3, tmp_path / "ira") as fleet:
        assert sorted(p.name for p in (tmp_path / "ira").iterdir()) == [
            "board-00",
            "board-01",
            "board-02",
        ]
        for index in range(3):
            with HostClient(str(fleet.path(index))) as host:
                types = [d.type for d in host.wait_ready(10.0)]
                assert "echo" in types
                assert host.ping(b"fleet").payload == b"fleet"
        fleet.unplug(1)
        assert not fleet.plugged(1) and not fleet.path(1).exists()
        fleet.plug(1)
        assert fleet.path(1).resolve() == Path(fleet.modems[1].path_b).resolve()
    assert list((tmp_path / "ira").iterdir()) == []  # every name removed on exit
