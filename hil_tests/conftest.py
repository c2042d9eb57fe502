"""The hardware-in-the-loop suite's options, the ``rig`` fixture and its variants.

The rig's two links come from, in order: a labgrid environment (``--lg-env
FILE``, labgrid's pytest plugin; see ``labgrid_links``), ``--link-a``/``--link-b``
(or ``IRA_LINK_A``/``IRA_LINK_B``), or else a virtual null-modem per test.  Tests marked
``slow`` (the ``long`` and ``noisy-115200`` variants) are skipped unless the
run asks for them: ``make soak`` (``IRA_SOAK=1``) or ``-m slow``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import (
    NOISY_LINE,
    VARIANTS,
    Rig,
    RigSettings,
    Variant,
    backstop_timeout_s,
)

from ira.tools.nullmodem import NullModem

_HERE = Path(__file__).resolve().parent
_SETTINGS = pytest.StashKey[RigSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ira-hil", "ira hardware-in-the-loop rig")
    group.addoption(
        "--link-a",
        metavar="SPEC",
        help="the board's end of the rig, e.g. /dev/ttyUSB0 (default: $IRA_LINK_A)",
    )
    group.addoption(
        "--link-b",
        metavar="SPEC",
        help="the host's end of the rig, e.g. /dev/ttyUSB1 (default: $IRA_LINK_B)",
    )
    if importlib.util.find_spec("labgrid") is None:
        # without labgrid its plugin is not there to take --lg-env: say what to install
        group.addoption("--lg-env", metavar="FILE", help="a labgrid environment (needs labgrid)")


def rig_settings(config: pytest.Config) -> RigSettings:
    """The session's rig, decided once (after labgrid's plugin has read its environment)."""
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        settings = _load_settings(config)
        config.stash[_SETTINGS] = settings
    return settings


def _load_settings(config: pytest.Config) -> RigSettings:
    lg_env = config.getoption("--lg-env", default=None)
    if not lg_env:
        return RigSettings.load(
            config.getoption("--link-a"), config.getoption("--link-b"), os.environ
        )
    if importlib.util.find_spec("labgrid") is None:
        raise pytest.UsageError(
            "--lg-env needs labgrid: pip install 'ira[labgrid]' (make test builds .venv-labgrid)"
        )
    from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
    from labgrid_links import links_from_environment

    try:
        links = links_from_environment(config.stash[LABGRID_ENV_KEY], str(lg_env))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    settings = RigSettings.load(links.link_a, links.link_b, os.environ)
    return dataclasses.replace(settings, source=links.description, baud=links.baud)


def pytest_report_header(config: pytest.Config) -> str:
    return f"ira rig: {rig_settings(config).describe()}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rig" in metafunc.fixturenames:
        metafunc.parametrize("rig", VARIANTS, indirect=True)


def _soak_requested(config: pytest.Config) -> bool:
    return bool(os.environ.get("IRA_SOAK")) or "slow" in (config.option.markexpr or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = rig_settings(config)
    soak = _soak_requested(config)
    for item in items:
        if _HERE not in item.path.parents:
            continue
        callspec = getattr(item, "callspec", None)
        variant = callspec.params.get("rig") if callspec is not None else None
        if isinstance(variant, Variant) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(backstop_timeout_s(settings, variant)))
        if item.get_closest_marker("slow") is not None and not soak:
            item.add_marker(pytest.mark.skip(reason="soak variant: run by make soak (IRA_SOAK=1)"))


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The two ends under test; a fresh virtual null-modem unless real links are given."""
    settings = rig_settings(request.config)
    variant = request.param
    assert isinstance(variant, Variant)
    rate = settings.line_bytes_per_s(variant)
    if settings.link_a is not None and settings.link_b is not None:
        if variant.noisy:
            pytest.skip(
                "the noisy-115200 variant runs on the virtual null-modem only "
                "(a real line brings its own noise; the short variant already ran on it)"
            )
        yield Rig(
            settings.link_a,
            settings.link_b,
            variant=variant,
            line_bytes_per_s=rate,
            seed=settings.seed,
            modem=None,
        )
        return
    config = NOISY_LINE if variant.noisy else settings.cable
    with NullModem(dataclasses.replace(config, seed=settings.seed)) as modem:
        yield Rig(
            modem.path_a,
            modem.path_b,
            variant=variant,
            line_bytes_per_s=rate,
            seed=settings.seed,
            modem=modem,
            faulty=config.faulty,
        )
