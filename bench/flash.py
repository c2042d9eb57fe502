"""Flash benchmark: ``ira flash`` over the throttled null-modem into a real shell.

A shell (``sh -i``) runs on one end of a null-modem throttled to the baud rate,
as on a board's serial console; ``ira flash`` installs into a temporary root
(``--install-root``).  Per baud rate, one whole flash, and as the baseline in the
same run the line rate the null-modem really gives (raw bytes through the same
kind of null-modem for two seconds):

* ``stream_ratio``: compressed stream bytes per second during the transfer ÷ the
  measured line rate (what the protocol's framing, acks and waits cost), and
  ``stream_share_of_baud`` the same ÷ (baud / 10);
* ``payload_ratio``: payload bytes (the zipapp, uncompressed) per second ÷
  (baud / 10): the issue's figure, compression included (esptool's "effective");
* ``wall_s``: the whole flash (shell, probe, stub, transfer, install).

Usage: ``python bench/flash.py [--json] [--baud N ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import serial

from ira.tools.flash.session import FlashOptions, flash, payload
from ira.tools.nullmodem import NullModem, NullModemConfig


def line_rate(baud: int, seconds: float = 2.0) -> float:
    """Bytes per second the throttled null-modem carries one way: a thread writes raw
    bytes as fast as the pty takes them, the reader counts what arrives in ``seconds``."""
    with NullModem(NullModemConfig(baud=baud)) as nm:
        a = serial.Serial(nm.path_a, timeout=0.05, write_timeout=0.5)
        b = serial.Serial(nm.path_b, timeout=0.05)
        stop = threading.Event()

        def write() -> None:
            chunk = os.urandom(1024)
            while not stop.is_set():
                with contextlib.suppress(serial.SerialTimeoutException):
                    a.write(chunk)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            start = time.monotonic()
            while time.monotonic() - start < 0.3:  # the queues fill first
                b.read(65536)
            got, start = 0, time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                got += len(b.read(65536))
            return got / elapsed
        finally:
            stop.set()
            writer.join()
            a.close()
            b.close()


def one_flash(baud: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, NullModem(NullModemConfig(baud=baud)) as nm:
        profile = Path(tmp) / "p.toml"
        profile.write_text('board = "bench"\n\n[[device]]\ntype = "echo"\n')
        script = f"exec <>{nm.path_b} >&0 2>&1; stty sane; exec sh -i"
        shell = subprocess.Popen(["setsid", "sh", "-c", script], start_new_session=True)
        root = Path(tmp) / "board"
        try:
            start = time.monotonic()
            opts = FlashOptions(console=nm.path_a, profile=str(profile), install_root=str(root))
            report = flash(opts)
            wall = time.monotonic() - start
        finally:
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int((root / "run/ira-board.pid").read_text()), signal.SIGKILL)
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    return {
        "stream_bytes": report.stream_bytes,
        "payload_bytes": report.payload_bytes,
        "transfer_s": round(report.transfer_s, 3),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--baud", type=int, nargs="*", default=[115200, 921600])
    args = parser.parse_args()
    payload()  # built (and compressed) outside the timings
    results: dict[str, object] = {}
    for baud in args.baud:
        rate = line_rate(baud)
        run = one_flash(baud)
        stream_rate = run["stream_bytes"] / run["transfer_s"]
        results[str(baud)] = {
            **run,
            "line_rate_Bps": round(rate),
            "line_share_of_baud": round(rate / (baud / 10), 3),
            "stream_ratio": round(stream_rate / rate, 3),
            "stream_share_of_baud": round(stream_rate / (baud / 10), 3),
            "payload_ratio": round(run["payload_bytes"] / run["transfer_s"] / (baud / 10), 3),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for baud, r in results.items():
        assert isinstance(r, dict)
        print(
            f"{baud:>7} baud: stream {r['stream_ratio']:.3f} of the line, payload "
            f"{r['payload_ratio']:.2f} x baud/10, transfer {r['transfer_s']} s, "
            f"whole flash {r['wall_s']} s"
        )


if __name__ == "__main__":
    main()
