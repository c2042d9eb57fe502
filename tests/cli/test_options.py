"""Local input is checked before any port is opened: one line naming the fix, exit 2.

Every link given here does not exist: a command that opened its port before
checking its options would fail with another message (and exit 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ira.cli.main import main

NOWHERE = "/nonexistent/ttyIRA0"


def _profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "board.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


CASES = [
    (["linktest", "--nullmodem", "--size", "99999999999999999999"], "--size"),
    (["linktest", "--nullmodem", "--size", "0"], "--size 0: give 1 to"),
    (["linktest", "--nullmodem", "--size", "9-2"], "MIN <= MAX"),
    (["linktest", "--nullmodem", "--bytes", "-5"], "--bytes -5: give 1 to"),
    (["linktest", "--nullmodem", "--bytes", "infM"], "--bytes infM: not a size"),
    (["linktest", "--nullmodem", "--ber", "2"], "--ber 2.0: a probability"),
    (["linktest", "--nullmodem", "--baud", "-9600"], "--baud -9600"),
    (["linktest", "--nullmodem", "--timeout", "nan"], "--timeout nan"),
    (["host", "serve", NOWHERE, "--tap", "ira-t0", "--ip", "10.0.0.2/33"], "--ip 10.0.0.2/33"),
    (["host", "serve", NOWHERE, "--tap", "ira-t0", "--ip", "10.0.0.300/24"], "--ip 10.0.0.300"),
    (["board", "serve", NOWHERE, "--tap", "ira-t0", "--mtu", "0"], "--mtu 0 is out of range"),
    (["board", "serve", NOWHERE, "--tap", "ira-t0", "--ip", "fe80::1/129"], "--ip fe80::1/129"),
    (["nullmodem", "--unplug-for", "3", "--unplug-every", "2"], "never be plugged back in"),
    (["ping", NOWHERE, "-s", "70000"], "-s 70000: give 0 to 65536"),
    (["ping", NOWHERE, "-W", "inf"], "-W inf"),
    (["ping", NOWHERE, "-i", "nan"], "-i nan"),
    (["loopback", "--mtu", "0"], "--mtu 0"),
    (["loopback", "--tcp-bytes", "0"], "--tcp-bytes 0"),
    (["loopback", "-c", "0"], "-c 0"),
    (["host", "list", NOWHERE, "--timeout", "0"], "--timeout 0.0"),
    (["virtio", "rng", NOWHERE, "--timeout", "nan"], "--timeout nan"),
]


@pytest.mark.parametrize(("argv", "hint"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_option_is_one_line_and_exit_2(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert hint in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("board = '" + "x" * 5000 + "'\n", "board: 5000 bytes long; at most 256"),
        (
            "[[device]]\ntype = 'virtio-net'\noptions = { mtu = 0 }\n",
            "device[0].options.mtu: 0 is out of range",
        ),
        ("[[device]]\ntype = 'virtio-net'\noptions = { mac = 'zz' }\n", "bad MAC 'zz'"),
        (
            "[[device]]\ntype = 'virtio-net'\noptions = { offloads = 'yes' }\n",
            "options.offloads: must be true or false",
        ),
    ],
    ids=["board name of 5000 characters", "mtu 0", "bad mac", "offloads not a boolean"],
)
def test_a_profile_the_bus_or_a_device_would_refuse_is_refused_at_start(
    tmp_path: Path, text: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["board", "serve", NOWHERE, "--profile", _profile(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and hint in err, err
