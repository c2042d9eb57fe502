"""Carry out an install plan on a root filesystem: the board's half of ``ira flash``.

Runs on the board inside the receiver stub (so: the standard library only,
nothing of ira; ``ira.tools.flash.stub`` concatenates it into the stub) and on
the host for ``ira flash --rootfs DIR``.  ``root`` is where files are written;
the plan's paths are the board's (absolute), and go below ``root``.

Layout below ``root``::

    opt/ira/versions/<id>/ira.pyz    one directory per version, SHA256 beside it
    opt/ira/versions/<id>/app/       the zipapp unpacked: what the board runs, so that
                                     Python keeps its compiled modules (``__pycache__``)
                                     from one start to the next (a zipapp's are compiled
                                     again at every start: 10-40 s on a slow board)
    opt/ira/current -> versions/<id> the running version (one symlink, switched by rename)
    opt/ira/previous -> versions/<id> the version before it (``ira flash --rollback``)
    var/lib/ira/incoming/<sha>.part  a stream still arriving (kept across sessions)

The order makes a power cut harmless: the new version directory is complete and
synced before the one ``rename`` that switches ``current``; until then the
board boots what it booted before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import zipfile
import zlib

OK, BAD_SHA, NO_SPACE, INSTALL_FAILED, BAD_REQUEST = 0, 1, 2, 3, 4


def below(root: str, path: str) -> str:
    """``path`` (a board path) below ``root``."""
    return os.path.join(root, path.lstrip("/"))


def incoming(root: str, sha_hex: str) -> str:
    return below(root, "/var/lib/ira/incoming/" + sha_hex + ".part")


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(root: str, path: str, data: bytes, mode: int) -> None:
    """Write a file atomically (a temporary beside it, synced, renamed)."""
    dest = below(root, path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".ira-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, dest)


def set_link(link: str, target: str) -> None:
    """Point the symlink ``link`` at ``target`` in one rename."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    tmp = link + ".ira-tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _sync_dir(os.path.dirname(link))


def installed(root: str) -> dict[str, str | None]:
    """The SHA-256 of the current and previous versions (None where there is none)."""
    out: dict[str, str | None] = {}
    for name in ("current", "previous"):
        try:
            with open(below(root, "/opt/ira/" + name + "/SHA256")) as f:
                out[name] = f.read().strip()
        except OSError:
            out[name] = None
    return out


def intact(vdir: str, sha_hex: str) -> bool:
    """True when ``vdir`` holds the payload of ``sha_hex``, whole."""
    try:
        with open(os.path.join(vdir, "SHA256")) as f:
            if f.read().strip() != sha_hex:
                return False
        digest = hashlib.sha256()
        with open(os.path.join(vdir, "ira.pyz"), "rb") as f:
            while chunk := f.read(65536):
                digest.update(chunk)
        return digest.hexdigest() == sha_hex
    except OSError:
        return False


def unpack(root: str, stream_path: str, codec: int, sha_hex: str, vdir: str) -> tuple[int, str]:
    """Decompress the stream into ``vdir``/ira.pyz and check its SHA-256."""
    tmp = vdir + ".ira-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if codec == 2:
        import lzma  # not every board's Python has it: the host asks before choosing it

        dec: object = lzma.LZMADecompressor()
        errors: tuple[type[Exception], ...] = (lzma.LZMAError, EOFError)
    else:
        dec = zlib.decompressobj()
        errors = (zlib.error,)
    digest = hashlib.sha256()
    try:
        with open(stream_path, "rb") as src, open(os.path.join(tmp, "ira.pyz"), "wb") as dst:
            while chunk := src.read(65536):
                data = dec.decompress(chunk)  # type: ignore[attr-defined]
                digest.update(data)
                dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
    except errors:
        digest = hashlib.sha256(b"not a stream")
    if digest.hexdigest() != sha_hex:
        shutil.rmtree(tmp, ignore_errors=True)
        os.unlink(stream_path)
        return BAD_SHA, "payload SHA-256 differs from " + sha_hex[:12] + ": deleted, not installed"
    write_file(tmp, "/SHA256", (sha_hex + "\n").encode(), 0o644)
    unzip(os.path.join(tmp, "ira.pyz"), os.path.join(tmp, "app"))
    if intact(vdir, sha_hex):  # this version is there already (current, maybe): keep it
        shutil.rmtree(tmp, ignore_errors=True)
        return OK, ""
    shutil.rmtree(vdir, ignore_errors=True)
    os.replace(tmp, vdir)
    _sync_dir(os.path.dirname(vdir))
    return OK, ""


def unzip(pyz: str, dest: str) -> None:
    """Unpack the zipapp ``pyz`` into ``dest``, each file synced (the version directory
    is switched to only after this; ``zipfile`` keeps every name below ``dest``)."""
    with zipfile.ZipFile(pyz) as zf:
        for name in zf.namelist():
            path = zf.extract(name, dest)
            if os.path.isfile(path):
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
    for top, dirs, _ in os.walk(dest):
        for d in dirs:
            _sync_dir(os.path.join(top, d))
    _sync_dir(dest)


def stop_process(root: str) -> None:
    try:
        with open(below(root, "/run/ira-board.pid")) as f:
            os.killpg(int(f.read().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def start(root: str, plan: dict[str, object]) -> tuple[int, str]:
    """Start (or restart) the board service as the plan says."""
    how = plan.get("start")
    unit = str(plan.get("unit", "ira-board.service"))
    if how == "systemd":
        cmds = [["systemctl", "daemon-reload"], ["systemctl", "enable", unit]]
        cmds.append(["systemctl", "restart", unit])
    elif how == "initd":
        cmds = [[below(root, str(plan.get("initd"))), "restart"]]
    elif how == "process":
        stop_process(root)
        argv = [str(a) for a in plan.get("serve", [])]  # type: ignore[attr-defined]
        log = open(below(root, "/var/log/ira-board.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        write_file(root, "/run/ira-board.pid", str(proc.pid).encode(), 0o644)
        return OK, ""
    else:
        return OK, ""
    for cmd in cmds:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if done.returncode:
            return INSTALL_FAILED, " ".join(cmd) + " failed: " + done.stderr.decode()[-200:]
    return OK, ""


def apply(
    root: str, plan: dict[str, object], stream_path: str | None, codec: int
) -> tuple[int, str]:
    """Carry out ``plan`` below ``root``; (status, one line)."""
    try:
        return _apply(root, plan, stream_path, codec)
    except OSError as exc:
        if exc.errno == 28:
            return NO_SPACE, "no space left on the board: " + str(exc)
        return INSTALL_FAILED, "install failed: " + str(exc)


def _apply(
    root: str, plan: dict[str, object], stream_path: str | None, codec: int
) -> tuple[int, str]:
    base = below(root, "/opt/ira")
    os.makedirs(os.path.join(base, "versions"), exist_ok=True)
    current, previous = os.path.join(base, "current"), os.path.join(base, "previous")
    action = plan.get("action")
    if action == "rollback":
        if not os.path.isdir(previous):
            return INSTALL_FAILED, "no previous version to roll back to"
        now, before = os.readlink(current), os.readlink(previous)
        set_link(current, before)
        set_link(previous, now)
        status, message = start(root, plan)
        return status, message or "rolled back to " + os.path.basename(before)
    if action == "check":
        status, message = start(root, plan)
        return status, message or "checked"
    if action != "install" or stream_path is None:
        return BAD_REQUEST, "unknown plan action " + str(action)
    sha_hex, version = str(plan["sha256"]), str(plan["version"])
    vdir = os.path.join(base, "versions", version)
    status, message = unpack(root, stream_path, codec, sha_hex, vdir)
    if status != OK:
        return status, message
    for entry in plan.get("files", []):  # type: ignore[attr-defined]
        write_file(root, entry["path"], entry["text"].encode(), int(entry["mode"]))
    for link, target in plan.get("links", []):  # type: ignore[attr-defined]
        set_link(below(root, link), target)
    old = os.readlink(current) if os.path.islink(current) else None
    if old and old != "versions/" + version:
        set_link(previous, old)
    set_link(current, "versions/" + version)
    keep = {os.path.basename(os.readlink(p)) for p in (current, previous) if os.path.islink(p)}
    for name in os.listdir(os.path.join(base, "versions")):
        if name not in keep:
            shutil.rmtree(os.path.join(base, "versions", name), ignore_errors=True)
    os.unlink(stream_path)
    status, message = start(root, plan)
    return status, message or "installed " + version


def plan_of(text: str) -> dict[str, object]:
    plan = json.loads(text)
    if not isinstance(plan, dict):
        raise ValueError("a plan is a JSON object")
    return plan
