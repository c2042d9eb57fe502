"""What the QEMU guests of this project share: Debian's kernel, its modules, an initramfs.

Both the USB guest (``ira.tools.usbvm``) and the virtual board
(``ira.tools.vboard``) boot Debian's *generic* amd64 kernel (the cloud kernel
lacks USB and more) under QEMU's software emulation, with a busybox initramfs
that loads the modules they need:

* ``kernel_package()`` names the ``linux-image-<ver>-amd64`` package that
  ``linux-image-amd64`` depends on;
* ``unpack_kernel()`` fetches it (``apt-get download``) and unpacks its
  ``/boot`` and ``/lib/modules`` (``dpkg-deb``), ``depmod`` included;
* ``module_order()`` lists the module files to load for a set of module names,
  dependencies first (``modprobe --show-depends``);
* ``initramfs()`` packs a directory as a gzipped ``newc`` cpio archive.

Everything is cached below ``~/.cache/ira/`` (``$XDG_CACHE_HOME``).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ira.errors import TransportError

__all__ = [
    "BUSYBOX",
    "QEMU",
    "cache_root",
    "download",
    "initramfs",
    "kernel_package",
    "missing_program",
    "module_order",
    "run",
    "unpack_kernel",
]

QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/ira`` (``~/.cache/ira``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ira"


def run(argv: list[str], *, packages: tuple[str, ...], check: bool = True, **kwargs: object) -> str:
    """Run a program, its stdout; a missing program or a failure is one line naming the fix."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise TransportError(f"{argv[0]} is missing: apt-get install {' '.join(packages)}") from exc
    if check and done.returncode != 0:
        raise TransportError(f"{' '.join(argv)} failed: {' '.join(done.stderr.split())[:300]}")
    out: str = done.stdout
    return out


def missing_program(programs: tuple[str, ...], packages: tuple[str, ...], what: str) -> str | None:
    """Why no guest can be built here (not x86_64 Linux, a missing program), or None."""
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return f"{what} needs an x86_64 Linux machine"
    for program in programs:
        if shutil.which(program) is None:
            return f"{program} is missing (apt-get install {' '.join(packages)})"
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    return None


def kernel_package(packages: tuple[str, ...]) -> str:
    """The generic amd64 kernel package Debian's ``linux-image-amd64`` points at."""
    text = run(["apt-cache", "depends", "linux-image-amd64"], packages=packages, check=False)
    found = re.findall(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", text)
    if not found and os.geteuid() == 0:
        run(["apt-get", "update", "-qq"], packages=packages)  # a fresh machine may have no lists
        text = run(["apt-cache", "depends", "linux-image-amd64"], packages=packages, check=False)
        found = re.findall(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", text)
    if not found:
        raise TransportError(
            "apt knows no linux-image-amd64: run `apt-get update` (Debian's kernel is needed)"
        )
    return str(found[0])


def download(names: tuple[str, ...], where: Path, *, packages: tuple[str, ...]) -> list[Path]:
    """``apt-get download`` each package into ``where`` (kept: a later call reuses them)."""
    where.mkdir(parents=True, exist_ok=True)
    missing = [name for name in names if not any(where.glob(f"{name}_*.deb"))]
    if missing:
        run(["apt-get", "download", *missing], packages=packages, cwd=where)
    debs: list[Path] = []
    for name in names:
        found = sorted(where.glob(f"{name}_*.deb"))
        if not found:
            raise TransportError(f"apt-get download {name} gave no package")
        debs.append(found[-1])
    return debs


def unpack_kernel(package: str, work: Path, *, packages: tuple[str, ...]) -> Path:
    """Fetch the kernel package into ``work`` and unpack /boot and /lib/modules (depmod'ed)."""
    version = package.removeprefix("linux-image-")
    run(["apt-get", "download", package], packages=packages, cwd=work)
    deb = next(work.glob(f"{package}_*.deb"))
    tree = work / "tree"
    tree.mkdir()
    tarball = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["tar", "-x", "-C", str(tree), "./boot", "./lib/modules"],
        input=tarball,
        capture_output=True,
        check=True,
    )
    run(["depmod", "-b", str(tree), version], packages=packages)
    return tree


def module_order(
    tree: Path, version: str, modules: tuple[str, ...], *, packages: tuple[str, ...]
) -> list[str]:
    """The module files to load for ``modules``, each after what it depends on."""
    ordered: list[str] = []
    for module in modules:
        argv = ["modprobe", "-d", str(tree), "-S", version, "--show-depends", module]
        for line in run(argv, packages=packages).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod" and parts[1] not in ordered:
                ordered.append(parts[1])
    return ordered


def initramfs(root: Path) -> bytes:
    """``root`` as a gzipped newc cpio archive (what the kernel takes as ``-initrd``)."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=root,
        input="\n".join(files).encode(),
        capture_output=True,
        check=True,
    ).stdout
    return gzip.compress(archive, 6)
