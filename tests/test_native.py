"""The compiled build of the hot modules (ira.native): used only when it matches the sources."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from ira import native
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import Channel, MessageReceived
from ira.link.simulate import LineFaults, LinkPair

ALL = {m: f"digest-{m}" for m in native.MODULES}


def diagnose(**overrides: object) -> str | None:
    state: dict[str, object] = {
        "disabled": False,
        "compiled": list(native.MODULES),
        "group_library": True,
        "record": dict(ALL),
        "digests": dict(ALL),
    }
    state.update(overrides)
    return native.diagnose(**state)  # type: ignore[arg-type]


def test_a_complete_current_build_is_used() -> None:
    assert diagnose() is None


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"disabled": True}, "IRA_NATIVE=0"),
        ({"compiled": []}, "not compiled"),
        ({"compiled": list(native.MODULES[1:])}, f"{native.MODULES[0]} is not compiled"),
        ({"group_library": False}, native.GROUP_LIBRARY),
        ({"record": None}, native.RECORD_NAME),
        ({"record": {**ALL, "ira.link.sender": "old"}}, "sender.py of ira.link.sender changed"),
        ({"record": {}}, "changed since it was compiled"),
    ],
)
def test_a_build_that_is_off_missing_partial_or_stale_is_not_used(
    overrides: dict[str, object], words: str
) -> None:
    reason = diagnose(**overrides)
    assert reason is not None and words in reason


def test_every_listed_module_has_its_source() -> None:
    for module in native.MODULES:
        assert native.source_path(module).is_file(), module


def _imported_from(env: dict[str, str]) -> tuple[str, str]:
    """Where a fresh interpreter imports the link core from, and the status it reports."""
    code = "import ira.link.core as c, ira.native as n; print(c.__file__); print(n.status())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return out[0], out[1]


def test_ira_native_0_imports_the_python_sources() -> None:
    path, status = _imported_from({**os.environ, native.ENV: "0"})
    assert path.endswith("core.py")
    assert status == "pure Python (IRA_NATIVE=0)"


def test_the_compiled_build_runs_where_it_was_built() -> None:
    """make builds it; CI (IRA_REQUIRE_NATIVE=1) must not quietly measure pure Python."""
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    path, status = _imported_from(env)
    if not status.startswith("compiled"):
        if os.environ.get("IRA_REQUIRE_NATIVE") == "1":
            pytest.fail(f"IRA_REQUIRE_NATIVE=1 but the hot modules run as {status}")
        pytest.skip(f"no compiled build here: {status}")
    assert not path.endswith(".py")
    assert status == f"compiled ({len(native.MODULES)} modules, mypyc)"


def test_channels_stay_channels_in_the_build_that_runs() -> None:
    """A compiled module stores an IntEnum it keeps in an int-typed variable as a plain int."""
    a = Link(LinkConfig(), rng=random.Random(1), now=0.0)
    b = Link(LinkConfig(), rng=random.Random(2), now=0.0)
    pair = LinkPair(a, b, LineFaults(), random.Random(3))
    a.send_message(b"c", Channel.CONTROL)
    a.send_message(b"b", Channel.BULK)
    pair.run_for(1.0)
    got = [e.channel for e in pair.events_b if isinstance(e, MessageReceived)]
    assert got == [Channel.CONTROL, Channel.BULK]
    assert all(type(c) is Channel for c in got)
