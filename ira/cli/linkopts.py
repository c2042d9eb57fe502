"""``--psk-file``: the option every command that opens a link shares (ira.runtime.psk)."""

from __future__ import annotations

import argparse

from ira.runtime.psk import link_config, read_psk

__all__ = ["add_psk_argument", "link_config", "read_psk"]


def add_psk_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--psk-file",
        metavar="FILE",
        help="pre-shared key: authenticate every frame (both ends need the same FILE)",
    )
