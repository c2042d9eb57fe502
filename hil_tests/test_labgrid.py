"""The suite on a labgrid environment: labgrid's own plugin reads it, the rig takes its ports.

Each test writes an environment file whose two serial resources are the ends of a
virtual null-modem (as ``RawSerialPort``s, or one exported by ser2net as a
``NetworkSerialPort``, what a labgrid exporter serves), then runs part of this
suite with ``--lg-env`` in the venv that has labgrid (``make test`` builds
``.venv-labgrid``: labgrid brings its own fork of pyserial).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ira.tools.nullmodem import NullModem
from ira.tools.ser2net import Ser2Net

ROOT = Path(__file__).resolve().parents[1]
LG_PYTEST = ROOT / ".venv-labgrid" / "bin" / "pytest"
#: what the inner run runs: the cable test and a ping, short variants
INNER = [
    "hil_tests/test_cable.py",
    "hil_tests/test_bus_discovery.py",
    "-k",
    "short and (ping or random)",
]


def _require(ser2net: bool = False) -> None:
    reason = None
    if not LG_PYTEST.exists():
        reason = "needs .venv-labgrid (make test builds it: labgrid and its pytest plugin)"
    elif ser2net and shutil.which("ser2net") is None:
        reason = "needs ser2net (Debian: ser2net; make test installs it as root)"
    if reason is None:
        return
    if os.environ.get("IRA_REQUIRE_ROOT_TESTS") == "1":
        pytest.fail(f"IRA_REQUIRE_ROOT_TESTS=1 but {reason}")
    pytest.skip(reason)


def _resource(kind: str, name: str, fields: dict[str, object]) -> str:
    lines = [f"      - {kind}:", f"          name: {name}"]
    lines += [f"          {k}: {v}" for k, v in fields.items()]
    return "\n".join(lines)


def _run_suite(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IRA_LINK_")}
    environ["IRA_NATIVE"] = "0"  # the labgrid venv has the Python build
    return subprocess.run(
        [str(LG_PYTEST), "-p", "no:cacheprovider", "-o", "addopts=", *args,
         "--lg-env", str(env_file)],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("host_port", ["RawSerialPort", "NetworkSerialPort"])
def test_the_suite_runs_on_a_labgrid_environment(tmp_path: Path, host_port: str) -> None:
    _require(ser2net=host_port == "NetworkSerialPort")
    env_file = tmp_path / "env.yaml"
    with contextlib.ExitStack() as stack:
        cable = stack.enter_context(NullModem())
        host: dict[str, object] = {"port": cable.path_b, "speed": 115200}
        if host_port == "NetworkSerialPort":
            net = stack.enter_context(Ser2Net(cable.path_b))
            host = {"host": net.host, "port": net.port, "speed": 115200, "protocol": "rfc2217"}
        env_file.write_text(
            "targets:\n  main:\n    resources:\n"
            + _resource("RawSerialPort", "board", {"port": cable.path_a, "speed": 115200})
            + "\n"
            + _resource(host_port, "host", host)
            + "\n"
        )
        done = _run_suite(env_file, *INNER)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    header = f"ira rig: labgrid {env_file}: A (board) RawSerialPort of target 'main'"
    assert header in done.stdout
    assert f"B (host) {host_port} of target 'main'" in done.stdout
    assert " 2 passed" in done.stdout


def test_an_environment_without_two_ports_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    _require()
    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        "targets:\n  main:\n    resources:\n"
        + _resource("RawSerialPort", "board", {"port": "/dev/null", "speed": 115200})
        + "\n"
    )
    done = _run_suite(env_file, *INNER)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [
        f"ERROR: labgrid environment {env_file} has 1 serial port resource(s) (RawSerialPort, "
        "USBSerialPort, NetworkSerialPort); the ira HIL suite needs two, the board's end and "
        "the host's: add them, named 'board' and 'host'"
    ], done.stdout[-2000:] + done.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited"
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port}")


def test_the_suite_runs_on_a_place_of_a_coordinator(tmp_path: Path) -> None:
    """A coordinator and an exporter on loopback; the exporter serves the null-modem's two
    ends through ser2net, the place is acquired, and the suite runs on it remotely."""
    _require(ser2net=True)
    bindir = LG_PYTEST.parent
    port = _free_port()
    coordinator = f"127.0.0.1:{port}"
    environ = {**os.environ, "LG_COORDINATOR": coordinator}
    client = [str(bindir / "labgrid-client"), "-p", "ira-hil"]
    with contextlib.ExitStack() as stack:
        cable = stack.enter_context(NullModem())

        def start(argv: list[str], name: str) -> subprocess.Popen[bytes]:
            log = stack.enter_context((tmp_path / f"{name}.log").open("wb"))
            proc = subprocess.Popen(argv, cwd=tmp_path, env=environ, stdout=log, stderr=log)

            def stop() -> None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

            stack.callback(stop)
            return proc

        coord = start([str(bindir / "labgrid-coordinator"), "--listen", coordinator], "coordinator")
        _wait_listening(port, coord, "labgrid-coordinator")
        (tmp_path / "exporter.yaml").write_text(
            "rig:\n"
            f"  board:\n    cls: RawSerialPort\n    port: {cable.path_a}\n    speed: 115200\n"
            f"  host:\n    cls: RawSerialPort\n    port: {cable.path_b}\n    speed: 115200\n"
        )
        start(
            [str(bindir / "labgrid-exporter"), "-c", coordinator, "--name", "exp1",
             "--hostname", "127.0.0.1", str(tmp_path / "exporter.yaml")],
            "exporter",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = subprocess.run(
                [*client[:1], "resources"], env=environ, capture_output=True, text=True
            )
            if shown.stdout.count("NetworkSerialPort") >= 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the exporter's ports never reached the coordinator")
        for verb in (["create"], ["add-match", "exp1/rig/*"], ["acquire"]):
            subprocess.run([*client, *verb], env=environ, check=True, capture_output=True)
        stack.callback(
            subprocess.run, [*client, "release"], env=environ, capture_output=True, check=False
        )
        env_file = tmp_path / "env.yaml"
        env_file.write_text(
            "targets:\n  main:\n    resources:\n      RemotePlace:\n        name: ira-hil\n"
        )
        done = _run_suite(
            env_file, "hil_tests/test_bus_discovery.py", "-k", "short and ping",
            "--lg-coordinator", coordinator,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "A (board) NetworkSerialPort of target 'main' -> rfc2217://127.0.0.1:" in done.stdout
    assert " 1 passed" in done.stdout
