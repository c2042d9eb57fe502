"""A rate-limited summary of refused input, for the operator (sans-I/O).

Every refusal is counted where it happens (``drop_*`` in the link's statistics,
``refused_*`` in the bus cores'), never logged one by one: a hostile or noisy
peer must not flood the log.  The runtime hands the totals to a
``RefusalSummary`` at most once per interval; it answers with one line saying
what was refused since the last line, largest count first::

    refused 1,204 frames from /dev/ttyUSB0 in the last 10 s: 1,100 bad CRC,
    104 unknown channel

or ``None`` when nothing was.  The runtime logs that line at WARNING, the
default level, so a board under attack says so without ``-v``.
"""

from __future__ import annotations

from collections.abc import Mapping

#: seconds between two summaries at most one of which is logged
SUMMARY_INTERVAL_S = 10.0

#: link drop counters that are refusals (duplicates and out-of-window frames are the
#: normal cost of retransmission, not refusals), with their names in the summary
LINK_REFUSALS = {
    "drop_bad_crc": "bad CRC",
    "drop_malformed": "malformed",
    "drop_oversize": "oversize",
    "drop_stale": "stale",
    "drop_oversize_messages": "oversize message",
    "drop_unknown_channel": "unknown channel",
    "drop_unauthenticated": "unauthenticated",
    "hellos_refused": "refused HELLO",
    "session_resets": "session reset",
}


def refusal_totals(
    link: Mapping[str, int | float], upper: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The refusal counters of a link's and its bus core's statistics, by summary name."""
    totals = {name: int(link.get(key, 0)) for key, name in LINK_REFUSALS.items()}
    for key, value in (upper or {}).items():
        if key.startswith("refused_"):
            totals["bus " + key.removeprefix("refused_").replace("_", " ")] = value
    return totals


class RefusalSummary:
    """Turns running refusal totals into at most one line per interval."""

    def __init__(self, source: str, *, now: float, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self.source = source
        self.interval_s = interval_s
        self._last: dict[str, int] = {}
        self._since = now
        #: when ``report`` is worth calling next
        self.due = now + interval_s

    def report(self, totals: Mapping[str, int], *, now: float) -> str | None:
        """What was refused since the last report, or None; the next one is due an
        interval from now."""
        new = {name: n - self._last.get(name, 0) for name, n in totals.items()}
        self._last = dict(totals)
        span = now - self._since
        self._since = now
        self.due = now + self.interval_s
        counts = sorted(((n, name) for name, n in new.items() if n > 0), reverse=True)
        if not counts:
            return None
        total = sum(n for n, _ in counts)
        link_only = all(name in LINK_REFUSALS.values() for _, name in counts)
        what = "frames" if link_only else "frames and messages"
        parts = ", ".join(f"{n:,} {name}" for n, name in counts)
        seconds = f"{span:.0f}" if span >= 1 else f"{span:.1f}"
        return f"refused {total:,} {what} from {self.source} in the last {seconds} s: {parts}"
