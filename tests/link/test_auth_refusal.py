"""HELLO_REFUSED with a pre-shared key: a keyed end MACs its refusal, and a keyed
receiver acts only on a refusal that verifies; one without a MAC is reported as the
peer's unverified word and counted, never acted on."""

from __future__ import annotations

import random

from ira.link.auth import BAD_REFUSAL, UNVERIFIED_REFUSAL
from ira.link.config import LinkConfig
from ira.link.core import Link
from ira.link.events import AuthRefused, HandshakeRefused, LinkEvent
from ira.link.states import LinkState
from ira.wire.link import (
    MAC_BYTES,
    REFUSAL_MEANINGS,
    VERSION_MAX,
    VERSION_MIN,
    Feature,
    FrameType,
    Hello,
    HelloRefused,
    Refusal,
    authenticate,
    check_crc,
    encode_hello,
    encode_hello_refused,
    mac_key,
    verify,
)

KEY = b"sixteen byte key and then some"
OTHER_KEY = b"another key, just as long as it"


def keyed(seed: int, psk: bytes = KEY) -> Link:
    return Link(LinkConfig(packet=True, psk=psk), rng=random.Random(seed), now=0.0)


def epoch_of(link: Link) -> int:
    return link.statistics().local_epoch


def drain(link: Link) -> list[LinkEvent]:
    events = []
    while (event := link.next_event()) is not None:
        events.append(event)
    return events


def bad_hello(epoch: int, psk: bytes = KEY) -> bytes:
    """An authenticated HELLO whose keepalive_ms (0) a receiver must refuse."""
    frame = encode_hello(
        Hello(
            ack=False,
            epoch=epoch,
            peer_epoch=0,
            version_min=VERSION_MIN,
            version_max=VERSION_MAX,
            features=int(Feature.SACK | Feature.AUTH),
            max_frame_bytes=1500,
            window_bytes=1 << 16,
            keepalive_ms=0,
        )
    )
    return authenticate(frame, mac_key(psk), epoch, 0, (0x5EED, 0))


def refusals_sent(link: Link, now: float) -> list[bytes]:
    return [f for f in link.data_to_send(now=now) if f and f[0] == FrameType.HELLO_REFUSED]


def refusal_of(to_epoch: int, *, psk: bytes | None, reason: Refusal = Refusal.VERSION) -> bytes:
    frame = encode_hello_refused(HelloRefused(VERSION_MIN, VERSION_MAX, 99, to_epoch, reason))
    return frame if psk is None else authenticate(frame, mac_key(psk), 99, to_epoch)


def test_a_keyed_end_macs_its_refusal_under_both_epochs() -> None:
    link = keyed(1)
    link.receive_data(bad_hello(0x77), now=0.0)
    (refusal,) = refusals_sent(link, 0.0)
    body = check_crc(refusal)
    assert verify(body, mac_key(KEY), epoch_of(link), 0x77) is not None
    assert verify(body, mac_key(OTHER_KEY), epoch_of(link), 0x77) is None
    assert len(body) == len(encode_hello_refused(HelloRefused(1, 1, 1, 1, 1))) - 4 + MAC_BYTES


def test_a_keyed_peer_hears_why_its_hello_was_refused() -> None:
    a, b = keyed(1), keyed(2)
    drain(a)
    b.receive_data(bad_hello(epoch_of(a)), now=0.0)
    (refusal,) = refusals_sent(b, 0.0)
    a.receive_data(refusal, now=0.0)
    reports = [e for e in drain(a) if isinstance(e, HandshakeRefused)]
    assert len(reports) == 1 and reports[0].by_peer
    assert reports[0].reason == Refusal.KEEPALIVE_MS
    st = a.statistics()
    assert (st.refused_by_peer, st.drop_unauthenticated) == (1, 0)
    assert a.state is LinkState.HANDSHAKE  # the handshake goes on


def test_an_unauthenticated_refusal_is_reported_and_counted_but_not_acted_on() -> None:
    link = keyed(3)
    drain(link)
    link.receive_data(refusal_of(epoch_of(link), psk=None), now=0.0)
    events = drain(link)
    assert not [e for e in events if isinstance(e, HandshakeRefused)]
    (report,) = [e for e in events if isinstance(e, AuthRefused)]
    assert report.reason.startswith(UNVERIFIED_REFUSAL)
    assert REFUSAL_MEANINGS[Refusal.VERSION] in report.reason
    st = link.statistics()
    assert (st.refused_by_peer, st.drop_unauthenticated) == (0, 1)
    assert link.state is LinkState.HANDSHAKE


def test_a_refusal_with_a_wrong_mac_or_for_another_epoch_is_refused() -> None:
    link = keyed(4)
    drain(link)
    link.receive_data(refusal_of(epoch_of(link), psk=OTHER_KEY), now=0.0)
    (report,) = [e for e in drain(link) if isinstance(e, AuthRefused)]
    assert report.reason == BAD_REFUSAL
    link.receive_data(refusal_of(epoch_of(link) ^ 1, psk=None), now=20.0)
    (report,) = [e for e in drain(link) if isinstance(e, AuthRefused)]
    assert not report.reason.startswith(UNVERIFIED_REFUSAL)
    st = link.statistics()
    assert (st.refused_by_peer, st.drop_unauthenticated) == (0, 2)
