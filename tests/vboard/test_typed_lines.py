"""What ``ira flash`` types into a board's shell fits the shortest line a shell takes:
busybox ash's line editing (the virtual board's console shell, and many a real
board's) cuts a line at 1024 bytes, and the rest runs as a command of its own."""

from __future__ import annotations

from ira.tools.flash import plan, stub

#: what Console.run adds around a command (its markers)
_MARKERS = len("echo __IRA_'B'EGIN__; ; echo __IRA_'R'C=$?__")


def test_the_probe_line_stays_below_the_line_limit() -> None:
    root = "/a/long/install/root/" + "x" * 40
    assert len(plan.probe_command("/usr/bin/python3.11", root)) + _MARKERS < plan.MAX_LINE
    assert plan.MAX_LINE < 1024


def test_every_stub_line_stays_below_the_line_limit() -> None:
    lines = stub.command_lines("/usr/bin/python3.11", "/")
    assert max(len(line) for line in lines) < plan.MAX_LINE
