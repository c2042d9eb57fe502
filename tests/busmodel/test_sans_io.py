"""The bus model and the bus wire format are sans-I/O: no clocks, threads or ports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "ira"
FORBIDDEN = {
    "asyncio",
    "fcntl",
    "os",
    "select",
    "selectors",
    "serial",
    "socket",
    "subprocess",
    "threading",
    "time",
    "usb",
}
SOURCES = [*sorted((ROOT / "busmodel").rglob("*.py")), ROOT / "wire" / "bus.py"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_io_imports() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN)
        for path in SOURCES
        if _imports(path) & FORBIDDEN
    }
    assert offenders == {}


def test_busmodel_uses_only_the_link_events_of_the_link_layer() -> None:
    for path in sorted((ROOT / "busmodel").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ira.link"):
                assert node.module == "ira.link.events", f"{path}: imports {node.module}"
