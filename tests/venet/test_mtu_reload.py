"""An MTU changed on a running board reaches both interfaces (over ptys, in-process endpoints).

``BoardService`` with a ``virtio-net`` device bridged by ``BoardNet`` to an
endpoint, ``HostClient`` with ``HostNet`` giving its driver another: a
profile reload that changes the device's ``mtu`` option (what SIGHUP does in
``ira board serve``) sets the board's interface MTU, the device is re-added
with it, and the host's interface takes it when the device is ready again;
frames of the new size then cross.  With the board's MTU fixed (``--mtu``)
the reload changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import pytest

from ira.runtime import BoardService, HostClient
from ira.runtime.endpoint import FrameEndpoint
from ira.runtime.network import BoardNet, HostNet
from ira.runtime.profile import DeviceSpec, Profile
from ira.tools.nullmodem import NullModem
from ira.wire.venet import HEADER

pytestmark = pytest.mark.timeout(20)

ETH = bytes.fromhex("02000000004202000000000108004500")


def profile(mtu: int) -> Profile:
    return Profile("mtu-board", (DeviceSpec("net0", "virtio-net", (("mtu", mtu),)),))


def frame(size: int) -> bytes:
    """A plain frame with a virtio-net header, ``size`` bytes after the Ethernet header."""
    return HEADER.pack(0, 0, 0, 0, 0, 0, 0) + ETH + bytes(size - 2)


def wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Rig:
    def __init__(self, stack: contextlib.ExitStack, *, fixed_mtu: bool = False) -> None:
        cable = stack.enter_context(NullModem())
        self.board_stack, board_port = FrameEndpoint.pair(
            vnet_hdr=True, names=("board-stack", "board0")
        )
        self.host_stack, self.host_port = FrameEndpoint.pair(
            vnet_hdr=True, names=("host-stack", "host0")
        )
        boards: list[BoardService] = []
        self.board_net = BoardNet(
            board_port, lambda fn: boards[0].runtime.post(fn), fixed_mtu=fixed_mtu
        )
        stack.callback(self.board_net.close)
        self.host_net = HostNet(lambda settings: self.host_port, vnet_hdr=True)
        stack.callback(self.host_net.close)
        self.board = BoardService(
            cable.path_a,
            profile(1500),
            on_event=self.board_net.on_event,
            net_port=self.board_net.port_for,
        )
        boards.append(self.board)
        self.host = HostClient(
            cable.path_b,
            on_event=lambda client, event: self.host_net.on_event(event),
            virtio_clients=self.host_net.clients(),
        )
        self.host_net.bind(lambda fn: self.host.runtime.post(fn))
        stack.enter_context(self.board)
        stack.enter_context(self.host)
        assert wait(lambda: self.host_net.carrier and self.board_net.loop_port.carrier)

    @property
    def board_port(self) -> FrameEndpoint:
        port = self.board_net.loop_port.port
        assert isinstance(port, FrameEndpoint)
        return port

    def reloaded(self, mtu: int) -> None:
        """Reload the profile with ``mtu``; wait until the host drives the re-added device."""
        before = self.host_net.client
        change = self.board.apply_profile(profile(mtu))
        assert (change.added, change.removed) == (("net0",), ("net0",))
        assert wait(lambda: self.host_net.client is not before and self.host_net.carrier)

    def crosses(self, size: int) -> bool:
        """A frame of ``size`` bytes after the Ethernet header goes each way."""
        for stack, port in ((self.board_stack, self.board_port), (self.host_stack, self.host_port)):
            stack.set_mtu(port.mtu)  # each stack's side of its interface
        sent = frame(size)
        self.board_stack.write_frame(sent)
        self.host_stack.write_frame(sent)
        got: list[bytes] = []

        def both() -> bool:
            for stack in (self.board_stack, self.host_stack):
                if (f := stack.read_frame()) is not None:
                    got.append(f)
            return len(got) == 2

        return wait(both) and got == [sent, sent]


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as s:
        yield s


def test_a_reloaded_mtu_reaches_both_interfaces(
    stack: contextlib.ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ira.runtime.network")
    rig = Rig(stack)
    assert rig.crosses(1400)
    rig.reloaded(9000)
    assert rig.board_port.mtu == 9000 and rig.host_port.mtu == 9000
    assert rig.crosses(8900)
    client = rig.host_net.client
    assert client is not None and client.settings is not None and client.settings.mtu == 9000
    messages = [r.getMessage() for r in caplog.records]
    assert "board0: MTU 1500 -> 9000 (net0's)" in messages
    assert "host0: MTU 1500 -> 9000 (the device's)" in messages


def test_a_fixed_board_mtu_is_kept_and_said_so(
    stack: contextlib.ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ira.runtime.network")
    rig = Rig(stack, fixed_mtu=True)
    rig.reloaded(9000)
    assert rig.board_port.mtu == 1500 and rig.host_port.mtu == 1500
    assert rig.crosses(1400)
    assert "board0 keeps MTU 1500 (--mtu); net0's mtu 9000 is not applied" in [
        r.getMessage() for r in caplog.records
    ]
