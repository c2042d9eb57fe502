"""``ira flash``'s steps, with I/O: profile, console, probe, stub, transfer, install, check.

``flash(options)`` runs them in order and returns a ``FlashReport``.  Local
input (the profile, the options) is checked before the console is opened;
the board is checked (shell, login, Python, free space) before anything is
written to it.  Every failure is an ``IraError`` with one line.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ira.errors import ConfigError, IraError
from ira.flash.sender import (
    Finished,
    Progressed,
    Sender,
    SenderConfig,
    SenderStatistics,
    Stalled,
    Stream,
    Transferred,
    TransferStarted,
)
from ira.tools.flash import installer, plan, stub
from ira.tools.flash.console import Console, ConsoleError
from ira.tools.flash.payload import Payload, build_payload
from ira.wire.flash import Codec, Status

log = logging.getLogger(__name__)


class FlashError(IraError):
    """Flashing stopped; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FlashOptions:
    console: str | None
    profile: str
    baud: int = 115200
    login: str | None = None
    password: str | None = None
    python: str = "python3"
    #: install below this directory of the board instead of / (tests; documented as such)
    install_root: str | None = None
    rootfs: str | None = None
    data_link: str | None = None
    dry_run: bool = False
    rollback: bool = False
    shell_timeout_s: float = 15.0
    codec: Codec | None = None
    #: how long the board may take to answer on its data link after the service started
    #: (a zipapp's imports are compiled at every start: tens of seconds on a slow board)
    data_link_timeout_s: float = 90.0
    block_bytes: int = 1024
    window_bytes: int = 8192
    #: called with (have, size) as the transfer moves
    progress: Callable[[int, int], None] | None = None


@dataclass(slots=True)
class FlashReport:
    lines: list[str] = field(default_factory=list)
    transferred: bool = False
    stream_bytes: int = 0
    payload_bytes: int = 0
    transfer_s: float = 0.0
    statistics: SenderStatistics | None = None
    devices: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        log.info("%s", line)


_PAYLOAD: list[Payload] = []


def payload() -> Payload:
    """This ira's payload (built once per process)."""
    if not _PAYLOAD:
        _PAYLOAD.append(build_payload())
    return _PAYLOAD[0]


def _profile(opts: FlashOptions, pl: Payload) -> plan.BoardProfile:
    try:
        text = Path(opts.profile).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read profile {opts.profile}: {exc.strerror}") from exc
    return plan.read_profile(text, source=opts.profile, known_types=pl.device_types)


def flash(opts: FlashOptions, *, the_payload: Payload | None = None) -> FlashReport:
    """Flash as ``opts`` say; ``the_payload``: what to put on the board (default: this
    ira's own payload)."""
    report = FlashReport()
    if opts.rootfs and opts.console:
        raise ConfigError("give a CONSOLE or --rootfs DIR, not both")
    if not opts.rootfs and not opts.console:
        raise ConfigError("give the board's CONSOLE (a serial port) or --rootfs DIR")
    if opts.rootfs and not Path(opts.rootfs).is_dir():
        raise ConfigError(f"--rootfs {opts.rootfs}: not a directory")
    pl = the_payload or payload()
    profile = _profile(opts, pl)
    board_root = opts.install_root or "/"
    start = "process" if opts.install_root else "systemd-or-initd"
    if opts.rootfs:
        start = "none"
    action = "rollback" if opts.rollback else "install"
    the_plan = plan.install_plan(
        profile=profile,
        version_id=pl.version_id,
        sha256_hex=pl.sha256.hex(),
        python=opts.python,
        board_root=board_root,
        start=start,
        action=action,
    )
    target = opts.rootfs or f"{opts.console} (root {board_root})"
    if opts.dry_run:
        report.lines += plan.describe_plan(the_plan, target=target)
        return report
    if opts.rootfs:
        return _rootfs(opts.rootfs, the_plan, pl, report)
    assert opts.console is not None
    console = Console(opts.console, baud=opts.baud)
    try:
        return _console_flash(console, opts, profile, pl, the_plan, report)
    finally:
        console.close()


def _rootfs(
    root: str, the_plan: dict[str, object], pl: Payload, report: FlashReport
) -> FlashReport:
    if the_plan["action"] == "install":
        stream = installer.incoming(root, pl.sha256.hex())
        Path(stream).parent.mkdir(parents=True, exist_ok=True)
        Path(stream).write_bytes(pl.compressed(Codec.ZLIB))
        status, message = installer.apply(root, the_plan, stream, int(Codec.ZLIB))
    else:
        status, message = installer.apply(root, the_plan, None, 0)
    if status != installer.OK:
        raise FlashError(message)
    report.say(f"{root}: {message}")
    return report


def _console_flash(
    console: Console,
    opts: FlashOptions,
    profile: plan.BoardProfile,
    pl: Payload,
    the_plan: dict[str, object],
    report: FlashReport,
) -> FlashReport:
    console.wait_for_shell(opts.shell_timeout_s, user=opts.login, password=opts.password)
    root = opts.install_root or "/"
    rc, out = console.run(plan.probe_command(opts.python, root))
    probe = plan.parse_probe(rc, out, python=opts.python)
    if isinstance(probe, str):
        raise FlashError(probe)
    if the_plan["start"] == "systemd-or-initd":
        the_plan["start"] = "systemd" if probe.systemd else "initd"
    codec = opts.codec or (Codec.LZMA if probe.lzma else Codec.ZLIB)
    report.say(
        f"board: Python {'.'.join(map(str, probe.python))} on {probe.machine}, "
        f"{probe.free // 1024} KiB free, {the_plan['start']}"
    )
    if opts.rollback:
        if probe.previous is None:
            raise FlashError("the board has no previous version to roll back to")
        _run_stub(console, opts, None, the_plan, report)
    elif probe.current == pl.sha256.hex():
        report.say(f"{pl.version_id} is installed and intact: nothing to transfer")
    else:
        data = pl.compressed(codec)
        problems = plan.check_board(probe, stream_bytes=len(data), payload_bytes=len(pl.pyz))
        if problems:
            raise FlashError(problems[0])
        stream = Stream(data, pl.sha256, len(pl.pyz), codec)
        report.stream_bytes, report.payload_bytes = len(data), len(pl.pyz)
        _run_stub(console, opts, stream, the_plan, report)
    console.wait_for_shell(opts.shell_timeout_s)
    if opts.data_link:
        _check_data_link(opts.data_link, report, opts.data_link_timeout_s)
    return report


def _run_stub(
    console: Console,
    opts: FlashOptions,
    stream: Stream | None,
    the_plan: dict[str, object],
    report: FlashReport,
) -> None:
    root = opts.install_root or "/"
    rto = max(1.0, 3 * opts.window_bytes / (opts.baud / 10))
    config = SenderConfig(block_bytes=opts.block_bytes, window_bytes=opts.window_bytes, rto_s=rto)
    sender = Sender(stream, now=time.monotonic(), config=config)
    console.read()
    boot, *lines = stub.command_lines(opts.python, root)
    console.type_line(boot)
    if console.expect(re.compile(stub.READY.encode()), opts.shell_timeout_s) is None:
        raise FlashError(f"{opts.python} on the board did not start the receiver stub")
    for line in lines:
        console.type_line(line)
    started = time.monotonic()
    plan_text = json.dumps(the_plan)
    try:
        while True:
            out = sender.data_to_send()
            if out:
                console.write(out)
            now = time.monotonic()
            events = sender.receive_data(console.read(), now=now)
            deadline = sender.next_deadline()
            if deadline is not None and now >= deadline:
                events += sender.handle_timeout(now=now)
            for ev in events:
                match ev:
                    case TransferStarted(have, size) if have:
                        report.say(f"resuming at {have} of {size} bytes")
                    case Progressed(have, size) if opts.progress:
                        opts.progress(have, size)
                    case Transferred():
                        report.transfer_s = time.monotonic() - started
                        report.transferred = stream is not None
                        sender.install(plan_text, now=now)
                    case Finished(status, message):
                        sender.quit()
                        console.write(sender.data_to_send())
                        if status is not Status.OK:
                            raise FlashError(f"the board refused: {message}")
                        report.say(message)
                        return
                    case Stalled(phase, have):
                        raise FlashError(
                            f"the board stopped answering ({phase.value}, {have} bytes stored): "
                            "check the console and run ira flash again to resume"
                        )
    finally:
        report.statistics = sender.statistics()


def _check_data_link(link: str, report: FlashReport, timeout_s: float) -> None:
    from ira.runtime import HostClient

    try:
        with HostClient(link) as client:
            devices = client.list_devices(timeout_s=timeout_s)
    except IraError as exc:
        raise FlashError(f"the board does not answer on its data link {link}: {exc}") from exc
    report.say(f"the board answers on {link}:")
    for d in devices:
        row = f"{d.device_id:>4}  {d.type:<14} {d.version:>3}  " + " ".join(
            f"{k}={v}" for k, v in d.attrs
        )
        report.devices.append(row.rstrip())
        report.say(row.rstrip())


__all__ = ["ConsoleError", "FlashError", "FlashOptions", "FlashReport", "flash", "payload"]
