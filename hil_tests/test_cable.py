"""The cable test: random messages of 1 B - 64 KiB from A to B, intact, in order, exactly once.

This is ``ira linktest LINK_A LINK_B`` (its ``measure``): both ends of one
link in this process, every byte and the order checked at B.
"""

from __future__ import annotations

import contextlib
import json

from rig import Rig

from ira.tools.linktest import measure

MIB = 1 << 20


def test_random_messages_arrive_intact_in_order_exactly_once(rig: Rig) -> None:
    # short and noisy: the acceptance figure (4 MiB); long: ten minutes of line, at most 256 MiB
    total = rig.bytes_for(600.0, 256 * MIB) if rig.variant.long else 4 * MIB
    with contextlib.ExitStack() as stack:
        report = measure(
            rig.link_a,
            rig.link_b,
            total,
            (1, 64 << 10),
            rig.seed,
            rig.transfer_timeout_s(total),
            stack,
        )
    summary = json.dumps(
        {k: v for k, v in report.items() if k not in ("stats_a", "stats_b")}, sort_keys=True
    )
    assert report["corrupt"] == 0, summary
    assert report["out_of_order"] == 0, summary
    assert report["duplicates"] == 0, summary
    assert report["messages_received"] == report["messages_expected"], summary
    assert report["ok"], summary
    events = report["events_b"]
    assert isinstance(events, list)
    assert not [e for e in events if "restarted" in e or "lost" in e], summary
