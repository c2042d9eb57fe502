"""A profile whose role is ``host`` (boards/qemu-x86_64/host.toml): ``ira flash``
installs ``ira host serve`` on the profile's link as the service, ``ira board serve``
refuses the profile, and a role that is neither side is refused with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ira.cli.main import main
from ira.errors import ConfigError
from ira.runtime.profile import parse_profile
from ira.tools.flash import plan
from ira.tools.flash.session import payload

HOST = Path(__file__).resolve().parents[2] / "boards" / "qemu-x86_64" / "host.toml"


def test_the_host_profile_installs_ira_host_serve_on_its_link() -> None:
    pl = payload()
    prof = plan.read_profile(HOST.read_text(), source=str(HOST), known_types=pl.device_types)
    assert prof.role == "host"
    p = plan.install_plan(
        profile=prof,
        version_id=pl.version_id,
        sha256_hex=pl.sha256.hex(),
        python="python3",
        board_root="/",
        start="initd",
    )
    initd = next(f["text"] for f in p["files"] if f["path"] == plan.INITD_PATH)  # type: ignore[attr-defined]
    link = "serial:///dev/ttyS1?baud=115200"
    assert f"/usr/local/bin/ira host serve {link} --tap ira0 --ip 10.0.0.1/24 >" in initd
    assert p["serve"][2:] == ["host", "serve", link, "--tap", "ira0", "--ip", "10.0.0.1/24"]  # type: ignore[index]


def test_board_serve_refuses_a_host_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["board", "serve", "--profile", str(HOST)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "role = 'host'" in err[0] and "ira host serve" in err[0]


def test_a_role_that_is_neither_side_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"^p.toml:2: role: 'both'; expected 'board' or 'host'"):
        parse_profile('board = "x"\nrole = "both"\n', source="p.toml")
    assert parse_profile('board = "x"\n').role == "board"


def test_a_host_profile_names_its_link() -> None:
    with pytest.raises(ConfigError, match="role = 'host' needs the link"):
        plan.read_profile('role = "host"\n', source="h.toml", known_types=("echo",))
