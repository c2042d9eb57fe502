"""The link session's state table (ira.link.states): complete, closed under CLOSED, enforced."""

from __future__ import annotations

import pytest

from ira.errors import LocalProtocolError
from ira.link.states import LINK_TRANSITIONS, LinkInput, LinkState, step


def test_every_state_but_handshake_is_reached_and_closed_is_final() -> None:
    assert {after for after in LINK_TRANSITIONS.values()} == set(LinkState)
    for event in LinkInput:
        after = LINK_TRANSITIONS.get((LinkState.CLOSED, event))
        assert after in (None, LinkState.CLOSED)


def test_every_state_can_be_closed() -> None:
    for state in LinkState:
        assert step(state, LinkInput.CLOSE) is LinkState.CLOSED


@pytest.mark.parametrize("state", [LinkState.UP, LinkState.DOWN])
def test_a_protocol_violation_resets_the_session_and_never_closes(state: LinkState) -> None:
    assert step(state, LinkInput.PROTOCOL_VIOLATED) is LinkState.HANDSHAKE


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (LinkState.HANDSHAKE, LinkInput.DEAD_INTERVAL_SILENT),
        (LinkState.HANDSHAKE, LinkInput.FRAME_OF_SESSION),
        (LinkState.UP, LinkInput.SESSION_TIMED_OUT),
        (LinkState.CLOSED, LinkInput.SESSION_STARTED),
        (LinkState.HANDSHAKE, LinkInput.PROTOCOL_VIOLATED),  # no session to break
    ],
)
def test_a_pair_outside_the_table_is_refused(state: LinkState, event: LinkInput) -> None:
    with pytest.raises(LocalProtocolError, match=event.name):
        step(state, event)


def test_the_session_cycle() -> None:
    state = LinkState.HANDSHAKE
    for event, expected in [
        (LinkInput.SESSION_STARTED, LinkState.UP),
        (LinkInput.DEAD_INTERVAL_SILENT, LinkState.DOWN),
        (LinkInput.FRAME_OF_SESSION, LinkState.UP),
        (LinkInput.DEAD_INTERVAL_SILENT, LinkState.DOWN),
        (LinkInput.SESSION_TIMED_OUT, LinkState.HANDSHAKE),
        (LinkInput.SESSION_STARTED, LinkState.UP),
        (LinkInput.SESSION_STARTED, LinkState.UP),  # the peer restarted
    ]:
        state = step(state, event)
        assert state is expected
