from __future__ import annotations

import pytest

from agent.state import AgentState, IllegalTransition, StateMachine

S = AgentState


def test_normal_life() -> None:
    m = StateMachine()
    path = [
        S.WAITING_FOR_MODEL,
        S.WAITING_FOR_CONDITIONS,
        S.TRAINING,
        S.UPLOADING,
        S.IDLE,
        S.WAITING_FOR_CONDITIONS,
        S.TRAINING,
        S.WAITING_FOR_CONDITIONS,
        S.IDLE,
        S.STOPPED,
    ]
    for dst in path:
        assert m.to(dst)
    assert m.state is S.STOPPED
    assert not m.to(S.STOPPED)  # staying put is not a change


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (S.STARTING, S.TRAINING),
        (S.IDLE, S.TRAINING),
        (S.WAITING_FOR_MODEL, S.TRAINING),
        (S.UPLOADING, S.TRAINING),
        (S.IDLE, S.UPLOADING),
        (S.STOPPED, S.IDLE),
    ],
)
def test_forbidden(src: AgentState, dst: AgentState) -> None:
    assert not StateMachine.allowed(src, dst)


def test_illegal_transition_raises() -> None:
    m = StateMachine()
    with pytest.raises(IllegalTransition, match="starting -> training"):
        m.to(S.TRAINING)
