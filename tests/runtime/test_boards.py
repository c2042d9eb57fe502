"""Every board under boards/ has a profile that parses and checks, and a README."""

from __future__ import annotations

from pathlib import Path

import pytest

from ira.runtime.profile import load_profile

BOARDS = Path(__file__).resolve().parents[2] / "boards"
DIRECTORIES = sorted(p for p in BOARDS.iterdir() if p.is_dir())


def test_there_are_boards() -> None:
    assert {"generic-usb-serial", "qemu-x86_64"} <= {p.name for p in DIRECTORIES}


@pytest.mark.parametrize("board", DIRECTORIES, ids=lambda p: p.name)
def test_a_boards_profile_parses_and_checks(board: Path) -> None:
    profile = load_profile(board / "profile.toml")
    assert profile.board == board.name
    assert profile.link.link_spec()  # a link to open, as written
    assert profile.devices, "a board with no devices"
    assert (board / "README.md").is_file()
