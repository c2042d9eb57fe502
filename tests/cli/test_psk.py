"""``--psk-file`` and the profile's ``[link] psk_file`` over the null-modem."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ira.cli.main import main
from ira.tools.nullmodem import NullModem

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


def _board(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "ira", "board", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_keyed_board_answers_a_keyed_host_and_refuses_one_without_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "link.psk").write_text("c2l4dGVlbiBieXRlcyBhdCBsZWFzdA==\n", encoding="ascii")
    other = tmp_path / "other.psk"
    other.write_text("another key of enough bytes\n", encoding="ascii")
    profile = tmp_path / "board.toml"
    # a relative psk_file is found next to the profile
    profile.write_text("[link]\npsk_file = 'link.psk'\n[[device]]\ntype = 'echo'\n")
    with NullModem() as nm:
        board = _board(nm.path_a, "--profile", str(profile))
        try:
            assert board.stdout is not None and board.stderr is not None
            assert "serving on" in board.stdout.readline()
            key = str(tmp_path / "link.psk")
            assert main(["ping", nm.path_b, "--psk-file", key, "-c", "3", "-i", "0"]) == 0
            assert "3 calls, 3 replies, 0% lost" in capsys.readouterr().out
            assert main(["host", "list", nm.path_b, "--timeout", "1"]) == 1
            assert "no board answered" in capsys.readouterr().err
            assert (
                main(["host", "list", nm.path_b, "--psk-file", str(other), "--timeout", "1"]) == 1
            )
            assert main(["host", "list", nm.path_b, "--psk-file", key, "--json"]) == 0
            assert '"type": "echo"' in capsys.readouterr().out
            board.send_signal(signal.SIGTERM)
            assert board.wait(5) == 0
            log = board.stderr.read()
        finally:
            board.kill()
            board.wait()
    # the first refusal at once; the others (two hosts' HELLOs for a second each,
    # well within REPORT_INTERVAL_S) not one line per frame
    warnings = [line for line in log.splitlines() if "pre-shared key" in line]
    assert len(warnings) == 1, log
    assert "refused 1 frames (pre-shared key): the peer offers no pre-shared key" in warnings[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the pre-shared key"), (b"short\n", "at least 16 bytes")],
)
def test_an_unusable_key_file_is_one_line_before_any_port_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    key = tmp_path / "link.psk"
    if content is not None:
        key.write_bytes(content)
    port = str(tmp_path / "no-such-port")  # opening it would be another error
    for argv in (
        ["board", "serve", port, "--psk-file", str(key)],
        ["host", "serve", port, "--psk-file", str(key)],
        ["host", "list", port, "--psk-file", str(key)],
        ["ping", port, "--psk-file", str(key)],
        ["linktest", port, port, "--psk-file", str(key)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)


def test_a_profile_psk_file_must_be_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "board.toml"
    profile.write_text("[link]\npsk_file = 5\n")
    assert main(["board", "serve", "/dev/null", "--profile", str(profile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "psk_file" in err, err
