"""``ira host serve --watch DIR``: boards served as their names come, kept while they are
away, forgotten when they stay away."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_reconnect_commands import Child

from ira.cli.main import main
from ira.tools.fleet import Fleet

pytestmark = pytest.mark.timeout(60)


def test_host_serve_watch_follows_boards_as_they_are_plugged(tmp_path: Path) -> None:
    names = tmp_path / "ira"
    with Fleet(2, names) as fleet:
        fleet.unplug(1)  # plugged in only after the host starts
        host = Child("host", "serve", "--watch", str(names), "--forget-after", "3")
        try:
            a, b = (re.escape(str(fleet.path(i))) for i in (0, 1))
            host.expect(rf"^{a}: board board-00 plugged in \({re.escape(str(names))}\): serving")
            host.expect(rf"^{a}: ready: 4 devices$")
            fleet.plug(1)
            host.expect(rf"^{b}: board board-01 plugged in")
            host.expect(rf"^{b}: ready: 4 devices$")
            fleet.unplug(0)
            host.expect(rf"^{a}: board board-00 unplugged: its link waits for it$")
            fleet.plug(0)
            # the link reopens on the name's hotplug hint; the directory's scan may see
            # the board back before or after its link is up again
            mark = len(host.seen)
            up = rf"^{a}: link up after \d+\.\d s; session resumed$"
            host.expect(rf"^{a}: board board-00 is back$")
            if not any(re.search(up, line) for line in host.seen[mark:]):
                host.expect(up)
            fleet.unplug(1)
            host.expect(rf"^{b}: board board-01 unplugged")
            host.expect(rf"^{b}: board board-01 gone for 3 s: no longer served$", 10.0)
            fleet.plug(1)  # back after it was forgotten: served afresh
            host.expect(rf"^{b}: board board-01 plugged in")
            host.expect(rf"^{b}: ready: 4 devices$")
            assert host.finish() == 0
        finally:
            host.kill()


def test_host_serve_needs_links_or_a_directory_to_watch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["host", "serve"]) == 2
    assert capsys.readouterr().err == (
        "ira host: give the links to serve, or --watch [DIR] to serve boards as they come\n"
    )
    assert main(["host", "serve", "--watch", "/dev/ira", "--forget-after", "0"]) == 2
    assert "--forget-after 0: give a positive number of seconds" in capsys.readouterr().err
