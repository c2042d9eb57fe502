"""The compiled build of ira's hot modules: which they are, whether they are in use.

ira is plain, strictly typed Python.  Where a C compiler is at hand, the install
(``setup.py``) also compiles the modules every message passes through — the link and
bus-model cores and the link runtime, listed in ``MODULES`` — with mypyc, which turns
typed Python into a C extension of the same module: the same code, about 2.5 times
faster per message (docs/PERFORMANCE.md).  Without a compiler, or with ``IRA_NATIVE=0``
in the environment at install time, the install leaves them as Python.

Python imports an extension module in preference to the source file beside it, so a
compiled module that no longer matches its source would run old code.  The build records
the SHA-256 of each source it compiled (``_native_build.json`` beside this file), and
``guard()``, run when ``ira`` is imported, compares: if a source changed since (or
``IRA_NATIVE=0`` is set when ira runs), every module of the group is imported from its
source.  All or none: compiled modules call one another directly, not through imports.
``make`` rebuilds them when a source changes; ``status()`` says which build is running
(``ira --version``, and every benchmark's report).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import ModuleType

#: modules compiled together, as one group (they call one another natively)
MODULES: tuple[str, ...] = (
    "ira.link.core",
    "ira.link.counters",
    "ira.link.handshake",
    "ira.link.inbound",
    "ira.link.outbound",
    "ira.link.sender",
    "ira.link.receiver",
    "ira.link.framing",
    "ira.link.events",
    "ira.link.header2",
    "ira.link.tailprobe",
    "ira.runtime.link",
    "ira.runtime.plumbing",
    "ira.runtime.portkeeper",
    "ira.runtime.cores",
    "ira.busmodel.events",
    "ira.busmodel.bus",
    "ira.busmodel.connector",
    "ira.busmodel.container",
    "ira.busmodel.window",
    "ira.busmodel.outbox",
    "ira.busmodel.signal",
    "ira.busmodel.requests",
    "ira.busmodel.counters",
)

#: the build's record of what it compiled: {module: SHA-256 of its source}
RECORD_NAME = "_native_build.json"

#: the shared library of the group (mypyc's name for it, from the group's name in setup.py)
GROUP_LIBRARY = "ira_native__mypyc"

#: environment variable: "0" runs the Python sources even where a compiled build exists
ENV = "IRA_NATIVE"

_PACKAGE_DIR = Path(__file__).resolve().parent

#: why the compiled build is not in use (None: it is); set by guard()
_reason: str | None = "guard() has not run"


def source_path(module: str) -> Path:
    """The source file of one of ``MODULES`` (``ira.link.core`` → ``…/ira/link/core.py``)."""
    parts = module.split(".")
    if parts[0] != "ira":
        raise ValueError(f"not an ira module: {module}")
    return _PACKAGE_DIR.joinpath(*parts[1:]).with_suffix(".py")


def source_digest(module: str) -> str:
    """SHA-256 (hex) of a module's source, as the build records it."""
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def compiled_path(module: str) -> Path | None:
    """The extension module built for ``module``, if there is one beside its source."""
    src = source_path(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = src.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def write_record(modules: Sequence[str] = MODULES, directory: Path = _PACKAGE_DIR) -> Path:
    """Record the digests of the sources being compiled (the build calls this)."""
    record = {m: source_digest(m) for m in modules}
    path = directory / RECORD_NAME
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def diagnose(
    *,
    disabled: bool,
    compiled: Collection[str],
    group_library: bool,
    record: Mapping[str, str] | None,
    digests: Mapping[str, str],
) -> str | None:
    """Why a compiled build in this state cannot be used, in a few words; None: it can.

    ``compiled``: the modules with an extension beside their source; ``record``: the
    build's digests (None: unreadable); ``digests``: the sources' digests now."""
    if disabled:
        return f"{ENV}=0"
    if not compiled:
        return "not compiled: no C compiler at install, or IRA_NATIVE=0 then"
    missing = [m for m in MODULES if m not in compiled]
    if missing:
        return f"incomplete build: {missing[0]} is not compiled; reinstall (make)"
    if not group_library:
        return f"incomplete build: no {GROUP_LIBRARY} library; reinstall (make)"
    if record is None:
        return f"no readable {RECORD_NAME} from the build; reinstall (make)"
    for module in MODULES:
        if record.get(module) != digests.get(module):
            return f"{source_path(module).name} of {module} changed since it was compiled; make"
    return None


def check() -> str | None:
    """``diagnose`` this installation."""
    if os.environ.get(ENV, "1") == "0":  # the cheap answer first: no files read
        return diagnose(disabled=True, compiled=(), group_library=False, record=None, digests={})
    compiled = [m for m in MODULES if compiled_path(m) is not None]
    record: Mapping[str, str] | None = None
    if compiled:
        try:
            loaded = json.loads((_PACKAGE_DIR / RECORD_NAME).read_text())
            record = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError):
            record = None
    return diagnose(
        disabled=False,
        compiled=compiled,
        group_library=bool(compiled) and importlib.util.find_spec(GROUP_LIBRARY) is not None,
        record=record,
        digests={m: source_digest(m) for m in MODULES} if record is not None else {},
    )


class _SourceLoader(importlib.abc.MetaPathFinder):
    """Finds the group's modules as their Python sources, ahead of the extensions."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        source = source_path(fullname)
        if not source.is_file():  # imported from a zipapp (ira flash): no extension there
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def guard() -> None:
    """Import the group from source unless its compiled build is present and current."""
    global _reason
    _reason = check()
    if _reason is not None and not any(isinstance(f, _SourceLoader) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceLoader())


def in_use() -> bool:
    """True when the compiled modules are the ones running."""
    return _reason is None


def status() -> str:
    """One line: which build of the hot modules runs, and why not the compiled one."""
    if _reason is None:
        return f"compiled ({len(MODULES)} modules, mypyc)"
    return f"pure Python ({_reason})"
