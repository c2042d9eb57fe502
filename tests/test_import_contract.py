"""The sans-I/O cores import no I/O (STYLE §1).

Every module of the cores is parsed, not imported: each ``import`` and
``from ... import`` anywhere in it (functions included) is checked against the
modules that do I/O or read clocks.  The cores may import each other and
``ira.errors``, nothing else of ira, so that no I/O comes in through the back door.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ira"

#: the sans-I/O cores: single modules and whole packages
CORE_FILES = [
    "ira/link/core.py",
    "ira/link/sender.py",
    "ira/link/receiver.py",
    "ira/link/framing.py",
    "ira/link/config.py",
    "ira/link/events.py",
    "ira/link/simulate.py",
    "ira/link/faults.py",
    "ira/errors.py",
    "ira/venet/vnethdr.py",
    "ira/venet/port.py",
    "ira/venet/netspec.py",
    "ira/venet/flowqueue.py",
    "ira/venet/delta.py",
    "ira/venet/device.py",
    "ira/venet/driver.py",
]
CORE_PACKAGES = ["ira/wire", "ira/busmodel", "ira/virtio"]

FORBIDDEN = {
    "serial",
    "usb",
    "socket",
    "select",
    "selectors",
    "threading",
    "asyncio",
    "fcntl",
    "time",
    "os",
    "subprocess",
    "termios",
}


def core_modules() -> list[Path]:
    paths = [ROOT / f for f in CORE_FILES]
    for package in CORE_PACKAGES:
        paths += sorted((ROOT / package).rglob("*.py"))
    return paths


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


CORE_NAMES = {module_name(p) for p in core_modules()}
#: ira packages whose ``__init__`` a core may pass through (they must stay empty of I/O too)
CORE_PARENTS = {"ira", "ira.link", "ira.venet"}


def existing_module(name: str) -> str:
    """The longest prefix of a dotted name that is a module or package of ira."""
    parts = name.split(".")
    while len(parts) > 1:
        path = ROOT.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """Imports of a module of ``package`` (relative imports resolved against it)."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # ``from ira.link import core`` imports ira.link.core
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_cores_are_where_the_contract_says() -> None:
    for f in CORE_FILES:
        assert (ROOT / f).is_file(), f
    assert len(core_modules()) > len(CORE_FILES)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_io(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for line, name in imports_of(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_only_other_cores_of_ira(path: Path) -> None:
    bad = []
    for line, name in imports_of(path):
        if name.split(".")[0] != "ira":
            continue
        module = existing_module(name)  # ``from ira import __version__`` is ``ira``
        if module not in CORE_NAMES and module not in CORE_PARENTS:
            bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(CORE_PARENTS))
def test_packages_on_the_way_import_no_io(name: str) -> None:
    init = PACKAGE.parent.joinpath(*name.split("."), "__init__.py")
    assert not [n for _, n in imports_of(init) if n.split(".")[0] in FORBIDDEN]


def test_the_checker_sees_imports_everywhere() -> None:
    """Imports in functions, dotted, relative, and by import_module are all found."""
    source = (
        "import os.path\n"
        "from time import monotonic\n"
        "def f():\n"
        "    import socket\n"
        "    from . import serialport\n"
        "    from ..wire.link import MAGIC\n"
        "    importlib.import_module('threading')\n"
    )
    names = {name for _, name in imports_in(source, "ira.link")}
    assert {"os.path", "time", "socket", "ira.link.serialport", "threading"} <= names
    assert "ira.wire.link" in names
