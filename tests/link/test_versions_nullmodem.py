"""Link protocol versions 1 and 2 on the virtual null-modem (real ptys, pyserial):
an end that speaks only version 1 and one that speaks 2 agree on 1 and deliver
everything both ways, on a throttled line that spoils bytes; two ends of
version 2 agree on 2."""

from __future__ import annotations

import contextlib
import time

import pytest

from ira.link.config import LinkConfig
from ira.link.events import Channel, MessageReceived, SessionStarted
from ira.runtime.link import LinkRuntime
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.transports.serial import open_serial

pytestmark = pytest.mark.timeout(120)

#: 115200 baud, about one byte in a thousand spoiled: every kind of loss, quickly
LINE = NullModemConfig(baud=115200, ber=2e-5, drop=0.001, seed=11)
COUNT = 60


def _collect(rt: LinkRuntime, want: int, timeout_s: float) -> tuple[list[bytes], list[int]]:
    """Messages and session versions ``rt`` reported until it has ``want`` messages."""
    messages: list[bytes] = []
    versions: list[int] = []
    limit = time.monotonic() + timeout_s
    while len(messages) < want and time.monotonic() < limit:
        event = rt.next_event(0.2)
        if isinstance(event, MessageReceived):
            messages.append(event.payload)
        elif isinstance(event, SessionStarted):
            versions.append(event.version)
    rt.raise_if_failed()
    return messages, versions


@pytest.mark.parametrize(("version_a", "version_b", "session"), [(1, 2, 1), (2, 1, 1), (2, 2, 2)])
def test_versions_interoperate_over_the_null_modem(
    version_a: int, version_b: int, session: int
) -> None:
    with NullModem(LINE) as nm, contextlib.ExitStack() as stack:
        a = stack.enter_context(
            LinkRuntime(open_serial(nm.path_a), LinkConfig(version_max=version_a))
        )
        b = stack.enter_context(
            LinkRuntime(open_serial(nm.path_b), LinkConfig(version_max=version_b))
        )
        to_b = [b"a%03d" % i + bytes(i * 7 % 700) for i in range(COUNT)]
        to_a = [b"b%03d" % i + bytes(i * 13 % 90) for i in range(COUNT)]
        for i in range(COUNT):
            a.send(to_b[i], Channel.BULK)
            b.send(to_a[i], Channel.CONTROL)
        got_b, versions_b = _collect(b, COUNT, 60.0)
        got_a, versions_a = _collect(a, COUNT, 60.0)
        assert got_b == to_b  # exactly once, in order
        assert got_a == to_a
        assert versions_a == versions_b == [session]
