"""A hostile peer against a running ``ira board serve`` or ``ira host serve``.

``python -m ira.tools.fuzzwire {board,host} [--duration S] [--psk-file F]``
starts the target as its own process on one end of a virtual null-modem (real
ptys) and takes the other end.  It speaks valid framing and CRCs (and the MAC,
with ``--psk-file``) and mutates everything above, using the wire modules'
construct schemas as the grammar: the fields of each message (the ``SPEC``
examples, one field at a time set to a boundary or a random value of its
width), or the encoded bytes (flipped, cut, grown).  The classes of input:

``hello``        HELLO / HELLO_ACK with mutated fields (versions, limits, epochs)
``data_header``  DATA frames with mutated headers (tag, seq, ack, window, tx, echo)
``ack``          ACK frames with mutated fields and SACK blocks
``channel``      DATA frames of the session on channels 2 and 3
``varint``       DATA frames at the stream's start whose message length prefix
                 is overlong, huge or cut short
``bus``          bus messages (every message of ``ira.wire.bus``) mutated
``devcall``      DEVCALLs to the devices the target announced, payloads mutated
``virtio``       virtio requests (``ira.wire.virtio``) in DEVCALLs to virtio devices
``junk``         messages of random bytes

A batch lasts ``--batch`` seconds.  After every batch the hostile peer lets go
of the line and a legitimate ira peer takes it (a ``HostClient`` pinging the
board's echo device; a ``BoardService`` the host must discover), and the
invariants are checked: the target is alive, serves the legitimate peer within
``--answer-within`` seconds, its RSS stays within ``--rss-mb`` of what it was
after the first batch, and its open descriptors within ``--fds``.  A report
(inputs tried per class, checks, RSS and fds) is printed at the end; the exit
status is 0 when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ira.link.config import LinkConfig
from ira.runtime import BoardService, HostClient
from ira.runtime.psk import link_config, read_psk
from ira.tools.fuzzpeer import CLASSES, KNOWN, Fuzzer
from ira.tools.nullmodem import NullModem
from ira.transports import open_transport

_now = time.monotonic
#: what the first check of a target allows on top of ``answer_within_s``: its start
STARTUP_S = 15.0

BOARD_PROFILE = """\
board = "fuzz-board"
[[device]]
type = "board-info"
[[device]]
type = "echo"
[[device]]
type = "counter"
[[device]]
type = "ring-loopback"
[[device]]
type = "virtio-rng"
"""


def _proc(pid: int) -> tuple[int, int]:
    """RSS (bytes) and open descriptors of a process."""
    rss = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Target:
    """The process under test, its output read by a thread."""

    def __init__(self, argv: list[str], pythonpath: str | None = None) -> None:
        env = dict(os.environ)
        if pythonpath is not None:  # another checkout of ira under test
            env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ira", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(2)
        return self.proc.returncode


# --- the legitimate peer and the invariants -------------------------------------------------


def _legit_board_check(path: str, config: LinkConfig | None, within_s: float) -> float | None:
    """Seconds until a host got an echo DEVCALL answered, or None."""
    start = _now()
    with contextlib.suppress(Exception), HostClient(path, link_config=config) as host:
        result = host.ping(b"legitimate", timeout_s=within_s)
        if result.payload == b"legitimate":
            return _now() - start
    return None


def _legit_host_check(
    path: str, config: LinkConfig | None, target: Target, within_s: float
) -> float | None:
    """Seconds until the host reported a legitimate board ready, or None."""
    start = _now()
    seen = sum("ready:" in line for line in target.lines)
    with contextlib.suppress(Exception), BoardService(path, link_config=config):
        while _now() - start < within_s:
            if sum("ready:" in line for line in target.lines) > seen:
                return _now() - start
            time.sleep(0.02)
    return None


@dataclasses.dataclass
class Report:
    target: str
    seconds: float = 0.0
    batches: int = 0
    tried: dict[str, int] = dataclasses.field(default_factory=dict)
    exits: int = 0
    stalls: int = 0
    answer_max_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_max_growth_mb: float = 0.0
    fds_start: int = 0
    fds_max: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@contextlib.contextmanager
def _target(kind: str, path: str, psk_file: str | None, pythonpath: str | None) -> Iterator[Target]:
    with tempfile.TemporaryDirectory(prefix="fuzzwire-") as tmp:
        extra = ["--psk-file", psk_file] if psk_file else []
        if kind == "board":
            profile = Path(tmp) / "board.toml"
            profile.write_text(BOARD_PROFILE, encoding="utf-8")
            argv = ["board", "serve", path, "--profile", str(profile), *extra]
        else:
            argv = ["host", "serve", path, *extra]
        target = Target(argv, pythonpath)
        try:
            yield target
        finally:
            target.stop()


def run(
    kind: str,
    duration_s: float,
    *,
    batch_s: float = 2.0,
    seed: int = 1,
    psk_file: str | None = None,
    answer_within_s: float = 5.0,
    rss_mb: float = 10.0,
    fds: int = 8,
    target_pythonpath: str | None = None,
    avoid: frozenset[str] = frozenset(),
    classes: frozenset[str] = frozenset(CLASSES),
    keep_going: bool = False,
) -> Report:
    """Fuzz for ``duration_s``; the first failed check ends the run, or (``keep_going``)
    is recorded and the target started again."""
    psk = None if psk_file is None else read_psk(psk_file)
    config = link_config(psk_file)
    report = Report(kind)
    started = _now()
    fuzzer = Fuzzer(kind, psk, seed, avoid)
    fuzzer.restrict(set(classes))
    with NullModem() as nm:
        while _now() - started < duration_s and (keep_going or report.ok):
            with _target(kind, nm.path_a, psk_file, target_pythonpath) as target:
                _fuzz_one_target(
                    fuzzer,
                    target,
                    nm.path_b,
                    config,
                    report,
                    started,
                    duration_s,
                    batch_s,
                    answer_within_s,
                    rss_mb,
                    fds,
                )
    report.tried = dict(sorted(fuzzer.tried.items()))
    report.seconds = _now() - started
    return report


def _fuzz_one_target(
    fuzzer: Fuzzer,
    target: Target,
    path: str,
    config: LinkConfig | None,
    report: Report,
    started: float,
    duration_s: float,
    batch_s: float,
    answer_within_s: float,
    rss_mb: float,
    fds: int,
) -> None:
    """Batches against one target process until a check fails or the time is up."""

    def check(within_s: float = answer_within_s) -> float | None:
        if fuzzer.kind == "board":
            return _legit_board_check(path, config, within_s)
        return _legit_host_check(path, config, target, within_s)

    # also: the target is up before the first batch (starting takes a while on a busy machine)
    if check(answer_within_s + STARTUP_S) is None:
        report.failures.append(
            "the target never served a legitimate peer: " + " | ".join(target.errors[-3:])
        )
        return
    rss0, fds0 = _proc(target.proc.pid)
    if not report.batches:
        report.rss_start_mb, report.fds_start, report.fds_max = rss0 / 1e6, fds0, fds0
    while _now() - started < duration_s:
        transport = fuzzer.transport = open_transport(path)
        try:
            fuzzer.batch(batch_s)
        finally:
            transport.close()
        report.batches += 1
        if not target.alive():
            report.exits += 1
            report.failures.append(
                f"batch {report.batches}: the target exited ({target.proc.returncode}): "
                + " | ".join(target.errors[-2:])
            )
            return
        answered = check()
        if answered is None:
            report.stalls += 1
            report.failures.append(
                f"batch {report.batches}: no answer to a legitimate peer "
                f"within {answer_within_s} s: " + " | ".join(target.errors[-2:])
            )
            return
        report.answer_max_s = max(report.answer_max_s, answered)
        rss, nfds = _proc(target.proc.pid)
        report.rss_end_mb = rss / 1e6
        report.rss_max_growth_mb = max(report.rss_max_growth_mb, (rss - rss0) / 1e6)
        report.fds_max = max(report.fds_max, nfds)
        if rss - rss0 > rss_mb * 1e6:
            report.failures.append(f"batch {report.batches}: RSS grew {rss - rss0:,} B")
            return
        if nfds > fds0 + fds:
            report.failures.append(f"batch {report.batches}: {nfds} fds (from {fds0})")
            return


def print_report(r: Report) -> None:
    total = sum(v for k, v in r.tried.items() if k in CLASSES)
    print(f"fuzzwire against ira {r.target} serve: {r.seconds:.0f} s, {r.batches} batches")
    print("inputs tried: " + ", ".join(f"{k} {v:,}" for k, v in r.tried.items()))
    print(f"  {total:,} in all")
    print(
        f"exits {r.exits}, stalls {r.stalls}, slowest legitimate answer {r.answer_max_s:.2f} s, "
        f"RSS {r.rss_start_mb:.1f} -> {r.rss_end_mb:.1f} MB (max growth "
        f"{r.rss_max_growth_mb:+.1f} MB), fds {r.fds_start} -> max {r.fds_max}"
    )
    print("PASS" if r.ok else "FAIL: " + "; ".join(r.failures))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ira.tools.fuzzwire", description=__doc__)
    p.add_argument("target", choices=("board", "host"))
    p.add_argument("--duration", type=float, default=60.0, metavar="S")
    p.add_argument("--batch", type=float, default=2.0, metavar="S", help="seconds per batch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--psk-file", metavar="FILE")
    p.add_argument("--answer-within", type=float, default=5.0, metavar="S")
    p.add_argument("--rss-mb", type=float, default=10.0, help="allowed RSS growth")
    p.add_argument("--fds", type=int, default=8, help="allowed growth of open descriptors")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--keep-going", action="store_true", help="after a failed check, restart the target"
    )
    p.add_argument("--only", action="append", choices=CLASSES, help="send only this class")
    p.add_argument(
        "--avoid",
        action="append",
        choices=sorted(KNOWN),
        default=[],
        help="leave out the inputs of a known finding: "
        + "; ".join(f"{k}: {v}" for k, v in KNOWN.items()),
    )
    p.add_argument("--target-pythonpath", metavar="DIR", help="run the target from this checkout")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.batch <= 0 or args.answer_within <= 0:
        p.error("--duration, --batch and --answer-within must be positive")
    report = run(
        args.target,
        args.duration,
        batch_s=args.batch,
        seed=args.seed,
        psk_file=args.psk_file,
        answer_within_s=args.answer_within,
        rss_mb=args.rss_mb,
        fds=args.fds,
        target_pythonpath=args.target_pythonpath,
        avoid=frozenset(args.avoid),
        classes=frozenset(args.only or CLASSES),
        keep_going=args.keep_going,
    )
    if args.json:
        print(json.dumps({**dataclasses.asdict(report), "ok": report.ok}, sort_keys=True))
    else:
        print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
