"""Named network namespaces that live exactly as long as a ``with`` block.

``NetNs`` creates a namespace with ``ip netns add`` (so that ``ip netns exec``,
``ip -n`` and every other tool see it under its name), brings its loopback
up, runs commands in it, and on exit removes everything it put there: the
processes it started (and any other process still inside), then the
namespace.  Exiting on an exception or a ``KeyboardInterrupt`` cleans up the
same way.  A process killed outright cannot clean up; ``remove_stale()``
deletes the namespaces that dead ira processes left behind (their names carry
the pid: ``ira-<pid>-<n>``).

Python code runs inside a namespace with ``call(fn)``: ``fn`` runs on a new
thread that has entered the namespace with ``setns(2)``.  Sockets, and TAP
devices opened on ``/dev/net/tun``, belong to the namespace they were created
in, so what ``fn`` creates can then be used from any thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from ira.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: where ``ip netns`` keeps named namespaces
NETNS_RUN_DIR = Path("/run/netns")
#: ``CLONE_NEWNET`` from <sched.h>: the namespace type ``setns`` enters
CLONE_NEWNET = 0x40000000
#: the prefix of the names ``NetNs`` makes up
DEFAULT_PREFIX = "ira"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_STALE = re.compile(r"(?P<prefix>.+)-(?P<pid>\d+)-(?P<n>\d+)")
_serial = itertools.count()

# a redirection target of ``subprocess``: a file descriptor, a file, DEVNULL/PIPE, or None
_Redirect = int | IO[Any] | None


def _setns(fd: int, name: str) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    setns = getattr(os, "setns", None)  # Python 3.12+
    try:
        if setns is not None:
            setns(fd, CLONE_NEWNET)
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise TransportError(
                f"entering network namespace {name} needs CAP_SYS_ADMIN: run as root"
            ) from exc
        raise TransportError(f"cannot enter network namespace {name}: {exc.strerror}") from exc


def netns_path(netns: str | os.PathLike[str]) -> Path:
    """The file of a namespace given by name (under /run/netns) or by path."""
    path = Path(netns)
    return path if path.is_absolute() else NETNS_RUN_DIR / path


def run_in_netns(netns: str | os.PathLike[str], fn: Callable[[], T]) -> T:
    """Run ``fn`` on a new thread inside the network namespace ``netns`` (name or path).

    Returns what ``fn`` returns, or raises what it raised.  The calling thread
    stays where it is.
    """
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no network namespace {netns}: create it first (ip netns add {netns})"
        ) from exc
    except OSError as exc:
        raise TransportError(f"cannot open network namespace {path}: {exc.strerror}") from exc
    result: list[T] = []
    failure: list[BaseException] = []

    def inside() -> None:
        try:
            _setns(fd, str(netns))
            result.append(fn())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    try:
        worker = threading.Thread(target=inside, name=f"netns-{path.name}", daemon=True)
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    if failure:
        raise failure[0]
    return result[0]


def list_netns() -> list[str]:
    """Names of the namespaces ``ip netns`` knows."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _ip(args: Sequence[str], *, timeout_s: float = 10.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as exc:
        raise TransportError("the ip command is missing: install iproute2") from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(name: str) -> list[int]:
    done = _ip(["netns", "pids", name])
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _delete(name: str) -> None:
    """Kill what still runs in ``name``, then delete it (an absent namespace is fine)."""
    for pid in _netns_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done = _ip(["netns", "del", name])
    if done.returncode != 0 and (NETNS_RUN_DIR / name).exists():
        raise TransportError(f"cannot delete network namespace {name}: {done.stderr.strip()}")


def remove_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete ``<prefix>-<pid>-<n>`` namespaces whose process is gone; return their names."""
    removed = []
    for name in list_netns():
        match = _STALE.fullmatch(name)
        if match is None or match["prefix"] != prefix or _pid_alive(int(match["pid"])):
            continue
        _delete(name)
        removed.append(name)
        log.info("removed stale network namespace %s", name)
    return removed


class NetNs:
    """A named network namespace for the life of a ``with`` block (see the module docstring)."""

    def __init__(self, name: str | None = None, *, prefix: str = DEFAULT_PREFIX) -> None:
        """``name``: exactly this name; ``None``: a new ``<prefix>-<pid>-<n>``."""
        if name is not None and not _NAME.fullmatch(name):
            raise ConfigError(f"bad network namespace name {name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not _NAME.fullmatch(prefix):
            raise ConfigError(f"bad network namespace prefix {prefix!r}")
        self._fixed_name = name
        self._prefix = prefix
        self._name = name or ""
        self._created = False
        self._processes: list[subprocess.Popen[bytes]] = []

    # -- lifecycle --

    def __enter__(self) -> NetNs:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.delete()
        except TransportError:
            if exc is None:
                raise
            log.warning("network namespace %s left behind", self._name, exc_info=True)

    def create(self) -> None:
        """Create the namespace and bring its loopback up."""
        if self._created:
            return
        for _ in range(100):
            name = self._fixed_name or f"{self._prefix}-{os.getpid()}-{next(_serial)}"
            done = _ip(["netns", "add", name])
            if done.returncode == 0:
                break
            if "exists" in done.stderr and self._fixed_name is None:
                continue
            hint = "run as root" if os.geteuid() != 0 else "choose another name or delete it"
            raise TransportError(
                f"cannot create network namespace {name}: {done.stderr.strip()} ({hint})"
            )
        else:
            raise TransportError("no free network namespace name: run remove_stale()")
        self._name = name
        self._created = True
        log.info("network namespace %s created", name)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        """Stop the processes started here, kill any other left inside, delete the namespace.

        Idempotent; safe after a failed ``create``.
        """
        if not self._created:
            return
        try:
            for proc in self._processes:
                _stop(proc)
        finally:
            self._processes.clear()
            _delete(self._name)
            self._created = False
            log.info("network namespace %s deleted", self._name)

    # -- properties --

    @property
    def name(self) -> str:
        if not self._created:
            raise TransportError("the network namespace does not exist: use it in a with block")
        return self._name

    @property
    def path(self) -> Path:
        """The namespace's file, for ``setns`` (``/run/netns/<name>``)."""
        return NETNS_RUN_DIR / self.name

    def exists(self) -> bool:
        return self._created and self.path.exists()

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"NetNs({self._name!r}{'' if self._created else ', deleted'})"

    # -- running things inside --

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped in ``ip netns exec``."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout_s: float = 30.0,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside and wait for it; ``TransportError`` if it fails and ``check``."""
        try:
            done = subprocess.run(
                self.command(argv),
                input=input_bytes,
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportError(f"{argv[0]} in {self.name} took over {timeout_s} s") from exc
        if check and done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            raise TransportError(
                f"{' '.join(argv)} in {self.name} failed with status {done.returncode}"
                + (f": {err[-1]}" if err else "")
            )
        return done

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdin: _Redirect = subprocess.DEVNULL,
        stdout: _Redirect = None,
        stderr: _Redirect = None,
    ) -> subprocess.Popen[bytes]:
        """Start a command inside; it is stopped (if still running) when the namespace goes."""
        proc = subprocess.Popen(self.command(argv), stdin=stdin, stdout=stdout, stderr=stderr)
        self._processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process inside the namespace."""
        return _netns_pids(self.name)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a thread inside the namespace (see ``run_in_netns``)."""
        return run_in_netns(self.path, fn)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 1.0) -> None:
    """Terminate a process, kill it after ``grace_s``, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
