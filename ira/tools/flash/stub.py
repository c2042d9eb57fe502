"""The receiver stub as it is typed into a board's shell.

The stub is three modules of ira that use nothing but the standard library
(``ira.flash.receiver``, ``ira.tools.flash.installer``,
``ira.tools.flash.boardstub``), concatenated with their imports of ira taken
out, compressed (zlib) and base64-encoded.  ``command_lines`` is what is typed:
one short command that reads base64 lines from the console until an empty
line, decompresses them and runs them, then the lines and the empty line.
Lines stay far below the 4096 bytes a tty's canonical mode holds.
"""

from __future__ import annotations

import ast
import base64
import zlib
from pathlib import Path

from ira.flash import receiver
from ira.tools.flash import boardstub, installer

#: the modules of the stub, in order (each may use the ones before it)
MODULES = (receiver, installer, boardstub)
#: what the boot command prints once Python reads the stub's lines (the host waits for
#: it: a shell whose console is in raw mode would read lines typed before Python runs)
READY = "__IRA_STUB__"
#: base64 characters per typed line
LINE_CHARS = 76


def source() -> str:
    """The stub's Python source: the modules without their imports of ira."""
    parts = ["from __future__ import annotations\n"]
    for module in MODULES:
        text = Path(str(module.__file__)).read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        drop: set[int] = set()
        for node in ast.parse(text).body:
            if isinstance(node, ast.ImportFrom) and (
                node.module == "__future__" or (node.module or "").startswith("ira")
            ):
                drop.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
        parts.append("".join(line for i, line in enumerate(lines) if i not in drop))
    parts.append("\nimport sys\nsys.exit(main_from_argv(sys.argv))\n")
    return "".join(parts)


def command_lines(python: str, root: str) -> list[str]:
    """What to type into the shell, line by line (without line ends): the boot command,
    then (after ``READY``) the stub as base64 lines and an empty line."""
    packed = base64.b64encode(zlib.compress(source().encode(), 9)).decode()
    ready = f"'{READY[:6]}'+'{READY[6:]}'"  # printed joined, echoed apart
    boot = (
        f'{python} -c "import sys,zlib,base64;print({ready},flush=True);'
        "exec(zlib.decompress(base64.b64decode(''.join(iter(sys.stdin.readline,'\\n')))))\" "
        + shell_quote(root)
    )
    body = [packed[i : i + LINE_CHARS] for i in range(0, len(packed), LINE_CHARS)]
    return [boot, *body, ""]


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
