"""The import contract: packages in layers, and sans-I/O cores (DESIGN §2, STYLE §1).

Every module of ira is parsed, not imported: each ``import`` and ``from ... import``
anywhere in it (functions included) is checked.  Two rules:

* **Layers.** Packages are ordered ``wire < link < busmodel < virtio < venet <
  transports < runtime < tools < cli``; a module imports only from its own package
  and the packages below it, and from the foundation modules (``ira``,
  ``ira.errors``, ``ira.native``), which import no package of ira.
* **Sans-I/O.** The protocol cores (``wire`` … ``venet``) import no module that does
  I/O, reads a clock or starts a thread; only transports, runtimes, tools and the
  CLI do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ira"

#: the packages of ira, bottom to top
LAYERS = [
    "wire",
    "link",
    "busmodel",
    "virtio",
    "venet",
    "flash",
    "transports",
    "runtime",
    "tools",
    "cli",
]
#: the sans-I/O cores: the layers up to and including flash
CORE_LAYERS = LAYERS[: LAYERS.index("flash") + 1]
#: modules directly under ira/ that any package may import; they import no package of ira
FOUNDATION = {"ira", "ira.errors", "ira.native"}

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


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def core_modules() -> list[Path]:
    return [p for p in all_modules() if layer_of(module_name(p)) in CORE_LAYERS]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> str | None:
    """The package (layer) of a module of ira, or None for a foundation module."""
    parts = name.split(".")
    if name == "ira.__main__":  # ``python -m ira``: the command line
        return "cli"
    if len(parts) < 2 or parts[0] != "ira" or name in FOUNDATION:
        return None
    return parts[1]


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


def upward_imports(name: str, imports: list[tuple[int, str]]) -> list[str]:
    """Imports of module ``name`` that reach a higher layer (or a package not in LAYERS)."""
    own = layer_of(name)
    bad = []
    for line, imported in imports:
        if imported.split(".")[0] != "ira":
            continue
        resolved = existing_module(imported)  # ``from ira import __version__`` is ``ira``
        target = layer_of(resolved)
        second = imported.split(".")[1] if "." in imported else ""
        if resolved == "ira" and second and not second.startswith("__"):
            bad.append(f"{line}: imports {imported}, a package not in LAYERS")
            continue
        if target is None:
            if own is None and resolved not in FOUNDATION:
                bad.append(f"{line}: foundation module imports {imported}")
            continue
        if target not in LAYERS:
            bad.append(f"{line}: imports {imported}, a package not in LAYERS")
        elif own is None or LAYERS.index(target) > LAYERS.index(own):
            bad.append(f"{line}: imports {imported} ({target} is above {own or 'the foundation'})")
    return bad


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)
    for name in FOUNDATION - {"ira"}:
        assert (PACKAGE / f"{name.split('.')[1]}.py").is_file(), name


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_nothing_above_its_layer(path: Path) -> None:
    bad = upward_imports(module_name(path), imports_of(path))
    assert not bad, "\n".join(f"{path.relative_to(ROOT)}:{b}" for b in bad)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_io(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for line, name in imports_of(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_foundation_modules_on_a_cores_way_do_no_io_but_the_build_check() -> None:
    """``ira/__init__`` and ``ira.errors`` are imported by every core: no I/O there."""
    for name in ("__init__.py", "errors.py"):
        assert not [n for _, n in imports_of(PACKAGE / name) if n.split(".")[0] in FORBIDDEN]


@pytest.mark.parametrize(
    ("module", "source", "verdict"),
    [
        ("ira.busmodel.profile", "from ira.venet.device import VirtioNet\n", "above"),
        ("ira.link.core", "def f():\n    import ira.runtime.link\n", "above"),
        ("ira.wire.bus", "from ira.link import events\n", "above"),
        ("ira.venet.driver", "importlib.import_module('ira.cli.main')\n", "above"),
        ("ira.errors", "from ira.link.core import Link\n", "foundation"),
        ("ira.link.core", "from ira.gadgets import x\n", "not in LAYERS"),
        ("ira.cli.main", "from ira.runtime.host import HostService\n", None),
        ("ira.venet.driver", "from ira.virtio.driver import VirtqueueDriver\n", None),
        ("ira.runtime.link", "from ira import native\nfrom ira.errors import IraError\n", None),
    ],
)
def test_the_checker_refuses_upward_imports(module: str, source: str, verdict: str | None) -> None:
    package = module.rpartition(".")[0]
    bad = upward_imports(module, imports_in(source, package))
    if verdict is None:
        assert bad == []
    else:
        assert bad and verdict in bad[0], bad


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
