"""One host, many boards: every figure against one board alone, measured in the same run.

The boards are a fleet (``ira.tools.fleet``): N virtual null-modems, a board on
each, in a process of their own, their host ends named in a directory as udev
names them.  The host side:

* discovery: one ``HostService`` over all N links, in this process; the time
  from its start until every board's devices are known, against the same for
  one board (target: all 16 within 2 s);
* idle CPU: ``ira host serve`` over all N links in its own process, once every
  board is discovered: its CPU time over ``IDLE_S`` seconds of nothing but
  keepalives, per board, in per cent of a core (target ≤ 0.5 % per board); the
  same process over one board gives the baseline;
* aggregate DEVCALLs: pipelined DEVCALLs to every board's ``counter`` at once
  (one thread per board, ``IN_FLIGHT`` calls in flight each) for ``LOAD_S``
  seconds, against the same with one board (target: at least 0.8 of one board's where
  the two cores allow: the fleet's process and this one share them).

venet goodput with all boards busy is not measured here yet (it needs a TAP and
a namespace per board).

Usage: ``python bench/scale.py [--json] [--boards N] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from ira import native
from ira.busmodel.devices.counting import CounterFunc
from ira.runtime import HostClient, HostService

#: calls each board's thread keeps in flight
IN_FLIGHT = 64
#: how long the host sits idle while its CPU is measured
IDLE_S = 10.0
#: how long the DEVCALL load runs
LOAD_S = 5.0
#: how long any one wait may take
WAIT_S = 60.0


def start_fleet(count: int, directory: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """The fleet's process and the host ends of its boards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ira.tools.fleet", str(count), str(directory)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    links: list[str] = []
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc, links
        links.append(line.split()[1])
    raise RuntimeError("the fleet ended before it was ready")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def discovery_s(links: list[str]) -> float:
    """Seconds from a host service's start until every link's board is discovered."""
    start = time.perf_counter()
    with HostService(links) as service:
        for client in service.clients:
            client.wait_ready(WAIT_S)
        return time.perf_counter() - start


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_share(links: list[str], idle_s: float) -> float:
    """A core's share ``ira host serve`` takes over ``links`` once they are all discovered."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ira", "host", "serve", *links],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        boards = set()
        deadline = time.monotonic() + WAIT_S
        for line in proc.stdout:  # "<link>: + device 1 board-info ..." per device
            if "board-info" in line:
                boards.add(line.split(":", 1)[0])
            if len(boards) == len(links) or time.monotonic() > deadline:
                break
        if len(boards) != len(links):
            raise RuntimeError(f"ira host serve discovered {len(boards)} of {len(links)} boards")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        time.sleep(1.0)
        before, t0 = _cpu_s(proc.pid), time.perf_counter()
        time.sleep(idle_s)
        return (_cpu_s(proc.pid) - before) / (time.perf_counter() - t0)
    finally:
        stop(proc)


def aggregate_devcalls_per_s(links: list[str], load_s: float) -> float:
    """Pipelined DEVCALLs per second to every board's counter at once."""
    counts = [0] * len(links)
    go = threading.Event()
    done = threading.Event()

    def load(index: int, host: HostClient) -> None:
        handle = host.open("counter")
        window: list[Future[object]] = []
        go.wait()
        while not done.is_set():
            window.append(host.submit(handle, CounterFunc.INCREMENT))
            if len(window) >= IN_FLIGHT:
                host.result(window.pop(0), WAIT_S)
                counts[index] += 1
        for future in window:
            host.result(future, WAIT_S)

    with HostService(links) as service:
        for client in service.clients:
            client.wait_ready(WAIT_S)
        threads = [
            threading.Thread(target=load, args=(i, c), daemon=True)
            for i, c in enumerate(service.clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every thread has opened its counter
        start = time.perf_counter()
        go.set()
        time.sleep(load_s)
        done.set()
        elapsed = time.perf_counter() - start
        for thread in threads:
            thread.join(WAIT_S)
    return sum(counts) / elapsed


def run(boards: int, quick: bool) -> dict[str, object]:
    idle_s = 3.0 if quick else IDLE_S
    load_s = 2.0 if quick else LOAD_S
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ira-scale-")))
        fleet, links = start_fleet(boards, directory)
        stack.callback(stop, fleet)
        one = links[:1]
        r: dict[str, object] = {"boards": boards}
        r["discovery_one_s"] = discovery_s(one)
        r["discovery_all_s"] = discovery_s(links)
        idle_one = idle_cpu_share(one, idle_s)
        idle_all = idle_cpu_share(links, idle_s)
        r["idle_cpu_one_board_percent"] = 100 * idle_one
        r["idle_cpu_per_board_percent"] = 100 * idle_all / boards
        r["idle_cpu_per_board_ratio_to_one"] = idle_all / boards / idle_one if idle_one else None
        one_rate = aggregate_devcalls_per_s(one, load_s)
        all_rate = aggregate_devcalls_per_s(links, load_s)
        r["devcalls_per_s_one"] = one_rate
        r["devcalls_per_s_all"] = all_rate
        r["devcalls_ratio_all_to_one"] = all_rate / one_rate
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--boards", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="shorter idle and load phases")
    args = parser.parse_args()
    r = run(args.boards, args.quick)
    if args.json:
        print(json.dumps({**r, "build": native.status()}, sort_keys=True))
        return
    print(f"build: {native.status()}")
    print(
        f"discovery: all {args.boards} boards in {r['discovery_all_s']:.2f} s "
        f"(target <= 2 s), one board {r['discovery_one_s']:.2f} s"
    )
    print(
        f"idle host CPU: {r['idle_cpu_per_board_percent']:.3f} % of a core per board "
        f"(target <= 0.5 %), one board alone {r['idle_cpu_one_board_percent']:.3f} %"
    )
    print(
        f"pipelined DEVCALLs: {r['devcalls_per_s_all']:,.0f}/s to all {args.boards} boards, "
        f"{r['devcalls_per_s_one']:,.0f}/s to one = {r['devcalls_ratio_all_to_one']:.2f} "
        "(target >= 0.8 where the two cores allow)"
    )


if __name__ == "__main__":
    main()
