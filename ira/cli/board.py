"""``ira board serve LINK [--profile FILE]``: expose a profile's devices over a link.

The board runs until SIGINT or SIGTERM.  Hotswap by hand: edit the profile and
send SIGHUP (``kill -HUP PID``; the PID is printed at start).  The board
re-reads the profile and makes its container match it: devices whose entry
is gone or changed are removed (the host sees DEVDROP), new entries are added
(DEVADD); the others keep running untouched.  A profile that does not parse
is reported on one line and the running devices are kept.  Without
``--profile`` the board exposes board-info, echo, counter and ring-loopback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from ira.busmodel.profile import DEFAULT_PROFILE, Profile, load_profile
from ira.busrt import BoardService, ProfileChange
from ira.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "board",
        help="the board side: expose devices over a link",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    serve = verbs.add_parser(
        "serve",
        help="serve a profile's devices over LINK (SIGHUP reloads the profile)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("link", metavar="LINK", help="link spec, e.g. /dev/ttyUSB0 or a pty path")
    serve.add_argument("--profile", metavar="FILE", help="board profile (TOML)")
    serve.set_defaults(func=run_serve)


def _describe(change: ProfileChange) -> str:
    parts = [f"+{name}" for name in change.added] + [f"-{name}" for name in change.removed]
    return " ".join(parts) or "no change"


def _load(path: str | None) -> Profile:
    return DEFAULT_PROFILE if path is None else load_profile(path)


def run_serve(args: argparse.Namespace) -> int:
    profile = _load(args.profile)
    stop = threading.Event()
    reload = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload.set()
        stop.set()  # wake the wait below

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGINT, on_stop),
            (signal.SIGTERM, on_stop),
            (signal.SIGHUP, on_hup),
        )
    }
    try:
        with BoardService(args.link, profile) as board:
            names = ", ".join(spec.name for spec in profile.devices) or "none"
            print(
                f"board {profile.board} serving on {args.link} (pid {os.getpid()}; "
                f"SIGHUP reloads the profile): {names}",
                flush=True,
            )
            while True:
                stop.wait(0.5)
                board.runtime.raise_if_failed()
                if reload.is_set():
                    reload.clear()
                    stop.clear()
                    try:
                        change = board.apply_profile(_load(args.profile))
                    except ConfigError as exc:
                        print(f"ira board: reload refused: {exc}", file=sys.stderr, flush=True)
                        continue
                    print(f"profile reloaded: {_describe(change)}", flush=True)
                elif stop.is_set():
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
