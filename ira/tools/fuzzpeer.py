"""The hostile peer of ``ira.tools.fuzzwire``: mutations guided by the construct
schemas, and a link core that gives it a session to send them in."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import Channel, MessageReceived
from ira.link.framing import encode_frames, encode_varint
from ira.link.states import LinkState
from ira.transports import Transport
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
        # every bus version's registration: v3 adds BUS_LIMITS, whose value is fuzzed too
        version = self.rng.randint(wbus.BUS_VERSION_MIN, wbus.BUS_VERSION_MAX)
        peer.send(wbus.encode(wbus.BusHello(wbus.BUS_VERSION_MIN, version)))
        if version >= wbus.BUS_VERSION_LIMITS:
            peer.pump(lambda: False, 0.05)
            limit = self.mutate.number(2) & wbus.MAX_HOST_DEVICES
            peer.send(wbus.encode(wbus.BusLimits(max(limit, 1))))
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
            payload = self._raw(rng.choice((b"", encode_varint(3) + b"abc", rng.randbytes(64))))
            frame_tag = tag if rng.random() < 0.7 else num(2)
            if frame_tag == tag and "overlong" in self.avoid:
                # bytes at a random place of the session's stream shift where the
                # target reads a length prefix: any byte of the stream may start one
                payload = b""
            frame = wlink.encode_data_frame(
                channel,
                frame_tag,
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

    def _raw(self, data: bytes) -> bytes:
        """Bytes for a raw DATA payload: while ``overlong`` is avoided, without a byte
        that continues a length prefix (a random one may start the stream)."""
        return bytes(b & 0x7F for b in data) if "overlong" in self.avoid else data

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
        payload = prefix + self._raw(rng.randbytes(rng.randint(0, 200)))
        frame = wlink.encode_data_frame(
            rng.randrange(2), (local ^ peer_epoch) & 0xFFFF, 0, 0, 64, 1, 0, payload
        )
        peer.inject(frame)
        peer.pump(lambda: False, 0.02)
