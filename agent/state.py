"""The agent's life as an explicit state machine you can print.

    STARTING ──> WAITING_FOR_MODEL ──> WAITING_FOR_CONDITIONS ──> TRAINING ──> UPLOADING
                        ^    │                 ^    │   ^             │  │         │
                        │    └──> IDLE <───────┘    │   └─────────────┘  │         │
                        │          ^ └──────────────┘   (stopped early,  │         │
                        │          └──────────────────── discarded)      │         │
                        │          └─────────────────────────────────────┼── (ack) ┘
    any state ──> STOPPED                                                 └──> IDLE (discarded)

IDLE: trained on the current global model; waiting for a newer one or the retrain interval.
UPLOADING: an update sits in the outbox until the server's Ack removes it.
"""

from __future__ import annotations

import logging
from enum import StrEnum

__all__ = ["AgentState", "IllegalTransition", "StateMachine"]

_log = logging.getLogger(__name__)


class AgentState(StrEnum):
    STARTING = "starting"
    WAITING_FOR_MODEL = "waiting_for_model"
    WAITING_FOR_CONDITIONS = "waiting_for_conditions"
    TRAINING = "training"
    UPLOADING = "uploading"
    IDLE = "idle"
    STOPPED = "stopped"


_S = AgentState
_ALLOWED: dict[AgentState, frozenset[AgentState]] = {
    # STARTING -> UPLOADING: the outbox held an update from before a restart.
    _S.STARTING: frozenset({_S.WAITING_FOR_MODEL, _S.UPLOADING}),
    _S.WAITING_FOR_MODEL: frozenset({_S.WAITING_FOR_CONDITIONS, _S.IDLE, _S.UPLOADING}),
    _S.WAITING_FOR_CONDITIONS: frozenset({_S.TRAINING, _S.IDLE, _S.WAITING_FOR_MODEL}),
    _S.TRAINING: frozenset({_S.UPLOADING, _S.WAITING_FOR_CONDITIONS, _S.IDLE}),
    _S.UPLOADING: frozenset({_S.WAITING_FOR_MODEL, _S.WAITING_FOR_CONDITIONS, _S.IDLE}),
    _S.IDLE: frozenset({_S.WAITING_FOR_CONDITIONS, _S.WAITING_FOR_MODEL}),
    _S.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A programming error: the runtime asked for a transition the table forbids."""


class StateMachine:
    def __init__(self) -> None:
        self._state = AgentState.STARTING

    @property
    def state(self) -> AgentState:
        return self._state

    @staticmethod
    def allowed(src: AgentState, dst: AgentState) -> bool:
        return dst is AgentState.STOPPED or dst in _ALLOWED[src]

    def to(self, dst: AgentState, why: str = "") -> bool:
        """Move to `dst`; returns whether the state changed. Staying put is always allowed."""
        if dst is self._state:
            return False
        if not self.allowed(self._state, dst):
            raise IllegalTransition(f"{self._state.value} -> {dst.value}")
        _log.info("state %s -> %s%s", self._state.value, dst.value, f" ({why})" if why else "")
        self._state = dst
        return True
