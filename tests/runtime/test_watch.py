"""Which boards a directory of stable names holds, and the link spec of each."""

from __future__ import annotations

import os
import random
import stat
import time
from pathlib import Path

import pytest

from ira.errors import SessionReset, TransportError
from ira.runtime import HostService
from ira.runtime.watch import (
    USB_DEVICE_MAJOR,
    BoardDirectory,
    BoardFollower,
    BoardSeen,
    Followed,
    link_spec,
)
from ira.tools.fleet import Fleet


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    return master, path


def test_names_of_ttys_come_and_go_as_their_ports_do(tmp_path: Path) -> None:
    boards = BoardDirectory(tmp_path / "ira")
    assert boards.scan().added == ()  # no directory yet: nothing plugged in
    (tmp_path / "ira").mkdir()
    master, pts = _pty()
    (tmp_path / "ira" / "bench-a").symlink_to(pts)
    (tmp_path / "ira" / "notes.txt").write_text("not a device")
    (tmp_path / "ira" / ".hidden").symlink_to(pts)
    changes = boards.scan()
    assert changes.added == (BoardSeen("bench-a", str(tmp_path / "ira" / "bench-a")),)
    assert changes.removed == ()
    assert boards.scan().added == boards.scan().removed == ()
    os.close(master)  # the pty goes away: the name dangles, as an unplugged adapter's does
    changes = boards.scan()
    assert changes.removed == (BoardSeen("bench-a", str(tmp_path / "ira" / "bench-a")),)
    assert boards.present == []
    master, pts = _pty()  # plugged in again, perhaps on another tty
    (tmp_path / "ira" / "bench-a").unlink()
    (tmp_path / "ira" / "bench-a").symlink_to(pts)
    assert [b.name for b in boards.scan().added] == ["bench-a"]
    os.close(master)


@pytest.mark.root
def test_a_usb_device_node_becomes_its_usb_spec(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node (mknod)")
    sysfs = tmp_path / "sys"
    device = sysfs / "dev" / "char" / f"{USB_DEVICE_MAJOR}:7"
    device.mkdir(parents=True)
    (device / "idVendor").write_text("1d6b\n")
    (device / "idProduct").write_text("0104\n")
    (device / "serial").write_text("board-7\n")
    node = tmp_path / "007"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(USB_DEVICE_MAJOR, 7))
    (tmp_path / "ira").mkdir()
    (tmp_path / "ira" / "board-7").symlink_to(node)
    assert link_spec(tmp_path / "ira" / "board-7", sysfs) == "usb://1d6b:0104/board-7"
    (device / "serial").unlink()  # a gadget without a serial number
    assert link_spec(tmp_path / "ira" / "board-7", sysfs) == "usb://1d6b:0104"
    (device / "idVendor").unlink()  # the device went away under our feet
    assert link_spec(tmp_path / "ira" / "board-7", sysfs) is None


class FakeLinks:
    """A host service as the follower sees it: links added and removed, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def add(self, link: str) -> FakeClient:
        self.log.append(f"add {link}")
        return FakeClient(link)

    def remove(self, client: FakeClient) -> None:
        self.log.append(f"remove {client.name}")

    def serving(self, client: FakeClient) -> bool:
        return not client.failed


class FakeClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.failed = False


def test_a_follower_keeps_a_gone_boards_link_for_a_while_then_forgets_it(tmp_path: Path) -> None:
    names = tmp_path / "ira"
    names.mkdir()
    links = FakeLinks()
    follower = BoardFollower(BoardDirectory(names), links, forget_after_s=15.0)
    a_master, a_pts = _pty()
    b_master, b_pts = _pty()
    (names / "a").symlink_to(a_pts)
    (names / "b").symlink_to(b_pts)
    done = follower.poll(now=0.0)
    assert [b.name for b in done.added] == ["a", "b"]
    assert links.log == [f"add {names / 'a'}", f"add {names / 'b'}"]
    (names / "a").unlink()  # a cable pulled: udev removes the name
    done = follower.poll(now=1.0)
    assert [b.name for b in done.gone] == ["a"] and done.forgotten == ()
    assert follower.poll(now=5.0) == Followed()  # still waited for: its link is kept
    (names / "a").symlink_to(a_pts)  # back within the timeout: the same link resumes
    done = follower.poll(now=6.0)
    assert [b.name for b in done.back] == ["a"] and done.added == ()
    assert len(links.log) == 2
    os.close(b_master)  # b's adapter unplugged (its name dangles) and stays away
    assert [b.name for b in follower.poll(now=10.0).gone] == ["b"]
    assert follower.poll(now=24.9).forgotten == ()
    done = follower.poll(now=25.0)
    assert [b.name for b in done.forgotten] == ["b"]
    assert links.log[-1] == f"remove {names / 'b'}"
    assert sorted(follower.served) == ["a"]
    b_master, b_pts = _pty()  # b comes back long after: a new link, a new session
    (names / "b").unlink()
    (names / "b").symlink_to(b_pts)
    assert [b.name for b in follower.poll(now=40.0).added] == ["b"]
    assert links.log[-1] == f"add {names / 'b'}"
    os.close(a_master)
    os.close(b_master)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _soak_requested(request: pytest.FixtureRequest) -> bool:
    return bool(os.environ.get("IRA_SOAK")) or "slow" in (request.config.option.markexpr or "")


@pytest.mark.parametrize(
    "minutes", [pytest.param(0.5, id="short"), pytest.param(5.0, id="5min", marks=pytest.mark.slow)]
)
def test_a_host_follows_16_boards_plugged_and_unplugged_at_random(
    tmp_path: Path, request: pytest.FixtureRequest, minutes: float
) -> None:
    """16 boards on null-modems, their host ports pulled and put back at random (names
    going and coming as udev's would): every board present answers DEVCALLs; memory and
    descriptors stay flat."""
    if minutes > 1 and not _soak_requested(request):
        pytest.skip("soak variant: run by make soak (IRA_SOAK=1) or -m slow")
    count = 16
    names = tmp_path / "ira"
    rng = random.Random(16)
    with Fleet(count, names) as fleet, HostService([]) as service:
        follower = BoardFollower(BoardDirectory(names), service, forget_after_s=15.0)

        def all_plugged_and_answering() -> tuple[int, int]:
            """Every board plugged in and answering; then the process's RSS and fds."""
            for index in range(count):
                if not fleet.plugged(index):
                    fleet.plug(index)
            follower.poll(now=time.monotonic())
            for name, client in follower.served.items():
                try:
                    reply = client.ping(name.encode(), timeout_s=15.0)
                except SessionReset:
                    reply = client.ping(name.encode(), timeout_s=15.0)
                assert reply.payload == name.encode()
            return _rss_kib(), _fds()

        follower.poll(now=time.monotonic())
        assert len(service.clients) == count
        for client in service.clients:
            client.wait_ready(20.0)
        calls = resets = 0
        end = time.monotonic() + minutes * 60
        round_no = 0
        while time.monotonic() < end:
            round_no += 1
            if round_no == 5:  # warmed up: the baseline, every board plugged in
                rss_before, fds_before = all_plugged_and_answering()
            for index in rng.sample(range(count), 3):  # a few cables pulled or put back
                if fleet.plugged(index):
                    fleet.unplug(index)
                else:
                    fleet.plug(index)
            follower.poll(now=time.monotonic())
            time.sleep(0.3)
            follower.poll(now=time.monotonic())
            for name, client in follower.served.items():
                if not (names / name).is_symlink():
                    continue
                try:
                    reply = client.ping(name.encode(), timeout_s=10.0)
                except SessionReset:
                    # a board back after its session timed out restarts the session under a
                    # call in flight: the call fails as the spec says, the next one is answered
                    resets += 1
                    reply = client.ping(name.encode(), timeout_s=10.0)
                assert reply.payload == name.encode(), name
                calls += 1
        assert round_no > 5 and calls > count
        assert resets < calls / 4, (resets, calls)
        rss_after, fds_after = all_plugged_and_answering()
        assert fds_after - fds_before <= 4, (fds_before, fds_after)
        assert rss_after - rss_before < 10 * 1024, (rss_before, rss_after)  # KiB
        # links only for boards present or gone less than forget_after_s
        assert len(service.clients) <= count


class RefusingLinks(FakeLinks):
    """A host service whose link to one board cannot be started (its port is broken)."""

    def add(self, link: str) -> FakeClient:
        if link.endswith("broken"):
            raise TransportError(f"cannot open serial port {link}: [Errno 5] Input/output error")
        return super().add(link)


def test_a_board_that_cannot_be_served_does_not_stop_the_others(tmp_path: Path) -> None:
    names = tmp_path / "ira"
    names.mkdir()
    links = RefusingLinks()
    follower = BoardFollower(BoardDirectory(names), links, forget_after_s=15.0)
    masters, ptys = [], []
    for name in ("broken", "good"):
        master, pts = _pty()
        masters.append(master)
        ptys.append(pts)
        (names / name).symlink_to(pts)
    done = follower.poll(now=0.0)
    assert [b.name for b in done.added] == ["good"]
    assert [(b.name, "Input/output error" in str(e)) for b, e in done.failed] == [("broken", True)]
    assert follower.poll(now=1.0) == Followed()  # said once, not tried at every look
    (names / "broken").unlink()  # replugged: tried again
    follower.poll(now=2.0)
    (names / "broken").symlink_to(ptys[0])
    assert [b.name for b, _ in follower.poll(now=3.0).failed] == ["broken"]
    for master in masters:
        os.close(master)


def test_a_board_back_whose_link_had_failed_gets_a_new_one(tmp_path: Path) -> None:
    names = tmp_path / "ira"
    names.mkdir()
    links = FakeLinks()
    follower = BoardFollower(BoardDirectory(names), links, forget_after_s=15.0)
    master, pts = _pty()
    (names / "a").symlink_to(pts)
    follower.poll(now=0.0)
    follower.served["a"].failed = True  # its link stopped on an error while it was away
    (names / "a").unlink()
    follower.poll(now=1.0)
    (names / "a").symlink_to(pts)
    done = follower.poll(now=2.0)
    assert [b.name for b in done.added] == ["a"] and done.back == ()
    assert links.log == [f"add {names / 'a'}", f"remove {names / 'a'}", f"add {names / 'a'}"]
    assert not follower.served["a"].failed
    os.close(master)
