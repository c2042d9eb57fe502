"""boards/: every profile parses, plans and dry-runs; --rootfs applies the plan to a root
filesystem; the board checks say one line per problem."""

from __future__ import annotations

import ast
import hashlib
import multiprocessing
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from flashrig import BOARD_ENV_DROPS, other_payload

from ira.cli.main import main
from ira.tools.flash import plan, stub
from ira.tools.flash.session import FlashOptions, flash, payload

BOARDS = Path(__file__).resolve().parents[2] / "boards"
NAMES = ["qemu-x86_64", "raspberrypi-zero2w", "beaglebone-black", "generic-usb-serial"]


@pytest.mark.parametrize("name", NAMES)
def test_each_board_has_a_profile_and_a_readme(name: str) -> None:
    readme = (BOARDS / name / "README.md").read_text()
    assert "## Wiring" in readme and "## Console" in readme
    prof = plan.read_profile(
        (BOARDS / name / "profile.toml").read_text(),
        source=name,
        known_types=payload().device_types,
    )
    assert prof.link and prof.device_types


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_prints_the_plan_and_touches_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = str(BOARDS / name / "profile.toml")
    assert main(["flash", "/dev/nonexistent-console", "--profile", profile, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"install {payload().version_id}" in out
    assert "write /etc/ira/board.toml" in out
    assert f"switch /opt/ira/current -> versions/{payload().version_id}" in out
    assert main(["flash", "--rootfs", str(tmp_path), "--profile", profile, "--dry-run"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_usb_gadget_boards_load_libcomposite_first() -> None:
    prof = plan.read_profile(
        (BOARDS / "raspberrypi-zero2w/profile.toml").read_text(),
        source="rpi",
        known_types=payload().device_types,
    )
    p = plan.install_plan(
        profile=prof,
        version_id="v",
        sha256_hex="00",
        python="python3",
        board_root="/",
        start="systemd",
    )
    unit = next(f for f in p["files"] if f["path"] == plan.UNIT_PATH)  # type: ignore[attr-defined]
    assert "ExecStartPre=-/sbin/modprobe libcomposite" in unit["text"]
    assert (
        "ExecStart=/usr/local/bin/ira board serve --profile /etc/ira/board.toml" in (unit["text"])
    )


def test_rootfs_install_then_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = str(BOARDS / "generic-usb-serial/profile.toml")
    assert main(["flash", "--rootfs", str(tmp_path), "--profile", profile]) == 0
    pl = payload()
    vdir = tmp_path / "opt/ira/versions" / pl.version_id
    assert os.readlink(tmp_path / "opt/ira/current") == f"versions/{pl.version_id}"
    assert hashlib.sha256((vdir / "ira.pyz").read_bytes()).digest() == pl.sha256
    wrapper = (tmp_path / "usr/local/bin/ira").read_text()
    assert wrapper == (
        "#!/bin/sh\n"
        '[ -f /opt/ira/current/app/__main__.py ] && exec python3 /opt/ira/current/app "$@"\n'
        'exec python3 /opt/ira/current/ira.pyz "$@"\n'
    )
    # the zipapp unpacked beside it, file for file, and runnable as the board runs it
    with zipfile.ZipFile(vdir / "ira.pyz") as zf:
        for name in zf.namelist():
            assert (vdir / "app" / name).read_bytes() == zf.read(name), name
    env = {k: v for k, v in os.environ.items() if k not in BOARD_ENV_DROPS}
    ran = subprocess.run(
        [sys.executable, str(vdir / "app"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert pl.version in ran.stdout
    assert list((vdir / "app/ira/cli/__pycache__").glob("main.*.pyc"))  # kept for the next start
    assert os.access(tmp_path / "etc/init.d/S90ira-board", os.X_OK)
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants/ira-board.service"
    assert os.readlink(wants) == plan.UNIT_PATH
    assert list((tmp_path / "var/lib/ira/incoming").iterdir()) == []
    assert main(["flash", "--rootfs", str(tmp_path), "--profile", profile, "--rollback"]) == 1
    assert "no previous version to roll back to" in capsys.readouterr().err


def test_bad_local_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[device]]\ntype = "warp-drive"\n')
    assert main(["flash", "/dev/x", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "device type 'warp-drive' is not in the payload" in err
    assert main(["flash", "--profile", str(bad)]) == 2
    assert "give the board's CONSOLE" in capsys.readouterr().err
    assert main(["flash", "/dev/x", "--profile", str(tmp_path / "none.toml")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    assert main(["flash", "/dev/x", "--baud", "7", "--profile", str(bad)]) == 2


def test_board_checks_one_line_each() -> None:
    probe = plan.Probe((3, 9, 2), "armv7l", 100_000, False, True, None, None)
    problems = plan.check_board(probe, stream_bytes=300_000, payload_bytes=1_700_000)
    assert problems == [
        "the board's Python is 3.9.2; ira needs >= 3.11: upgrade it",
        "the board has 100000 bytes free where ira goes; it needs 4748576: make room",
    ]
    ok = plan.Probe((3, 11, 2), "aarch64", 10**9, True, True, None, None)
    assert plan.check_board(ok, stream_bytes=300_000, payload_bytes=1_700_000) == []


def test_probe_answers() -> None:
    assert plan.parse_probe(127, "sh: 1: python3: not found", python="python3") == (
        "no python3 on the board: install Python >= 3.11 there (or give --python PATH)"
    )
    out = (
        '__IRA_PROBE__{"python": [3, 11, 2], "machine": "aarch64", "free": 5, '
        '"systemd": true, "lzma": false, "current": null, "previous": null}'
    )
    assert plan.parse_probe(0, out, python="python3") == plan.Probe(
        (3, 11, 2), "aarch64", 5, True, False, None, None
    )
    assert isinstance(plan.parse_probe(0, "__IRA_PROBE__{", python="python3"), str)


def test_the_stub_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    source = stub.source()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("ira"), node.module
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("ira") for a in node.names)
    # run in isolation (no site, no ira on the path): everything loads, then the stub
    # refuses a stdin that is not a terminal
    script = tmp_path / "stub.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("termios.error")
    lines = stub.command_lines("python3", "/")
    assert lines[-1] == "" and max(len(line) for line in lines) < 400


def _install_other(root: str, profile: str) -> None:
    flash(FlashOptions(console=None, profile=profile, rootfs=root), the_payload=other_payload())


def test_an_install_killed_at_any_moment_leaves_a_whole_version_current(tmp_path: Path) -> None:
    """The power-cut property, with a killed process: ``current`` always names a whole
    version (the old one until the switch, the new one after it)."""
    profile = str(BOARDS / "generic-usb-serial/profile.toml")
    first, second = payload(), other_payload()
    whole = {first.version_id: first.sha256, second.version_id: second.sha256}
    ctx = multiprocessing.get_context("fork")
    seen = set()
    for i, delay in enumerate([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.2, 4.0]):
        root = tmp_path / f"r{i}"
        root.mkdir()
        assert main(["flash", "--rootfs", str(root), "--profile", profile]) == 0
        child = ctx.Process(target=_install_other, args=(str(root), profile))
        child.start()
        time.sleep(delay)
        child.kill()
        child.join()
        version = os.path.basename(os.readlink(root / "opt/ira/current"))
        pyz = (root / "opt/ira/versions" / version / "ira.pyz").read_bytes()
        assert hashlib.sha256(pyz).digest() == whole[version]
        seen.add(version)
    # the kills fell before the switch and after it (an install takes ~0.8 s here)
    assert seen == set(whole)
    assert os.readlink(root / "opt/ira/previous") == f"versions/{first.version_id}"
