"""A serial port a lab exports over the network (ser2net: RFC 2217, raw TCP) is an ira link."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from ira.tools.linktest import measure
from ira.tools.nullmodem import NullModem
from ira.tools.ser2net import Ser2Net


def _require_ser2net() -> None:
    if shutil.which("ser2net") is None:
        reason = "needs ser2net (Debian: ser2net; make test installs it as root)"
        if os.environ.get("IRA_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"IRA_REQUIRE_ROOT_TESTS=1 but {reason}")
        pytest.skip(reason)


@pytest.mark.parametrize("protocol", ["rfc2217", "raw"])
def test_the_cable_test_passes_through_ser2net(protocol: str) -> None:
    """256 KiB of messages from a local end to one exported by ser2net: intact, in order."""
    _require_ser2net()
    with contextlib.ExitStack() as stack:
        cable = stack.enter_context(NullModem())
        net = stack.enter_context(Ser2Net(cable.path_b, protocol=protocol))
        report = measure(cable.path_a, net.spec, 256 << 10, (1, 16 << 10), 7, 60.0, stack)
    assert report["ok"], report
    assert report["messages_received"] == report["messages_expected"] > 0
    assert report["corrupt"] == report["out_of_order"] == report["duplicates"] == 0
