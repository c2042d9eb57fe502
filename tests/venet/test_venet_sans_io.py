"""venet's frame checks and port counters are sans-I/O (STYLE §1), like the wire module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANS_IO = ["ira/venet/vnethdr.py", "ira/venet/port.py", "ira/wire/venet.py"]
SANS_IO += ["ira/venet/delta.py", "ira/wire/framedelta.py"]
IO_MODULES = {"os", "socket", "select", "selectors", "threading", "asyncio", "fcntl", "time"}
IO_MODULES |= {"subprocess", "ctypes", "serial", "usb", "termios"}
#: the venet modules that do I/O; a sans-I/O module must not reach them either
IO_OF_IRA = {"ira.runtime.tap", "ira.runtime.netns", "ira.runtime.endpoint"}


@pytest.mark.parametrize("path", SANS_IO)
def test_imports_no_io(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    bad = [n for n in names if n.split(".")[0] in IO_MODULES or n in IO_OF_IRA]
    assert not bad, f"{path} imports {bad}"
