"""The wire-level fuzzer against real ``ira board serve`` / ``ira host serve`` processes
(a short run; ``make fuzz-wire`` runs 10 minutes a side, ``make soak`` an hour)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ira.tools.fuzzwire import CLASSES, run

SECONDS = float(os.environ.get("IRA_FUZZ_WIRE_S", "15"))
SEED = int(os.environ.get("IRA_FUZZ_WIRE_SEED", "1"))
#: every class of input is sent (a HELLO whose versions do not meet ours and a length
#: prefix over 5 bytes once ended the process; they are refused now)
AVOID: frozenset[str] = frozenset()
pytestmark = pytest.mark.timeout(SECONDS + 60)


@pytest.mark.parametrize("target", ["board", "host"])
def test_a_hostile_peer_neither_kills_nor_stalls_the_target(target: str) -> None:
    report = run(target, SECONDS, seed=SEED, avoid=AVOID)
    assert report.ok, report.failures
    assert report.exits == report.stalls == 0
    assert report.batches >= 2
    # every class of input was tried (varint once per session)
    assert set(CLASSES) <= set(report.tried), report.tried
    assert report.rss_max_growth_mb < 10


def test_with_a_key_the_hostile_peer_speaks_the_mac_too(tmp_path: Path) -> None:
    key = tmp_path / "link.psk"
    key.write_text("a fuzzing key of enough bytes\n")
    report = run("board", min(SECONDS, 8), psk_file=str(key), seed=SEED + 1, avoid=AVOID)
    assert report.ok, report.failures
    assert report.tried.get("devcall", 0) > 0  # got past the handshake: a session
