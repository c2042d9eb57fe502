"""The host's udev rules: what they grant, the grammar check, udev's own verdict."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ira.errors import ConfigError
from ira.tools.udev import (
    RULES_NAME,
    Adapter,
    RulePair,
    RulesConfig,
    check_rules,
    install,
    install_host_unit,
    load_adapters,
    render_host_unit,
    render_rules,
    uninstall,
)

BENCH = RulesConfig(
    group="dialout",
    gadget_ids=((0x1D6B, 0x0104), (0x1209, 0x0001)),
    adapters=(Adapter("bench-a", "A10K3", 0x0403, 0x6001), Adapter("bench-b", "FT9Q")),
)


def _assignments(rule: list[RulePair]) -> dict[str, str]:
    return {p.key: p.value for p in rule if p.op in ("=", "+=")}


def test_every_board_gets_a_stable_name_group_access_and_the_tag() -> None:
    rules = check_rules(render_rules(BENCH), "70-ira.rules")
    granting = [r for r in rules if "MODE" in _assignments(r)]
    # two gadget ids x (usb device, acm tty) + two adapters
    assert len(granting) == 6
    for rule in granting:
        grants = _assignments(rule)
        assert grants["MODE"] == "0660"  # never world-writable
        assert grants["GROUP"] == "dialout"
        assert grants["TAG"] == "ira"
        assert grants["SYMLINK"].startswith("ira/")
    symlinks = sorted(_assignments(r)["SYMLINK"] for r in granting)
    assert "ira/bench-a" in symlinks and "ira/bench-b" in symlinks
    assert symlinks.count("ira/$attr{serial}") == 2
    text = render_rules(BENCH)
    assert 'ATTRS{serial}=="A10K3", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001"' in text
    assert 'ATTR{idVendor}=="1209", ATTR{idProduct}=="0001", ATTR{manufacturer}=="ira"' in text


@pytest.mark.parametrize(
    ("text", "line", "fix"),
    [
        ('SUBSYSTEM=="tty", MODEX="0660"\n', 1, "unknown key 'MODEX'"),
        ('# c\nSUBSYSTEM=="tty" GROUP="x"\n', 2, "separated by commas"),
        ("SUBSYSTEM==tty\n", 1, "double quotes"),
        ('SUBSYSTEM=="tty", MODE="0666"\n', 1, "world-writable"),
        ('SUBSYSTEM=="tty", MODE="rw"\n', 1, "octal"),
        ('ACTION=="remove", GOTO="nowhere"\n', 1, "no LABEL"),
        ('\nSUBSYSTEM=="tty", \\\nGROUP="x", \\\n', 2, "ends inside a continued line"),
        ('ATTRS=="x"\n', 1, "needs an attribute"),
        ('OWNER=="root"\n', 1, "can only be assigned"),
        ('KERNELS="x"\n', 1, "can only be compared"),
    ],
)
def test_a_rule_udev_would_refuse_is_one_line_naming_the_line(
    text: str, line: int, fix: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_rules(text, "extra.rules")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"extra.rules:{line}:")
    assert fix in message


def test_continued_lines_are_one_rule() -> None:
    rules = check_rules('SUBSYSTEM=="tty", \\\n  GROUP="x"\n# done\n', "f")
    assert [[p.key for p in r] for r in rules] == [["SUBSYSTEM", "GROUP"]]


def _board_list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "boards.toml"
    path.write_text(text)
    return path


def test_a_board_list_names_adapters(tmp_path: Path) -> None:
    path = _board_list(
        tmp_path,
        '[[board]]\nname = "bench-a"\nserial = "A10K3"\nvid = "0403"\npid = 24577\n'
        '[[board]]\nname = "bench-b"\nserial = "FT9Q"\n',
    )
    assert load_adapters(path) == (
        Adapter("bench-a", "A10K3", 0x0403, 0x6001),
        Adapter("bench-b", "FT9Q"),
    )


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ('[[board]]\nname = "a b"\nserial = "X"\n', "name must be"),
        ('[[board]]\nname = "a"\nserial = "X"\n[[board]]\nname = "a"\nserial = "Y"\n', "twice"),
        ('[[board]]\nname = "a"\nserial = "X"\nbaud = 9600\n', "unknown key 'baud'"),
        ('[[board]]\nname = "a"\nserial = "X"\nvid = "zz"\n', "hex USB id"),
        ('[[board]]\nname = "a"\nserial = "X"\nvid = 70000\n', "16-bit"),
        ('[[board]]\nname = "a"\nserial = "X\\""\n', "quotes"),
        ("[[board]\n", "not TOML"),
        ('[net]\ntap = "x"\n', "only [[board]]"),
    ],
)
def test_a_bad_board_list_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, fix: str
) -> None:
    path = _board_list(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_adapters(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value) and fix in str(info.value)


def test_install_writes_the_checked_rules_and_uninstall_removes_them(tmp_path: Path) -> None:
    group = Path("/etc/group").read_text().split(":", 1)[0]  # a group that exists
    path = install(RulesConfig(group=group), tmp_path, reload=False)
    assert path == tmp_path / RULES_NAME
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == render_rules(RulesConfig(group=group))
    assert uninstall(tmp_path, reload=False) == path
    assert not path.exists()
    assert uninstall(tmp_path, reload=False) is None


def test_install_refuses_a_missing_group_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"groupadd ira-no-such-group.*--group"):
        install(RulesConfig(group="ira-no-such-group"), tmp_path, reload=False)
    assert not (tmp_path / RULES_NAME).exists()


def _ira(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ira", *args], capture_output=True, text=True, check=False
    )


def test_the_command_line_checks_files_and_groups(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text('SUBSYSTEM=="tty", MODE="0666"\n')
    done = _ira("udev", "check", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == f"ira udev: {bad}:1: MODE 0666 is world-writable; use 0660"
    done = _ira("udev", "install", "--group", "ira-no-such-group", "--rules-dir", str(tmp_path))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    good = tmp_path / "good.rules"
    good.write_text(_ira("udev", "show").stdout)
    done = _ira("udev", "check", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("no errors")


def _udev_verdict(rules: str) -> str:
    """What udev's own rules parser says of a rules file (``udevadm test`` in a private mount
    namespace whose /etc/udev/rules.d holds only that file)."""
    script = (
        "mount -t tmpfs none /etc/udev/rules.d && cat > /etc/udev/rules.d/70-ira.rules && "
        "udevadm test --action=add /sys/devices/virtual/tty/ptmx"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        input=rules, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.mark.root
def test_udev_itself_accepts_the_rules_and_refuses_what_the_check_refuses() -> None:
    if os.geteuid() != 0 or shutil.which("udevadm") is None or shutil.which("unshare") is None:
        reason = "needs root, udevadm (Debian: udev) and unshare"
        if os.environ.get("IRA_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"IRA_REQUIRE_ROOT_TESTS=1 but {reason}")
        pytest.skip(reason)
    verdict = _udev_verdict(render_rules(BENCH))
    assert "Reading rules file: /etc/udev/rules.d/70-ira.rules" in verdict
    assert "70-ira.rules:" not in verdict, verdict  # udev names a line only to complain
    bad = 'SUBSYSTEM=="tty", GROUP="x"\nSUBSYSTEM=="tty", MODEX="0660"\n'
    with pytest.raises(ConfigError, match=r"^f:2:"):
        check_rules(bad, "f")
    assert "70-ira.rules:2 Invalid key 'MODEX'" in _udev_verdict(bad)


def test_the_shipped_rules_are_what_install_writes_by_default() -> None:
    shipped = Path(__file__).resolve().parents[2] / "udev" / "70-ira.rules"
    assert shipped.read_text() == render_rules(RulesConfig())


def test_the_example_board_list_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "udev" / "boards.example.toml"
    assert [a.name for a in load_adapters(example)] == ["bench-a", "bench-b"]


def test_the_host_service_unit_runs_the_watching_host(tmp_path: Path) -> None:
    path = install_host_unit("/usr/local/bin/ira", tmp_path, enable=False)
    assert path == tmp_path / "ira-host.service"
    unit = path.read_text()
    assert "ExecStart=/usr/local/bin/ira host serve --watch /dev/ira\n" in unit
    assert "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit
    with pytest.raises(ConfigError, match="absolute path"):
        render_host_unit("ira")
    with pytest.raises(ConfigError, match="without spaces"):
        render_host_unit("/opt/my ira/bin/ira")
