"""The payload ``ira flash`` puts on a board: a zipapp of ira and its dependencies.

``build_payload()`` makes ``ira.pyz``: ira's Python sources and those of the
pure-Python dependencies it imports at run time (pyserial, construct, cobs,
crcmod, pyusb), each of which falls back to Python where it has a C
extension; no compiled module goes in (the board may be another
architecture).  The board runs it with its own ``python3 ira.pyz ARGS``.  Its
members are stored uncompressed, in sorted order with a fixed date, so the
same tree always gives the same bytes and the same SHA-256 (a re-flash of the
same version is recognised); the whole file is compressed once for the
transfer (lzma where the board's Python has it, else zlib), which compresses
across files far better than a zip's per-file deflate.  ``MANIFEST.json``
inside names the version and the device types the payload can serve.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import ira
from ira.wire.flash import Codec

#: the packages a board needs besides ira (import names)
DEPENDENCIES = ("serial", "construct", "cobs", "crcmod", "usb")

_MAIN = """\
import os, sys
os.environ["IRA_NATIVE"] = "0"  # a zipapp holds no compiled modules
from ira.cli.main import main
sys.exit(main())
"""


@dataclass(frozen=True, slots=True)
class Payload:
    pyz: bytes
    version: str
    device_types: tuple[str, ...]

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.pyz).digest()

    @property
    def version_id(self) -> str:
        """The version directory's name: ira's version and the payload's SHA-256."""
        return f"{self.version}-{self.sha256.hex()[:12]}"

    def compressed(self, codec: Codec) -> bytes:
        if codec is Codec.LZMA:
            return lzma.compress(self.pyz, preset=9 | lzma.PRESET_EXTREME)
        return zlib.compress(self.pyz, 9)


def _package_files(name: str) -> list[tuple[str, Path]]:
    module = importlib.import_module(name)
    root = Path(str(module.__file__)).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if "__pycache__" in rel.parts or "tests" in rel.parts or path.name == "test.py":
            continue
        out.append((rel.as_posix(), path))
    return out


def device_types() -> tuple[str, ...]:
    """The device types this ira can serve (a profile's ``[[device]] type``)."""
    from ira.runtime.profile import standard_device_types

    return tuple(standard_device_types().names())


def build_payload() -> Payload:
    files: list[tuple[str, Path]] = []
    for name in ("ira", *DEPENDENCIES):
        files += _package_files(name)
    types = device_types()
    manifest = json.dumps({"version": ira.__version__, "device_types": types}, indent=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        entries = [(arc, path.read_bytes()) for arc, path in files]
        entries += [("__main__.py", _MAIN.encode()), ("MANIFEST.json", manifest.encode())]
        for arc, data in sorted(entries):
            info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return Payload(buf.getvalue(), ira.__version__, types)
