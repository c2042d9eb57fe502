"""``ira flash`` against a real shell on a real (pty) serial console through the
null-modem, installing below a temporary root."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from flashrig import board, current, other_payload, write_profile

from ira.errors import ConfigError
from ira.flash.sender import Finished, Sender, Stream, Transferred
from ira.tools.flash import stub
from ira.tools.flash.console import Console, ConsoleError
from ira.tools.flash.session import FlashError, FlashOptions, flash, payload
from ira.tools.nullmodem import NullModem
from ira.wire.flash import Codec, Status


def opts(b_console: str, profile: str, root: Path, **kw: object) -> FlashOptions:
    return FlashOptions(console=b_console, profile=profile, install_root=str(root), **kw)  # type: ignore[arg-type]


def test_flash_at_115200_then_reflash_only_checks(tmp_path: Path) -> None:
    with NullModem() as data_link, board(tmp_path, baud=115200) as b:
        profile = write_profile(
            tmp_path / "p.toml", link=data_link.path_b, types=("echo", "board-info")
        )
        pl = payload()
        seen: list[tuple[int, int]] = []
        report = flash(
            opts(
                b.console,
                profile,
                b.root,
                data_link=data_link.path_a,
                progress=lambda h, s: seen.append((h, s)),
            )
        )
        assert report.transferred
        assert f"installed {pl.version_id}" in report.lines
        assert current(b.root) == f"versions/{pl.version_id}"
        installed = b.root / "opt/ira/current/ira.pyz"
        assert hashlib.sha256(installed.read_bytes()).digest() == pl.sha256
        assert (b.root / "etc/ira/board.toml").read_text() == Path(profile).read_text()
        unit = (b.root / "etc/systemd/system/ira-board.service").read_text()
        wrapper, conf = b.root / "usr/local/bin/ira", b.root / "etc/ira/board.toml"
        assert f"ExecStart={wrapper} board serve --profile {conf}" in unit
        assert seen[-1][0] == seen[-1][1] == report.stream_bytes
        # the board side the install started answers on the data link, from the payload
        assert f"the board answers on {data_link.path_a}:" in report.lines
        assert [row.split()[1] for row in report.devices] == ["echo", "board-info"]
        # the service runs the unpacked copy, so its compiled modules outlive this start
        assert list((b.root / "opt/ira/current/app/ira/cli/__pycache__").glob("main.*.pyc"))

        again = flash(opts(b.console, profile, b.root))
        assert not again.transferred
        assert f"{pl.version_id} is installed and intact: nothing to transfer" in again.lines
        assert again.statistics is None  # no stub was typed


def test_unplugged_half_way_resumes_where_it_stopped(tmp_path: Path) -> None:
    with board(tmp_path, baud=115200) as b:
        profile = write_profile(tmp_path / "p.toml")
        pulled: list[int] = []

        def pull(have: int, size: int) -> None:
            if not pulled and have >= size // 2:
                pulled.append(have)
                b.nullmodem.unplug(3.0)

        report = flash(opts(b.console, profile, b.root, progress=pull))
        assert pulled and report.transferred
        st = report.statistics
        assert st is not None and st.timeouts >= 1
        # the blocks lost while the cable was out were sent again, not the stream
        assert st.data_bytes_sent <= report.stream_bytes + 3 * 8192
        assert current(b.root) == f"versions/{payload().version_id}"


def test_a_session_that_died_half_way_is_resumed_by_the_next(tmp_path: Path) -> None:
    class Abort(Exception):
        pass

    with board(tmp_path, baud=921600) as b:
        profile = write_profile(tmp_path / "p.toml")

        def die(have: int, size: int) -> None:
            if have >= size // 2:
                raise Abort

        with pytest.raises(Abort):
            flash(opts(b.console, profile, b.root, progress=die))
        assert not (b.root / "opt/ira/current").exists()
        (part,) = (b.root / "var/lib/ira/incoming").iterdir()
        kept = part.stat().st_size
        report = flash(opts(b.console, profile, b.root))
        st = report.statistics
        assert st is not None and st.resumed_from >= kept > 0
        assert any(line.startswith(f"resuming at {st.resumed_from} of") for line in report.lines)
        assert st.data_bytes_sent <= report.stream_bytes - st.resumed_from + 8192
        assert current(b.root) == f"versions/{payload().version_id}"
        assert not part.exists()


def test_spoiled_blocks_are_resent(tmp_path: Path) -> None:
    with board(tmp_path, baud=921600, ber=2e-6) as b:
        profile = write_profile(tmp_path / "p.toml")
        report = flash(opts(b.console, profile, b.root, codec=Codec.ZLIB))
        st = report.statistics
        assert st is not None and st.blocks_resent + st.timeouts > 0
        installed = b.root / "opt/ira/current/ira.pyz"
        assert hashlib.sha256(installed.read_bytes()).digest() == payload().sha256


def test_a_payload_whose_sha_differs_is_never_installed(tmp_path: Path) -> None:
    with board(tmp_path) as b:
        pl = payload()
        lying = Stream(
            pl.compressed(Codec.ZLIB), hashlib.sha256(b"x").digest(), len(pl.pyz), Codec.ZLIB
        )
        console = Console(b.console)
        try:
            console.wait_for_shell(10)
            boot, *lines = stub.command_lines("python3", str(b.root))
            console.type_line(boot)
            assert console.expect(re.compile(stub.READY.encode()), 10)
            for line in lines:
                console.type_line(line)
            sender = Sender(lying, now=time.monotonic())
            result = None
            deadline = time.monotonic() + 60
            while result is None and time.monotonic() < deadline:
                console.write(sender.data_to_send())
                for ev in sender.receive_data(console.read(), now=time.monotonic()):
                    if isinstance(ev, Transferred):
                        plan = {"action": "install", "version": "v", "sha256": lying.sha256.hex()}
                        sender.install(json.dumps(plan), now=time.monotonic())
                    if isinstance(ev, Finished):
                        result = ev
            assert result is not None and result.status is Status.BAD_SHA
            sender.quit()
            console.write(sender.data_to_send())
            console.wait_for_shell(15)
        finally:
            console.close()
        assert not (b.root / "opt/ira/current").exists()
        assert list((b.root / "opt/ira/versions").iterdir()) == []
        assert list((b.root / "var/lib/ira/incoming").iterdir()) == []  # deleted, not kept


def test_rollback_switches_to_the_previous_version(tmp_path: Path) -> None:
    with board(tmp_path) as b:
        profile = write_profile(tmp_path / "p.toml")
        first, second = payload(), other_payload()
        with pytest.raises(FlashError, match="no previous version"):
            flash(opts(b.console, profile, tmp_path / "empty", rollback=True))
        flash(opts(b.console, profile, b.root))
        flash(opts(b.console, profile, b.root), the_payload=second)
        assert current(b.root) == f"versions/{second.version_id}"
        assert os.readlink(b.root / "opt/ira/previous") == f"versions/{first.version_id}"
        report = flash(opts(b.console, profile, b.root, rollback=True))
        assert f"rolled back to {first.version_id}" in report.lines
        assert current(b.root) == f"versions/{first.version_id}"
        assert os.readlink(b.root / "opt/ira/previous") == f"versions/{second.version_id}"
        again = flash(opts(b.console, profile, b.root))
        assert not again.transferred


def test_login_with_the_right_password_and_refusal_of_a_wrong_one(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml")
    with board(tmp_path, login=True) as b:
        with pytest.raises(ConsoleError, match="wrong password for root"):
            flash(
                opts(b.console, profile, b.root, login="root", password="nope", shell_timeout_s=8)
            )
        assert not b.root.exists()
    with (
        board(tmp_path, login=True) as b,
        pytest.raises(ConsoleError, match="asks for a login: give --login USER"),
    ):
        flash(opts(b.console, profile, b.root, shell_timeout_s=8))
    with board(tmp_path, login=True) as b:
        report = flash(opts(b.console, profile, b.root, login="root", password="s3cret"))
        assert report.transferred


def test_no_shell_on_the_console(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml")
    with NullModem() as nm:
        silent = subprocess.Popen(["sh", "-c", f"exec cat <{nm.path_b} >/dev/null"])
        try:
            with pytest.raises(ConsoleError, match=r"no shell answered on .* within 2 s"):
                flash(opts(nm.path_a, profile, tmp_path / "root", shell_timeout_s=2))
        finally:
            silent.kill()
            silent.wait()
    assert not (tmp_path / "root").exists()


def test_no_python_on_the_board(tmp_path: Path) -> None:
    with board(tmp_path) as b:
        profile = write_profile(tmp_path / "p.toml")
        with pytest.raises(FlashError, match="no /nonexistent/python3 on the board"):
            flash(opts(b.console, profile, b.root, python="/nonexistent/python3"))
        assert not b.root.exists()


@pytest.mark.root
def test_no_space_on_the_board(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        with board(tmp_path) as b:
            profile = write_profile(tmp_path / "p.toml")
            with pytest.raises(FlashError, match="bytes free where ira goes; it needs"):
                flash(opts(b.console, profile, small / "root"))
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_device_type_the_payload_lacks_is_refused_before_the_console_opens(
    tmp_path: Path,
) -> None:
    profile = write_profile(tmp_path / "p.toml", types=("echo", "warp-drive"))
    with pytest.raises(ConfigError, match="device type 'warp-drive' is not in the payload"):
        flash(opts("/dev/nonexistent-console", profile, tmp_path / "root"))
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    "left_behind",
    [
        pytest.param(b'echo "a string cut short\n', id="open-quote"),
        pytest.param(b"\x13", id="xoff"),
        pytest.param(b"cat\n", id="foreground-command"),
    ],
)
def test_a_console_left_stuck_by_a_session_cut_short_answers(
    tmp_path: Path, left_behind: bytes
) -> None:
    """What a flash cut short may leave on the console: the shell waiting for the rest of
    a string, output stopped by an XOFF, a command reading the console.  The shell probe
    gets past each of them (XON and ^C before each probe after the first)."""
    with board(tmp_path) as b:
        console = Console(b.console)
        try:
            console.wait_for_shell(10)
            console.write(left_behind)
            time.sleep(0.3)  # the shell takes it before the next probe
            console.read()
            # plain lines get no answer from a console in this state
            console.type_line("echo __IRA_SH_$((40+2))__")
            assert console.expect(re.compile(rb"__IRA_SH_42__"), 1.0) is None
            console.wait_for_shell(10)
            assert console.run("echo $((6*7))") == (0, "42")
        finally:
            console.close()
