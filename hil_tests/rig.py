"""The rig under test: two link specs joined by a cable, real or virtual.

Link A is the board's end, link B the host's.  With ``IRA_LINK_A`` and
``IRA_LINK_B`` (or ``--link-a``/``--link-b``) the suite runs on those ports,
e.g. two USB-serial adapters joined by a null-modem cable.  With neither, each
test gets a fresh virtual null-modem, configured by ``IRA_HIL_BAUD``,
``IRA_HIL_BER``, ``IRA_HIL_DROP`` and ``IRA_HIL_SEED`` (unthrottled and
fault-free by default).

Every test runs in three variants: ``short`` (the default run), ``long`` (a
soak on the same line) and ``noisy-115200`` (a virtual null-modem at 115200
baud with ``--ber 1e-4 --drop 0.01``); the last two are marked ``slow`` and
run by ``make soak``.  See docs/HIL.md.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

import ira
from ira.busmodel.events import BusEvent
from ira.errors import ConfigError
from ira.link.config import LinkConfig
from ira.runtime import HostClient
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.transports import scheme_of
from ira.transports.serial import DEFAULT_BAUD, parse_serial_spec

ENV_LINK_A = "IRA_LINK_A"
ENV_LINK_B = "IRA_LINK_B"
ENV_BAUD = "IRA_HIL_BAUD"
ENV_BER = "IRA_HIL_BER"
ENV_DROP = "IRA_HIL_DROP"
ENV_SEED = "IRA_HIL_SEED"

#: the noisy line of the acceptance lists: `ira nullmodem --baud 115200 --ber 1e-4 --drop 0.01`
NOISY_LINE = NullModemConfig(baud=115200, ber=1e-4, drop=0.01)

#: the link configuration every end in the suite uses (`ira board serve` uses the same)
LINK_CONFIG = LinkConfig()

#: what a restart may take beyond the dead interval: starting a Python process, scheduling
RESTART_SLACK_S = 1.0

#: seed of the messages and of the virtual cable's faults when IRA_HIL_SEED names none
DEFAULT_SEED = 1

HIL_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Variant:
    """Which version of a test runs: ``short``, ``long`` or ``noisy``."""

    name: str

    @property
    def long(self) -> bool:
        return self.name == "long"

    @property
    def noisy(self) -> bool:
        return self.name == "noisy"


SHORT = Variant("short")
LONG = Variant("long")
NOISY = Variant("noisy")

#: the parameters of the ``rig`` fixture, applied to every test that uses it
VARIANTS = [
    pytest.param(SHORT, id="short"),
    pytest.param(LONG, id="long", marks=pytest.mark.slow),
    pytest.param(NOISY, id="noisy-115200", marks=pytest.mark.slow),
]


def _number(env: Mapping[str, str], name: str, kind: type[int] | type[float]) -> float | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise pytest.UsageError(f"{name}={text!r} is not a number") from None


@dataclass(frozen=True, slots=True)
class RigSettings:
    """What the session was asked to test on (from options and the environment)."""

    link_a: str | None
    link_b: str | None
    #: the virtual cable made per test when no real links are given
    cable: NullModemConfig
    seed: int
    #: where real links came from, when not from options or the environment
    source: str | None = None
    #: the line rate of real links whose specs do not say it (labgrid's ``speed``)
    baud: int | None = None

    @classmethod
    def load(cls, link_a: str | None, link_b: str | None, env: Mapping[str, str]) -> RigSettings:
        link_a = link_a or env.get(ENV_LINK_A) or None
        link_b = link_b or env.get(ENV_LINK_B) or None
        if (link_a is None) != (link_b is None):
            raise pytest.UsageError(
                f"give both ends of the rig ({ENV_LINK_A} and {ENV_LINK_B}, or --link-a and "
                "--link-b), or neither for the virtual null-modem"
            )
        baud = _number(env, ENV_BAUD, int)
        seed = _number(env, ENV_SEED, int)
        try:
            cable = NullModemConfig(
                baud=None if baud is None else int(baud),
                ber=_number(env, ENV_BER, float) or 0.0,
                drop=_number(env, ENV_DROP, float) or 0.0,
                seed=DEFAULT_SEED if seed is None else int(seed),
            )
        except ConfigError as exc:
            raise pytest.UsageError(f"virtual null-modem: {exc}") from None
        return cls(link_a, link_b, cable, DEFAULT_SEED if seed is None else int(seed))

    def line_bytes_per_s(self, variant: Variant) -> float | None:
        """The line rate the variant runs at (baud/10), or None when unthrottled."""
        if variant.noisy:
            assert NOISY_LINE.baud is not None
            return NOISY_LINE.baud / 10
        if self.link_a is not None and self.link_b is not None:
            if self.baud is not None:
                return self.baud / 10
            return min(_spec_baud(self.link_a), _spec_baud(self.link_b)) / 10
        return None if self.cable.baud is None else self.cable.baud / 10

    def describe(self) -> str:
        if self.source is not None:
            return self.source
        if self.link_a is not None:
            return f"real links: A (board) {self.link_a}, B (host) {self.link_b}"
        c = self.cable
        line = "unthrottled" if c.baud is None else f"{c.baud} baud"
        return f"virtual null-modem per test: {line}, ber {c.ber:g}, drop {c.drop:g}, seed {c.seed}"


def _spec_baud(spec: str) -> int:
    """The baud a real link spec asks for (ira's default when it names none)."""
    if scheme_of(spec) != "serial":
        return DEFAULT_BAUD
    return parse_serial_spec(spec).baud


class Rig:
    """One test's view of the rig: the two link specs and, when virtual, the cable."""

    def __init__(
        self,
        link_a: str,
        link_b: str,
        *,
        variant: Variant,
        line_bytes_per_s: float | None,
        seed: int,
        modem: NullModem | None,
        faulty: bool = False,
    ) -> None:
        #: the board's end
        self.link_a = link_a
        #: the host's end
        self.link_b = link_b
        self.variant = variant
        #: baud/10 of the line, or None when it is unthrottled
        self.line_bytes_per_s = line_bytes_per_s
        #: seed of the messages (and of the virtual cable's faults)
        self.seed = seed
        self.modem = modem
        #: the virtual cable injects faults
        self.faulty = faulty
        self.dead_interval_s = LINK_CONFIG.dead_interval_s

    @property
    def virtual(self) -> bool:
        return self.modem is not None

    def require_virtual(self, why: str) -> NullModem:
        """The virtual cable, or skip the test (with ``why``) on real links."""
        if self.modem is None:
            pytest.skip(f"{why}: needs the virtual null-modem (real links given)")
        return self.modem

    def unplug(self, duration_s: float) -> None:
        """Pull the virtual cable for ``duration_s`` seconds."""
        self.require_virtual("unplug").unplug(duration_s)

    def bytes_for(self, line_s: float, cap_bytes: int) -> int:
        """``cap_bytes``, or what the line carries in ``line_s`` seconds if that is less."""
        if self.line_bytes_per_s is None:
            return cap_bytes
        return min(cap_bytes, int(self.line_bytes_per_s * line_s))

    def transfer_timeout_s(self, total_bytes: int) -> float:
        """A generous bound for pushing ``total_bytes`` of messages across this line.

        Faulty lines are slow (the noisy line carries about a quarter of its
        line rate today), so their bound assumes 5 %, clean throttled lines
        50 %; unthrottled lines 1 MB/s, or 100 kB/s with faults.
        """
        if self.line_bytes_per_s is None:
            return 30.0 + total_bytes / (1e5 if self.faulty else 1e6)
        floor = 0.05 if self.faulty else 0.5
        return 30.0 + total_bytes / (floor * self.line_bytes_per_s)

    @property
    def handshake_timeout_s(self) -> float:
        """How long discovery (link handshake, registration, DEVADD replay) may take."""
        return 30.0 if self.variant.noisy else 10.0

    def __repr__(self) -> str:
        kind = "virtual" if self.virtual else "real"
        return f"<Rig {kind} {self.variant.name} A={self.link_a} B={self.link_b}>"


def backstop_timeout_s(settings: RigSettings, variant: Variant) -> float:
    """pytest-timeout's bound for one test (each test also bounds its own waits)."""
    if variant.noisy:
        return 4 * 3600.0
    rate = settings.line_bytes_per_s(variant)
    transfer = 0.0 if rate is None else 3 * (4 << 20) / rate
    if variant.long:
        return 3600.0 + 2 * transfer
    return 120.0 + transfer


# -- boards -------------------------------------------------------------------

#: the devices of the board the bus tests run, in profile order
STOCK_TYPES = ("board-info", "echo", "counter", "ring-loopback")
BOARD_NAME = "hil-board"


def write_profile(path: Path, devices: Sequence[tuple[str, str]]) -> Path:
    """Write a board profile of ``(name, type)`` devices to ``path``."""
    lines = [f'board = "{BOARD_NAME}"']
    for name, dtype in devices:
        lines += ["", "[[device]]", f'type = "{dtype}"', f'name = "{name}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stock_profile(path: Path) -> Path:
    return write_profile(path, [(t, t) for t in STOCK_TYPES])


class Recorder:
    """Bus events a host client reports (on its loop thread), with the time each came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[float, BusEvent]] = []

    def __call__(self, client: HostClient, event: BusEvent) -> None:
        with self._lock:
            self._events.append((time.monotonic(), event))

    def since(self, start: float) -> list[tuple[float, BusEvent]]:
        with self._lock:
            return [(t, e) for t, e in self._events if t >= start]

    def kinds(self, start: float = 0.0) -> list[str]:
        return [type(e).__name__ for _, e in self.since(start)]


# -- processes ----------------------------------------------------------------


#: the directory ``ira`` was imported from; children run there and import the same one
IRA_ROOT = Path(ira.__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment of a child process: it imports the same ``ira`` as this one."""
    path = os.environ.get("PYTHONPATH")
    root = str(IRA_ROOT)
    return {
        **os.environ,
        "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}",
        "PYTHONUNBUFFERED": "1",
    }


def ira_argv(*args: str) -> list[str]:
    """The command line of ``ira ARGS...`` run with this interpreter."""
    return [sys.executable, "-m", "ira", *args]


def run_ira(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``ira ARGS...`` to completion; stdout and stderr captured."""
    return subprocess.run(
        ira_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=child_env(),
        cwd=IRA_ROOT,
    )


class Child:
    """A process of the rig (a board, a link end): its output read line by line.

    A context manager: on exit the process is terminated (killed if it lingers).
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=child_env(),
            cwd=IRA_ROOT,
        )
        self.pid = self.proc.pid
        #: every line the process printed so far
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def board(cls, link: str, profile: Path, *, timeout_s: float = 10.0) -> Child:
        """``ira board serve LINK --profile PROFILE``, once it serves."""
        child = cls(ira_argv("board", "serve", link, "--profile", str(profile)))
        child.expect("serving on", timeout_s)
        return child

    @classmethod
    def link_peer(cls, link: str, *, timeout_s: float = 10.0) -> Child:
        """A link end that echoes every message (``hil_tests/linkpeer.py``), once it runs."""
        child = cls([sys.executable, str(HIL_DIR / "linkpeer.py"), link])
        child.expect("ready", timeout_s)
        return child

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, text: str, timeout_s: float) -> str:
        """Wait for a line containing ``text``; fail with the output so far if none comes."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise self._missing(text, timeout_s) from None
            if line is None:
                self._lines.put(None)  # the end of the output stays visible to later waits
                raise self._missing(text, timeout_s)
            self.output.append(line)
            if text in line:
                return line

    def _missing(self, text: str, timeout_s: float) -> AssertionError:
        return AssertionError(
            f"{self.argv} printed no line with {text!r} within {timeout_s:g} s "
            f"(exit status {self.proc.poll()}); output:\n" + "\n".join(self.output)
        )

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        self.proc.kill()
        self.proc.wait()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.wait()

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "BOARD_NAME",
    "LINK_CONFIG",
    "NOISY_LINE",
    "RESTART_SLACK_S",
    "STOCK_TYPES",
    "VARIANTS",
    "Child",
    "Recorder",
    "Rig",
    "RigSettings",
    "Variant",
    "backstop_timeout_s",
    "child_env",
    "ira_argv",
    "run_ira",
    "stock_profile",
    "write_profile",
]
