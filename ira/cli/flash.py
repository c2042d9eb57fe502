"""``ira flash CONSOLE --profile FILE``: put ira on a board through its serial console.

Waits for a shell on CONSOLE (logging in with ``--login`` when the console asks),
checks the board (Python >= 3.11, architecture, free space), types a small
receiver stub into the shell and sends the payload (ira and its pure-Python
dependencies as one zipapp, compressed) in CRC-checked, acknowledged blocks; an
interrupted transfer resumes where it stopped when ira flash runs again.  The
board checks the payload's SHA-256, installs it beside the previous version
(``/opt/ira/versions/``, one symlink switched), writes the profile to
``/etc/ira/board.toml`` and a service that runs ``ira board serve`` at boot
(a systemd unit, else an init script), and starts it.  With ``--data-link``
the host then lists the board's devices over that link.  Flashing the version
that is installed only checks it.

``--rollback`` switches back to the previous version.  ``--dry-run`` prints
the plan and touches nothing.  ``--rootfs DIR`` applies the plan to a mounted
root filesystem (an SD card) instead of a console.  ``--install-root DIR``
installs below DIR of the board instead of ``/`` and runs the board side as a
plain process instead of a service: for tests on a machine that is not a board.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from ira.errors import ConfigError
from ira.wire.flash import Codec


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "flash",
        help="put ira on a board through its serial console",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("console", metavar="CONSOLE", nargs="?", help="the board's console port")
    p.add_argument("--profile", metavar="FILE", required=True, help="board profile (TOML)")
    p.add_argument("--baud", type=int, default=115200, metavar="N", help="console line rate")
    p.add_argument("--login", metavar="USER", help="log in as USER when the console asks")
    p.add_argument("--password-file", metavar="FILE", help="the password (else asked for)")
    p.add_argument("--python", default="python3", metavar="PATH", help="the board's Python")
    p.add_argument("--data-link", metavar="LINK", help="the host's end of the board's data link")
    p.add_argument("--rollback", action="store_true", help="switch back to the previous version")
    p.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    p.add_argument("--rootfs", metavar="DIR", help="apply the plan to a mounted root filesystem")
    p.add_argument("--install-root", metavar="DIR", help="install below DIR on the board (tests)")
    p.add_argument(
        "--shell-timeout", type=float, default=15.0, metavar="S", help="wait S s for a shell"
    )
    p.add_argument(
        "--codec", choices=["lzma", "zlib"], help="compression (default: lzma if the board has it)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ira.tools.flash.console import check_baud
    from ira.tools.flash.session import FlashOptions, flash

    check_baud(args.baud)
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise ConfigError(f"--password-file {args.password_file}: cannot read a line") from exc
    elif args.login and not args.dry_run:
        password = getpass.getpass(f"password for {args.login} on the board: ")
    bar = None
    progress = None
    if not args.no_progress and not args.dry_run:
        from tqdm import tqdm

        def progress(have: int, size: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=size, initial=have, unit="B", unit_scale=True, desc="flash")
            bar.update(have - bar.n)

    opts = FlashOptions(
        console=args.console,
        profile=args.profile,
        baud=args.baud,
        login=args.login,
        password=password,
        python=args.python,
        install_root=args.install_root,
        rootfs=args.rootfs,
        data_link=args.data_link,
        dry_run=args.dry_run,
        rollback=args.rollback,
        shell_timeout_s=args.shell_timeout,
        codec=Codec[args.codec.upper()] if args.codec else None,
        progress=progress,
    )
    try:
        report = flash(opts)
    finally:
        if bar is not None:
            bar.close()
    for line in report.lines:
        print(line)
    sys.stdout.flush()
    return 0
