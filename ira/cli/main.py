"""Entry point of the ``ira`` command: one module per subcommand.

Each subcommand module offers ``register(subparsers)`` that adds its parser
and sets ``func`` to a ``run(args) -> int``.  Exit codes: 0 success, 1 runtime
failure, 2 usage error.  Every ``IraError`` becomes one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from ira import __version__, native
from ira.errors import ConfigError, IraError

#: subcommand modules, in the order ``ira --help`` lists them
SUBCOMMANDS = (
    "ira.cli.nullmodem",
    "ira.cli.linktest",
    "ira.cli.loopback",
    "ira.cli.board",
    "ira.cli.host",
    "ira.cli.ping",
    "ira.cli.virtio",
    "ira.cli.udev",
    "ira.cli.flash",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ira", description="Transport stack for boards joined by UART and USB links."
    )
    parser.add_argument(
        "--version", action="version", version=f"ira {__version__}, {native.status()}"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v: INFO, -vv: DEBUG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"ira {args.command}: {exc}", file=sys.stderr)
        return 2
    except IraError as exc:
        print(f"ira {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
