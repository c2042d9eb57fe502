"""The pre-shared key (ira.link.auth): two link cores over simulated lines, a fake clock.

An attacker on the line records frames and writes its own: forged ones, ones
replayed from an earlier session, ones made with another key.  None of them is
delivered or changes a session; each is counted (``drop_unauthenticated``) and
reported, rate-limited, as ``AuthRefused``.
"""

from __future__ import annotations

import random

import pytest

from ira.errors import ConfigError
from ira.link.auth import REPORT_INTERVAL_S
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import (
    AuthRefused,
    Channel,
    LinkEvent,
    MessageReceived,
    PeerRestarted,
    SessionStarted,
)
from ira.link.simulate import LineFaults, LinkPair
from ira.link.states import LinkState
from ira.wire.link import (
    CRC_BYTES,
    Feature,
    FrameType,
    authenticate,
    check_crc,
    mac_key,
    seal,
)

KEY = b"sixteen byte key and then some"
OTHER_KEY = b"another key, just as long as it"
CLEAN = LineFaults(latency_s=0.001)
CONTROL = Channel.CONTROL


def config(psk: bytes | None = KEY, **fields: object) -> LinkConfig:
    return LinkConfig(packet=True, psk=psk, **fields)  # type: ignore[arg-type]


def new_link(cfg: LinkConfig, seed: int, now: float = 0.0) -> Link:
    return Link(cfg, rng=random.Random(seed), now=now)


def make_pair(cfg_a: LinkConfig, cfg_b: LinkConfig, seed: int = 0) -> LinkPair:
    return LinkPair(
        new_link(cfg_a, seed * 2 + 1), new_link(cfg_b, seed * 2 + 2), CLEAN, random.Random(seed)
    )


def record(pair: LinkPair, direction: str) -> list[bytes]:
    """Every frame written on one line ("ab": a to b, "ba"), as an attacker sees it."""
    line = pair.ab if direction == "ab" else pair.ba
    frames: list[bytes] = []
    write = line.write

    def tap(chunk: bytes, now: float) -> None:
        frames.append(chunk)
        write(chunk, now)

    line.write = tap  # type: ignore[method-assign]
    return frames


def of_type(events: list[LinkEvent], kind: type) -> list[LinkEvent]:
    return [e for e in events if isinstance(e, kind)]


def received(events: list[LinkEvent]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, MessageReceived)]


def up(pair: LinkPair) -> None:
    assert pair.run_until(
        lambda: pair.a.state is LinkState.UP and pair.b.state is LinkState.UP, timeout_s=5.0
    )


def kind(frame: bytes) -> int:
    return frame[0]


def refused(link: Link) -> int:
    return link.statistics().drop_unauthenticated


def test_a_keyed_pair_authenticates_and_delivers_everything() -> None:
    pair = make_pair(config(), config())
    up(pair)
    for link in (pair.a, pair.b):
        assert link.features & Feature.AUTH
    sent = [b"m%04d" % i * (i % 50 + 1) for i in range(200)]
    for m in sent:
        pair.a.send_message(m, CONTROL)
    assert pair.run_until(lambda: len(received(pair.events_b)) == len(sent), timeout_s=10.0)
    assert received(pair.events_b) == sent
    assert refused(pair.a) == refused(pair.b) == 0
    assert len(of_type(pair.events_a, SessionStarted)) == 1
    assert len(of_type(pair.events_b, SessionStarted)) == 1


def test_every_frame_carries_a_mac_under_the_sessions_epochs() -> None:
    pair = make_pair(config(), config())
    frames = record(pair, "ab")
    up(pair)
    pair.a.send_message(b"hello there", CONTROL)
    pair.run_for(0.5)
    session = [f for f in frames if kind(f) in (FrameType.DATA, FrameType.ACK)]
    assert session
    key = mac_key(KEY)
    st = pair.a.statistics()
    assert st.peer_epoch is not None
    for f in session:
        # the frame is its plain form with a MAC keyed by both epochs, a's first
        plain = seal(bytes(check_crc(f))[:-16])
        assert authenticate(plain, key, st.local_epoch, st.peer_epoch) == f


@pytest.mark.parametrize(
    ("key_a", "key_b"),
    [(KEY, None), (None, KEY), (KEY, OTHER_KEY)],
    ids=["peer-without-key", "this-end-without-key", "wrong-key"],
)
def test_no_session_without_the_same_key_and_refusals_are_counted_and_reported(
    key_a: bytes | None, key_b: bytes | None
) -> None:
    pair = make_pair(config(key_a), config(key_b))
    pair.a.send_message(b"secret", CONTROL)
    pair.run_for(3 * REPORT_INTERVAL_S + 1)
    for link, events in ((pair.a, pair.events_a), (pair.b, pair.events_b)):
        assert link.state is LinkState.HANDSHAKE
        assert not of_type(events, SessionStarted)
        assert received(events) == []
        reports = of_type(events, AuthRefused)
        # each end hears HELLOs every second or so: refused every time, reported at
        # once and then at most every REPORT_INTERVAL_S, with the count since
        n = refused(link)
        assert n > 10
        assert 1 <= len(reports) <= 4
        assert sum(r.refused for r in reports) <= n  # type: ignore[attr-defined]
        assert reports[0].refused == 1  # type: ignore[attr-defined]


def test_the_reason_names_which_end_lacks_the_key() -> None:
    pair = make_pair(config(None), config(KEY))
    pair.run_for(1.0)
    (a_report,) = of_type(pair.events_a, AuthRefused)
    (b_report,) = of_type(pair.events_b, AuthRefused)
    assert "requires a pre-shared key" in a_report.reason  # type: ignore[attr-defined]
    assert "offers no pre-shared key" in b_report.reason  # type: ignore[attr-defined]


def tamper(frame: bytes, at: int) -> bytes:
    """Flip a byte of the frame body and fix the CRC (a forger who knows no key)."""
    body = bytearray(frame[:-CRC_BYTES])
    body[at] ^= 0x40
    return seal(bytes(body))


def test_forged_frames_are_dropped_and_counted() -> None:
    pair = make_pair(config(), config())
    frames = record(pair, "ab")
    up(pair)
    pair.a.send_message(b"genuine", CONTROL)
    assert pair.run_until(lambda: received(pair.events_b) == [b"genuine"], timeout_s=2.0)
    datas = [f for f in frames if kind(f) == FrameType.DATA]
    before = refused(pair.b)
    forged = [tamper(f, len(f) - CRC_BYTES - 17) for f in datas]  # last payload byte
    forged += [tamper(f, 3) for f in frames if kind(f) == FrameType.ACK]  # the tag
    # a frame without its MAC, as a keyless peer would send it
    forged += [seal(bytes(check_crc(f))[:-16]) for f in datas]
    for f in forged:
        pair.b.receive_data(f, now=pair.now)
    pair.run_for(0.5)
    assert received(pair.events_b) == [b"genuine"]
    assert refused(pair.b) == before + len(forged)
    assert pair.b.state is LinkState.UP


def test_a_frame_made_with_another_key_is_dropped_and_counted() -> None:
    pair = make_pair(config(), config())
    up(pair)
    st = pair.b.statistics()
    assert st.peer_epoch is not None
    from ira.wire.link import Data, encode

    wrong = mac_key(OTHER_KEY)
    frame = encode(Data(0, 0, 0, 0, 16, 1, 0, b"\x03abc"))
    # exactly as a would send it, tag and epochs right, but under another key
    before = refused(pair.b)
    pair.b.receive_data(authenticate(frame, wrong, st.peer_epoch, st.local_epoch), now=pair.now)
    assert refused(pair.b) == before + 1
    assert received(pair.events_b) == []


def _restart(pair: LinkPair, side: str, cfg: LinkConfig, seed: int) -> None:
    pair.replace(side, new_link(cfg, seed, now=pair.now))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("direction", ["ab", "ba"])
def test_frames_replayed_from_an_earlier_session_change_nothing(
    direction: str, version: int
) -> None:
    cfg = config(version_max=version)
    data = FrameType.DATA if version == 1 else FrameType.DATA2
    pair = make_pair(cfg, cfg)
    frames = record(pair, direction)
    up(pair)
    sender = pair.a if direction == "ab" else pair.b
    for i in range(20):
        sender.send_message(b"old session %d" % i, CONTROL)
    pair.run_for(1.0)
    recorded = list(frames)
    assert {FrameType.HELLO, FrameType.HELLO_ACK, data} <= {kind(f) for f in recorded}
    # the sender restarts: a new session with the other end
    side = "a" if direction == "ab" else "b"
    _restart(pair, side, cfg, seed=99)
    target = pair.b if direction == "ab" else pair.a
    events = pair.events_b if direction == "ab" else pair.events_a
    assert pair.run_until(lambda: bool(of_type(events, PeerRestarted)), timeout_s=5.0)
    up(pair)
    pair.run_for(0.5)
    restarts = len(of_type(events, PeerRestarted))
    messages = len(received(events))
    before = refused(target)
    # everything of the earlier session, HELLOs included, written again to the target
    for f in recorded:
        target.receive_data(f, now=pair.now)
        pair.step()
    pair.run_for(2.0)
    assert len(of_type(events, PeerRestarted)) == restarts  # no session was reset
    assert len(received(events)) == messages  # nothing delivered again
    assert target.state is LinkState.UP
    old_session = [f for f in recorded if kind(f) in (data, FrameType.ACK)]
    assert refused(target) >= before + len(old_session)
    # and the session still works
    fresh = pair.a if direction == "ab" else pair.b
    fresh.send_message(b"new session", CONTROL)
    assert pair.run_until(lambda: received(events)[-1:] == [b"new session"], timeout_s=2.0)


def test_without_a_key_a_replayed_hello_does_reset_the_session() -> None:
    """What the key protects against: the same replay without one resets the session."""
    cfg = LinkConfig(packet=True)
    pair = make_pair(cfg, cfg)
    frames = record(pair, "ab")
    up(pair)
    old_hello = next(f for f in frames if kind(f) == FrameType.HELLO)
    _restart(pair, "a", cfg, seed=99)
    assert pair.run_until(lambda: bool(of_type(pair.events_b, PeerRestarted)), timeout_s=5.0)
    up(pair)
    restarts = len(of_type(pair.events_b, PeerRestarted))
    pair.b.receive_data(old_hello, now=pair.now)
    pair.run_for(0.1)
    assert len(of_type(pair.events_b, PeerRestarted)) == restarts + 1


def test_a_replayed_hello_is_answered_but_starts_nothing() -> None:
    cfg = config()
    pair = make_pair(cfg, cfg)
    frames = record(pair, "ab")
    up(pair)
    hellos = [f for f in frames if kind(f) in (FrameType.HELLO, FrameType.HELLO_ACK)]
    started = len(of_type(pair.events_b, SessionStarted))
    answers = record(pair, "ba")
    for f in hellos * 3:
        pair.b.receive_data(f, now=pair.now)
    pair.run_for(1.0)
    assert len(of_type(pair.events_b, SessionStarted)) == started
    assert not of_type(pair.events_b, PeerRestarted)
    assert not of_type(pair.events_a, PeerRestarted)
    # each replayed HELLO got a HELLO_ACK, which a (whose nonce moved on) ignores
    assert any(kind(f) == FrameType.HELLO_ACK for f in answers)


def test_handshake_survives_a_lossy_line_and_a_restart() -> None:
    cfg = config()
    for seed in range(20):
        lossy = LineFaults(latency_s=0.002, drop=0.2)
        pair = LinkPair(
            new_link(cfg, seed * 2 + 1),
            new_link(cfg, seed * 2 + 2),
            lossy,
            random.Random(seed),
        )
        up(pair)
        _restart(pair, "b", cfg, seed=1000 + seed)
        assert pair.run_until(
            lambda p=pair: bool(of_type(p.events_a, PeerRestarted)), timeout_s=10.0
        ), seed
        pair.a.send_message(b"after", CONTROL)
        assert pair.run_until(
            lambda p=pair: received(p.events_b)[-1:] == [b"after"], timeout_s=10.0
        ), seed


def test_a_short_key_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="urandom"):
        LinkConfig(psk=b"short")


def test_the_key_is_not_in_the_configs_repr() -> None:
    assert KEY.decode() not in repr(config())


def test_without_a_session_a_keyed_end_trusts_no_frame_but_a_hello() -> None:
    link = new_link(config(), seed=5)
    for body in (b"\x09" + bytes(40), b"\x05" + bytes(24)):  # types this end has no session for
        link.receive_data(seal(body), now=0.1)
    assert refused(link) == 2
    assert link.state is LinkState.HANDSHAKE
