"""A hostile peer against a running ``ira board serve`` or ``ira host serve``.

``python -m ira.tools.fuzzwire {board,host} [--duration S] [--psk-file F]``
starts the target as its own process on one end of a virtual null-modem (real
ptys) and takes the other end.  It speaks valid framing and CRCs (and the MAC,
with ``--psk-file``) and mutates everything above, using the wire modules'
construct schemas as the grammar: the fields of each message (the ``SPEC``
examples, one field at a time set to a boundary or a random value of its
width), or the encoded bytes (flipped, cut, grown).  The classes of input:

``hello``        HELLO / HELLO_ACK with mutated fields (versions, limits, epochs)
``data_header``  DATA frames with mutated headers (tag, seq, ack, window, tx, echo)
``ack``          ACK frames with mutated fields and SACK blocks
``channel``      DATA frames of the session on channels 2 and 3
``varint``       DATA frames at the stream's start whose message length prefix
                 is overlong, huge or cut short
``bus``          bus messages (every message of ``ira.wire.bus``) mutated
``devcall``      DEVCALLs to the devices the target announced, payloads mutated
``virtio``       virtio requests (``ira.wire.virtio``) in DEVCALLs to virtio devices
``junk``         messages of random bytes

A batch lasts ``--batch`` seconds.  After every batch the hostile peer lets go
of the line and a legitimate ira peer takes it (a ``HostClient`` pinging the
board's echo device; a ``BoardService`` the host must discover), and the
invariants are checked: the target is alive, serves the legitimate peer within
``--answer-within`` seconds, its RSS stays within ``--rss-mb`` of what it was
after the first batch, and its open descriptors within ``--fds``.  A report
(inputs tried per class, checks, RSS and fds) is printed at the end; the exit
status is 0 when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ira.link.config import LinkConfig
from ira.link.core import Link, LinkState
from ira.link.events import Channel, MessageReceived
from ira.link.framing import encode_frames, encode_varint
from ira.runtime import BoardService, HostClient
from ira.runtime.psk import link_config, read_psk
from ira.tools.nullmodem import NullModem
from ira.transports import Transport, open_transport
from ira.wire import MessageSpec, WireSpec
from ira.wire import bus as wbus
from ira.wire import link as wlink
from ira.wire import virtio as wvirtio

CLASSES = (
    "hello",
    "data_header",
    "ack",
    "channel",
    "varint",
    "bus",
    "devcall",
    "virtio",
    "junk",
)
#: inputs that provoke a known finding, which ``--avoid`` leaves out while it is open
KNOWN = {
    "version": "a HELLO whose version range does not meet this end's (issue 16, finding 1)",
    "overlong": "a message length prefix longer than 5 bytes (issue 16, finding 1)",
}
#: a profile with a virtio device too, so that virtio payloads reach a device
BOARD_PROFILE = """\
board = "fuzz-board"
[[device]]
type = "board-info"
[[device]]
type = "echo"
[[device]]
type = "counter"
[[device]]
type = "ring-loopback"
[[device]]
type = "virtio-rng"
"""


class Mutator:
    """Mutations of encoded messages, guided by their construct schemas."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def number(self, width: int) -> int:
        top = (1 << (8 * width)) - 1
        return self.rng.choice((0, 1, 2, top, top - 1, top >> 1, self.rng.randint(0, top)))

    def data(self, data: bytes) -> bytes:
        """Byte-level: flip, cut, grow, splice."""
        rng, out = self.rng, bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0 and out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            elif op == 1 and out:
                del out[rng.randrange(len(out)) :]
            elif op == 2:
                out += rng.randbytes(rng.choice((1, 7, 64, 300, 5000)))
            elif op == 3 and out:
                out[rng.randrange(len(out))] = rng.choice((0, 0x7F, 0x80, 0xFF))
            else:
                at = rng.randrange(len(out) + 1)
                out[at:at] = rng.randbytes(rng.randint(1, 16))
        return bytes(out)

    def field(self, spec: WireSpec, msg: MessageSpec) -> bytes:
        """One field of the message's example set to a boundary or random value of
        its width, encoded; the example's bytes mutated when that does not encode."""
        example: Any = msg.example
        widths = {}
        for sc in msg.schema.subcons:
            with contextlib.suppress(Exception):
                if sc.name:
                    widths[sc.name] = sc.sizeof()
        names = [f.name for f in dataclasses.fields(example)] if _is_dataclass(example) else []
        if names:
            name = self.rng.choice(names)
            value = getattr(example, name)
            new: object
            if isinstance(value, bool):
                new = not value
            elif isinstance(value, int):
                new = self.number(widths.get(name, 4))
            elif isinstance(value, bytes):
                new = self.rng.randbytes(self.rng.choice((0, 1, 255, 256, 4096, 70000)))
            elif isinstance(value, str):
                new = "x" * self.rng.choice((0, 1, 255, 256, 5000))
            elif isinstance(value, tuple):
                new = value * self.rng.choice((0, 2, 40))
            else:
                new = value
            with contextlib.suppress(Exception):
                return spec.encode(dataclasses.replace(example, **{name: new}))
        return self.data(spec.encode(example))


def _is_dataclass(obj: object) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _proc(pid: int) -> tuple[int, int]:
    """RSS (bytes) and open descriptors of a process."""
    rss = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Target:
    """The process under test, its output read by a thread."""

    def __init__(self, argv: list[str], pythonpath: str | None = None) -> None:
        env = dict(os.environ)
        if pythonpath is not None:  # another checkout of ira under test
            env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ira", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(2)
        return self.proc.returncode


class HostilePeer:
    """A link core (its session is the fuzzer's foothold) plus raw frames around it."""

    def __init__(self, transport: Transport, psk: bytes | None, rng: random.Random) -> None:
        self.transport = transport
        self.psk = psk
        self.key = None if psk is None else wlink.mac_key(psk)
        self.rng = rng
        self.link = Link(LinkConfig(psk=psk), rng=random.Random(rng.getrandbits(64)), now=_now())
        self.received: list[bytes] = []

    def pump(self, until: Callable[[], bool], timeout_s: float) -> bool:
        limit = _now() + timeout_s
        link = self.link
        while not until():
            now = _now()
            if now > limit or link.state is LinkState.CLOSED:
                return False
            for chunk in link.data_to_send(now=now):
                self.write(chunk)
            data = self.transport.recv(0.005)
            now = _now()
            if data:
                with contextlib.suppress(Exception):  # the target's bytes are not ours to trust
                    link.receive_data(data, now=now)
            deadline = link.next_deadline()
            if deadline is not None and deadline <= now:
                link.handle_timeout(now=now)
            while (event := link.next_event()) is not None:
                if isinstance(event, MessageReceived) and len(self.received) < 1000:
                    self.received.append(event.payload)
        return True

    def write(self, data: bytes) -> None:
        limit = _now() + 2.0
        while data and _now() < limit:
            data = data[self.transport.send(data, 0.5) :]

    def up(self) -> bool:
        return self.link.state is LinkState.UP

    def epochs(self) -> tuple[int, int]:
        st = self.link.statistics()
        return st.local_epoch, st.peer_epoch or 0

    def inject(self, frame: bytes, *, hello: wlink.Hello | None = None) -> None:
        """A frame (CRC included) as this end would send it: with a MAC when keyed
        (now and then without one, which must be refused)."""
        if self.key is not None and self.rng.random() < 0.9:
            if hello is not None:
                nonces = (self.rng.getrandbits(64), self.rng.getrandbits(64))
                frame = wlink.authenticate(frame, self.key, hello.epoch, hello.peer_epoch, nonces)
            else:
                local, peer = self.epochs()
                frame = wlink.authenticate(frame, self.key, local, peer)
        self.write(encode_frames([frame]))

    def send(self, message: bytes, channel: Channel = Channel.CONTROL) -> None:
        """Queue a message; wait (a little) only when many are not yet acknowledged."""
        if self.link.state is not LinkState.CLOSED:
            self.link.send_message(message, channel)
            self.pump(lambda: self.outstanding() < 16, 0.05)

    def outstanding(self) -> int:
        st = self.link.statistics()
        return st.messages_queued - st.messages_acked


def _now() -> float:
    return time.monotonic()


class Fuzzer:
    def __init__(
        self, kind: str, psk: bytes | None, seed: int, avoid: frozenset[str] = frozenset()
    ) -> None:
        self.kind = kind
        #: known findings not to provoke (see KNOWN)
        self.avoid = avoid
        #: the classes of input sent within a session (``varint`` starts sessions of its own)
        self.classes = [c for c in CLASSES if c != "varint"]
        self.only = set(CLASSES)
        #: the hostile end of the cable, open during a batch
        self.transport: Transport | None = None
        self.psk = psk
        self.rng = random.Random(seed)
        self.mutate = Mutator(self.rng)
        self.tried: Counter[str] = Counter()
        self.call_id = 1

    def restrict(self, classes: set[str]) -> None:
        """Send only these classes of input."""
        self.only = classes
        self.classes = [c for c in CLASSES if c != "varint" and c in classes] or ["junk"]

    def peer(self) -> HostilePeer | None:
        assert self.transport is not None
        peer = HostilePeer(self.transport, self.psk, self.rng)
        return peer if peer.pump(peer.up, 2.0) else None

    def batch(self, seconds: float) -> None:
        end = _now() + seconds
        while _now() < end:
            peer = self.peer()
            if peer is None:
                self.tried["no_session"] += 1
                continue
            handles = self._open_devices(peer)
            session_end = min(end, _now() + self.rng.uniform(0.2, 1.0))
            while _now() < session_end and peer.link.state is not LinkState.CLOSED:
                self._one(peer, handles)
            if "varint" in self.only:
                self._raw_stream(self.peer())

    def _open_devices(self, peer: HostilePeer) -> dict[str, list[int]]:
        """BUS_HELLO and DEVOPEN every device announced (as a host would): the
        handles by device type.  On a host target: a board's greeting instead."""
        if self.kind == "host":
            welcome = wbus.SPEC.messages[1].example
            peer.send(wbus.encode(welcome))  # type: ignore[arg-type]
            return {}
        peer.send(wbus.encode(wbus.BusHello(1, 1)))
        peer.pump(lambda: False, 0.1)
        types = {}
        for raw in peer.received:
            with contextlib.suppress(Exception):
                msg = wbus.decode(raw)
                if isinstance(msg, wbus.DevAdd):
                    types[msg.device_id] = msg.type
        for device_id in types:
            peer.send(wbus.encode(wbus.DevOpen(self._call(), device_id, 1)))
        peer.pump(lambda: False, 0.1)
        handles: dict[str, list[int]] = {}
        for raw in peer.received:
            with contextlib.suppress(Exception):
                msg = wbus.decode(raw)
                if isinstance(msg, wbus.DevOpenReply) and msg.status == 0:
                    handles.setdefault("any", []).append(msg.handle)
        # which handle is which device does not matter to a fuzzer: every payload
        # goes to every kind of device now and then
        return handles

    def _call(self) -> int:
        self.call_id = (self.call_id + 1) & 0xFFFFFFFF
        return self.call_id

    def _one(self, peer: HostilePeer, handles: dict[str, list[int]]) -> None:
        rng = self.rng
        kind = rng.choice(self.classes)
        self.tried[kind] += 1
        local, peer_epoch = peer.epochs()
        tag = (local ^ peer_epoch) & 0xFFFF
        if kind == "hello":
            ex = rng.choice(wlink.SPEC.messages[:2]).example
            assert isinstance(ex, wlink.Hello)
            fields = ex._asdict()
            name = rng.choice([f for f in wlink.Hello._fields if f != "ack"])
            fields[name] = self.mutate.number(8 if "epoch" in name else 4) & {
                "version_min": 0xFF,
                "version_max": 0xFF,
                "keepalive_ms": 0xFFFF,
            }.get(name, (1 << 64) - 1)
            if rng.random() < 0.5:
                fields["epoch"], fields["peer_epoch"] = local, peer_epoch
            if name.startswith("version") or rng.random() < 0.3:
                fields["epoch"] = rng.getrandbits(64)
            hello = wlink.Hello(**fields)
            if "version" in self.avoid and max(hello.version_min, 1) > min(hello.version_max, 1):
                hello = hello._replace(version_min=1, version_max=1)
            with contextlib.suppress(Exception):
                peer.inject(wlink.encode_hello(hello), hello=hello)
        elif kind in ("data_header", "channel"):
            num = self.mutate.number
            channel = rng.choice((2, 3)) if kind == "channel" else rng.randrange(2)
            payload = rng.choice((b"", encode_varint(3) + b"abc", rng.randbytes(64)))
            frame = wlink.encode_data_frame(
                channel,
                tag if rng.random() < 0.7 else num(2),
                num(4),
                num(4),
                num(2),
                num(2),
                num(2),
                payload,
            )
            peer.inject(frame)
        elif kind == "ack":
            num = self.mutate.number
            blocks = tuple((num(4), num(4)) for _ in range(rng.randint(0, 4)))
            ack = wlink.Ack(rng.random() < 0.5, tag, num(4), num(2), num(2), num(8), blocks)
            frame = wlink.encode_ack(ack)
            if rng.random() < 0.2:  # a count that does not match the blocks
                frame = wlink.seal(frame[:18] + bytes([rng.randrange(256)]) + frame[19:-4])
            peer.inject(frame)
        elif kind == "bus":
            peer.send(self.mutate.field(wbus.SPEC, rng.choice(wbus.SPEC.messages)))
        elif kind in ("devcall", "virtio"):
            all_handles = handles.get("any") or [rng.getrandbits(32)]
            if kind == "virtio":
                msg = rng.choice([m for m in wvirtio.SPEC.messages if "host" in m.direction[:4]])
                func, payload = msg.tag, self.mutate.field(wvirtio.SPEC, msg)
            else:
                func, payload = rng.randrange(8), self.mutate.data(b"ping" * rng.randint(0, 64))
            call = wbus.DevCall(self._call(), rng.choice(all_handles), func, 0, payload[:65536])
            with contextlib.suppress(Exception):
                peer.send(wbus.encode(call))
        else:
            peer.send(rng.randbytes(rng.choice((0, 1, 5, 100, 3000))))

    def _raw_stream(self, peer: HostilePeer | None) -> None:
        """A fresh session whose stream starts with a mutated length prefix."""
        if peer is None:
            return
        rng = self.rng
        self.tried["varint"] += 1
        prefix = rng.choice(
            (
                b"\x80" * (4 if "overlong" in self.avoid else rng.randint(5, 12)) + b"\x01",
                encode_varint(rng.choice((1 << 31, (1 << 35) - 1, 4 << 20, 64 << 20))),
                b"\xff\xff",  # cut short
                encode_varint(rng.randint(0, 300)),
            )
        )
        local, peer_epoch = peer.epochs()
        payload = prefix + rng.randbytes(rng.randint(0, 200))
        frame = wlink.encode_data_frame(
            rng.randrange(2), (local ^ peer_epoch) & 0xFFFF, 0, 0, 64, 1, 0, payload
        )
        peer.inject(frame)
        peer.pump(lambda: False, 0.02)


# --- the legitimate peer and the invariants -------------------------------------------------


def _legit_board_check(path: str, config: LinkConfig | None, within_s: float) -> float | None:
    """Seconds until a host got an echo DEVCALL answered, or None."""
    start = _now()
    with contextlib.suppress(Exception), HostClient(path, link_config=config) as host:
        result = host.ping(b"legitimate", timeout_s=within_s)
        if result.payload == b"legitimate":
            return _now() - start
    return None


def _legit_host_check(
    path: str, config: LinkConfig | None, target: Target, within_s: float
) -> float | None:
    """Seconds until the host reported a legitimate board ready, or None."""
    start = _now()
    seen = sum("ready:" in line for line in target.lines)
    with contextlib.suppress(Exception), BoardService(path, link_config=config):
        while _now() - start < within_s:
            if sum("ready:" in line for line in target.lines) > seen:
                return _now() - start
            time.sleep(0.02)
    return None


@dataclasses.dataclass
class Report:
    target: str
    seconds: float = 0.0
    batches: int = 0
    tried: dict[str, int] = dataclasses.field(default_factory=dict)
    exits: int = 0
    stalls: int = 0
    answer_max_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_max_growth_mb: float = 0.0
    fds_start: int = 0
    fds_max: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@contextlib.contextmanager
def _target(kind: str, path: str, psk_file: str | None, pythonpath: str | None) -> Iterator[Target]:
    with tempfile.TemporaryDirectory(prefix="fuzzwire-") as tmp:
        extra = ["--psk-file", psk_file] if psk_file else []
        if kind == "board":
            profile = Path(tmp) / "board.toml"
            profile.write_text(BOARD_PROFILE, encoding="utf-8")
            argv = ["board", "serve", path, "--profile", str(profile), *extra]
        else:
            argv = ["host", "serve", path, *extra]
        target = Target(argv, pythonpath)
        try:
            yield target
        finally:
            target.stop()


def run(
    kind: str,
    duration_s: float,
    *,
    batch_s: float = 2.0,
    seed: int = 1,
    psk_file: str | None = None,
    answer_within_s: float = 5.0,
    rss_mb: float = 10.0,
    fds: int = 8,
    target_pythonpath: str | None = None,
    avoid: frozenset[str] = frozenset(),
    classes: frozenset[str] = frozenset(CLASSES),
) -> Report:
    psk = None if psk_file is None else read_psk(psk_file)
    config = link_config(psk_file)
    report = Report(kind)
    started = _now()
    with NullModem() as nm, _target(kind, nm.path_a, psk_file, target_pythonpath) as target:

        def check() -> float | None:
            if kind == "board":
                return _legit_board_check(nm.path_b, config, answer_within_s)
            return _legit_host_check(nm.path_b, config, target, answer_within_s)

        first = check()  # also: the target is up before the first batch
        if first is None:
            report.failures.append("the target never served a legitimate peer")
            return report
        rss0, fds0 = _proc(target.proc.pid)
        report.rss_start_mb, report.fds_start, report.fds_max = rss0 / 1e6, fds0, fds0
        fuzzer = Fuzzer(kind, psk, seed, avoid)
        fuzzer.restrict(set(classes))
        while _now() - started < duration_s and report.ok:
            transport = fuzzer.transport = open_transport(nm.path_b)
            try:
                fuzzer.batch(batch_s)
            finally:
                transport.close()
            report.batches += 1
            if not target.alive():
                report.exits += 1
                report.failures.append(
                    f"batch {report.batches}: the target exited ({target.proc.returncode}): "
                    + " | ".join(target.errors[-3:])
                )
                break
            answered = check()
            if answered is None:
                report.stalls += 1
                report.failures.append(
                    f"batch {report.batches}: no answer to a legitimate peer "
                    f"within {answer_within_s} s: " + " | ".join(target.errors[-3:])
                )
                break
            report.answer_max_s = max(report.answer_max_s, answered)
            rss, nfds = _proc(target.proc.pid)
            report.rss_end_mb = rss / 1e6
            report.rss_max_growth_mb = max(report.rss_max_growth_mb, (rss - rss0) / 1e6)
            report.fds_max = max(report.fds_max, nfds)
            if rss - rss0 > rss_mb * 1e6:
                report.failures.append(f"batch {report.batches}: RSS grew {rss - rss0:,} B")
            if nfds > fds0 + fds:
                report.failures.append(f"batch {report.batches}: {nfds} fds (from {fds0})")
        report.tried = dict(sorted(fuzzer.tried.items()))
    report.seconds = _now() - started
    return report


def print_report(r: Report) -> None:
    total = sum(v for k, v in r.tried.items() if k in CLASSES)
    print(f"fuzzwire against ira {r.target} serve: {r.seconds:.0f} s, {r.batches} batches")
    print("inputs tried: " + ", ".join(f"{k} {v:,}" for k, v in r.tried.items()))
    print(f"  {total:,} in all")
    print(
        f"exits {r.exits}, stalls {r.stalls}, slowest legitimate answer {r.answer_max_s:.2f} s, "
        f"RSS {r.rss_start_mb:.1f} -> {r.rss_end_mb:.1f} MB (max growth "
        f"{r.rss_max_growth_mb:+.1f} MB), fds {r.fds_start} -> max {r.fds_max}"
    )
    print("PASS" if r.ok else "FAIL: " + "; ".join(r.failures))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ira.tools.fuzzwire", description=__doc__)
    p.add_argument("target", choices=("board", "host"))
    p.add_argument("--duration", type=float, default=60.0, metavar="S")
    p.add_argument("--batch", type=float, default=2.0, metavar="S", help="seconds per batch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--psk-file", metavar="FILE")
    p.add_argument("--answer-within", type=float, default=5.0, metavar="S")
    p.add_argument("--rss-mb", type=float, default=10.0, help="allowed RSS growth")
    p.add_argument("--fds", type=int, default=8, help="allowed growth of open descriptors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--only", action="append", choices=CLASSES, help="send only this class")
    p.add_argument(
        "--avoid",
        action="append",
        choices=sorted(KNOWN),
        default=[],
        help="leave out the inputs of a known finding: "
        + "; ".join(f"{k}: {v}" for k, v in KNOWN.items()),
    )
    p.add_argument("--target-pythonpath", metavar="DIR", help="run the target from this checkout")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.batch <= 0 or args.answer_within <= 0:
        p.error("--duration, --batch and --answer-within must be positive")
    report = run(
        args.target,
        args.duration,
        batch_s=args.batch,
        seed=args.seed,
        psk_file=args.psk_file,
        answer_within_s=args.answer_within,
        rss_mb=args.rss_mb,
        fds=args.fds,
        target_pythonpath=args.target_pythonpath,
        avoid=frozenset(args.avoid),
        classes=frozenset(args.only or CLASSES),
    )
    if args.json:
        print(json.dumps({**dataclasses.asdict(report), "ok": report.ok}, sort_keys=True))
    else:
        print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
