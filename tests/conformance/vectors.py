"""Reading and matching conformance/*.json (the format is conformance/README.md).

The runner plays the host; the implementation under test plays the board.  A
*target* is how the runner reaches it: ``BusTarget`` exchanges bus messages,
``FrameTarget`` link frames; ``runner.py`` implements them for ira's cores and
for a running process.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2] / "conformance"
#: the runner's link epoch (conformance/README.md)
RUNNER_EPOCH = 0x1122334455667701
_TOKEN = re.compile(r"\{([\w-]+)\}|<([\w-]+):(\d+)>|\?\?|\*|[0-9a-fA-F]{2}")


def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((ROOT / name).read_text(encoding="utf-8"))["cases"]
    return cases


@dataclass
class Bindings:
    values: dict[str, bytes] = field(default_factory=dict)

    def bind(self, name: str, value: bytes) -> None:
        self.values[name] = value
        if name == "epoch":
            tag = (int.from_bytes(value, "little") ^ RUNNER_EPOCH) & 0xFFFF
            self.values["tag"] = tag.to_bytes(2, "little")

    def render(self, pattern: str) -> bytes:
        """The bytes of a pattern to send (hex and ``{name}`` only)."""
        out = bytearray()
        for match in _TOKEN.finditer(_squeeze(pattern)):
            if match[1]:
                out += self.values[match[1]]
            elif match[2] or match[0] in ("??", "*"):
                raise ValueError(f"{pattern!r}: {match[0]} in bytes to send")
            else:
                out += bytes.fromhex(match[0])
        return bytes(out)

    def match(self, pattern: str, data: bytes) -> bool:
        """Whether ``data`` matches; captures are bound only when the whole pattern matches."""
        captured: dict[str, bytes] = {}
        pos = 0
        text = _squeeze(pattern)
        tokens = list(_TOKEN.finditer(text))
        assert "".join(t[0] for t in tokens) == text, f"bad pattern {pattern!r}"
        for token in tokens:
            if token[0] == "*":
                pos = len(data)
                break
            if token[1]:
                want = self.values[token[1]]
                if data[pos : pos + len(want)] != want:
                    return False
                pos += len(want)
            elif token[2]:
                n = int(token[3])
                if pos + n > len(data):
                    return False
                captured[token[2]] = data[pos : pos + n]
                pos += n
            elif token[0] == "??":
                if pos >= len(data):
                    return False
                pos += 1
            else:
                if data[pos : pos + 1] != bytes.fromhex(token[0]):
                    return False
                pos += 1
        if pos != len(data):
            return False
        for name, value in captured.items():
            self.bind(name, value)
        return True


def _squeeze(pattern: str) -> str:
    return "".join(pattern.split())


def seal(body: bytes) -> bytes:
    """A frame: its body and the body's CRC-32, little-endian."""
    return body + zlib.crc32(body).to_bytes(4, "little")


class BusTarget(Protocol):
    def send(self, channel: int, message: bytes) -> None: ...
    def replies(self) -> list[bytes]:
        """Every bus message the board sent since the last call, once it is quiet."""
        ...

    def counters(self) -> Mapping[str, int] | None: ...


class FrameTarget(Protocol):
    def send_bytes(self, data: bytes) -> None: ...
    def send_frame(self, body: bytes) -> None: ...
    def frames(self, seconds: float) -> list[bytes]:
        """The bodies of the frames the board sends in the next ``seconds``."""
        ...

    def counters(self) -> Mapping[str, int] | None: ...


STANDARD_TYPES = ("board-info", "echo", "counter", "ring-loopback")


def register(target: BusTarget, names: Bindings) -> None:
    """Registration as conformance/README.md says: bind each device type to its id."""
    target.send(0, bytes.fromhex("01 49524142 0100 0200".replace(" ", "")))
    replies = target.replies()
    assert replies and replies[0][:5] == bytes.fromhex("0200000000"), replies[:1]
    assert replies[-1][0] == 0x03, "no BUS_SYNCED"
    for message in replies[1:-1]:
        assert message[0] == 0x10, message
        type_len = message[9]
        names.bind(message[10 : 10 + type_len].decode(), message[1:5])
    assert all(t in names.values for t in STANDARD_TYPES), names.values


def _delta(target: BusTarget | FrameTarget, before: Mapping[str, int] | None) -> dict[str, int]:
    after = target.counters()
    assert after is not None and before is not None
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


def _check_counters(
    name: str, want: Mapping[str, int], target: BusTarget | FrameTarget, before: Any
) -> None:
    """Counters are optional: a target that shows none (a process) skips the check."""
    if before is None:
        return
    delta = _delta(target, before)
    for counter, n in want.items():
        assert delta.get(counter, 0) == n, f"{name}: {counter} grew by {delta.get(counter, 0)}"


def run_bus_case(case: dict[str, Any], target: BusTarget) -> None:
    names = Bindings()
    if case.get("register"):
        register(target, names)
    before = target.counters()
    for step in case["steps"]:
        if "send" in step:
            target.send(step.get("channel", 0), names.render(step["send"]))
        elif "expect" in step:
            got = target.replies()
            want = step["expect"]
            assert len(got) == len(want), f"{case['name']}: got {[m.hex() for m in got]}"
            for pattern, message in zip(want, got, strict=True):
                assert names.match(pattern, message), (
                    f"{case['name']}: {message.hex()} !~ {pattern}"
                )
        elif "counters" in step:
            _check_counters(case["name"], step["counters"], target, before)
        else:
            raise AssertionError(f"{case['name']}: unknown step {step}")


def run_link_case(case: dict[str, Any], target: FrameTarget, *, slack: float = 1.0) -> None:
    names = Bindings()
    before = target.counters()
    for step in case["steps"]:
        if "send_frame" in step:
            target.send_frame(names.render(step["send_frame"]))
        elif "send_bytes" in step:
            target.send_bytes(names.render(step["send_bytes"]))
        elif "expect_frame" in step:
            limit = step["within_s"] * slack
            seen: list[bytes] = []
            waited = 0.0
            while waited <= limit:
                slice_s = min(0.005, limit) if limit > 0 else 0.001
                frames = target.frames(slice_s)
                waited += slice_s
                seen += frames
                if any(names.match(step["expect_frame"], f) for f in frames):
                    break
            else:
                shown = [f.hex() for f in seen[-5:]]
                raise AssertionError(f"{case['name']}: no {step['expect_frame']} in {shown}")
        elif "expect_no_frame" in step:
            for frame in target.frames(step["for_s"]):
                assert not names.match(step["expect_no_frame"], frame), frame.hex()
        elif "counters" in step:
            _check_counters(case["name"], step["counters"], target, before)
        else:
            raise AssertionError(f"{case['name']}: unknown step {step}")
