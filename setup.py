"""Build hook: compile ira's hot modules with mypyc where a C compiler is at hand.

The package metadata is in pyproject.toml; this file only adds the optional compiled
build of the modules listed in ``ira/native.py`` (why and how: that module's docstring).
Set ``IRA_NATIVE=0`` at install time to skip it.  If mypyc or the C compiler fails, the
install goes on without the extensions and ira runs as pure Python.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _native_module() -> Any:
    """ira/native.py, loaded on its own (importing the ira package would run its guard)."""
    spec = importlib.util.spec_from_file_location("_ira_native", HERE / "ira" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _warn(message: str) -> None:
    print(f"ira: {message}; ira will run as pure Python", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed compiler is not a failed install (ira.native.guard() sees what is missing)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing or failing: distutils' errors vary
            _warn(f"compiling the hot modules failed ({exc})")


def extensions() -> list[Any]:
    if os.environ.get("IRA_NATIVE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    native = _native_module()
    paths = [str(native.source_path(m).relative_to(HERE)) for m in native.MODULES]
    native.write_record()
    try:
        return list(mypycify(paths, group_name="ira_native", opt_level="3"))
    except (Exception, SystemExit) as exc:  # mypyc reports type errors by exiting
        _warn(f"mypyc could not compile the hot modules ({exc})")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
