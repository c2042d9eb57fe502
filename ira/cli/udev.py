"""``ira udev``: the host's udev rules for ira boards (``ira.tools.udev``).

``install`` writes /etc/udev/rules.d/70-ira.rules (stable names under
/dev/ira, read/write access for one group, the tag the host service follows),
reloads udev and replays add events for the devices already plugged in;
``uninstall`` removes it; ``show`` prints the rules ``install`` would write;
``check FILE`` checks a rules file with udev's grammar.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ira.errors import ConfigError
from ira.tools import udev


def _usb_id(text: str) -> tuple[int, int]:
    vid, sep, pid = text.partition(":")
    try:
        ids = int(vid, 16), int(pid, 16)
    except ValueError:
        ids = (-1, -1)
    if not sep or not all(0 <= i <= 0xFFFF for i in ids):
        raise argparse.ArgumentTypeError(f"{text!r} is not VID:PID in hex, like 1d6b:0104")
    return ids


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "udev", help="install the udev rules for ira boards", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="udev_command", metavar="ACTION", required=True)
    for name, text in (
        ("install", "write the rules, reload udev"),
        ("show", "print the rules install would write"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--group", default=udev.DEFAULT_GROUP,
            help=f"the group that gets access (default {udev.DEFAULT_GROUP})",
        )  # fmt: skip
        p.add_argument(
            "--boards", type=Path, metavar="FILE",
            help="a board list: [[board]] tables with name, serial (and vid, pid) of "
            "USB-serial adapters that get /dev/ira/NAME",
        )  # fmt: skip
        p.add_argument(
            "--gadget-id", type=_usb_id, action="append", metavar="VID:PID",
            help="USB ids of gadget boards (default 1d6b:0104; repeat for more)",
        )  # fmt: skip
        if name == "install":
            p.add_argument("--rules-dir", type=Path, default=udev.RULES_DIR, help=argparse.SUPPRESS)
            p.add_argument("--no-reload", action="store_true", help="do not reload udev")
            p.add_argument(
                "--service", action="store_true",
                help=f"also install {udev.UNIT_NAME} (ira host serve --watch at boot) and start it",
            )  # fmt: skip
            p.add_argument("--unit-dir", type=Path, default=udev.UNIT_DIR, help=argparse.SUPPRESS)
    p = sub.add_parser("uninstall", help="remove the rules, reload udev")
    p.add_argument("--rules-dir", type=Path, default=udev.RULES_DIR, help=argparse.SUPPRESS)
    p.add_argument("--no-reload", action="store_true", help="do not reload udev")
    p = sub.add_parser("check", help="check a udev rules file")
    p.add_argument("file", type=Path)
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> udev.RulesConfig:
    adapters = udev.load_adapters(args.boards) if args.boards else ()
    ids = tuple(args.gadget_id) if args.gadget_id else udev.DEFAULT_GADGET_IDS
    return udev.RulesConfig(group=args.group, gadget_ids=ids, adapters=adapters)


def run(args: argparse.Namespace) -> int:
    match args.udev_command:
        case "show":
            sys.stdout.write(udev.render_rules(_config(args)))
        case "install":
            path = udev.install(_config(args), args.rules_dir, reload=not args.no_reload)
            print(f"installed {path} (group {args.group}); boards appear under /dev/ira/")
            if not args.no_reload and not udev.udev_running():
                print("udev is not running here: the rules take effect when it starts")
            if args.service:
                ira = shutil.which("ira") or os.path.abspath(sys.argv[0])
                unit = udev.install_host_unit(ira, args.unit_dir, enable=not args.no_reload)
                print(f"installed {unit}: logs with journalctl -u {udev.UNIT_NAME}")
        case "uninstall":
            removed = udev.uninstall(args.rules_dir, reload=not args.no_reload)
            print(f"removed {removed}" if removed else "no ira udev rules were installed")
        case "check":
            try:
                text = args.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
            rules = udev.check_rules(text, str(args.file))
            print(f"{args.file}: {len(rules)} rules, no errors")
    return 0
