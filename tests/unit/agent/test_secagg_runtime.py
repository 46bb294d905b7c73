"""The agent's secure turn when the network drops: it waits or gives the cohort up, never exits."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.conditions import FakeConditions
from agent.runtime import AgentRuntime
from agent.secagg import SecAggAgentSettings
from agent.state import AgentState
from protocol.secagg.identity import Enrolment
from protocol.secagg.messages import decode_up
from protocol.signing import generate_keypair, sign_offer
from protocol.topics import global_model_topic
from tests.unit.agent.fakes import MANIFEST, FakeLink, StepTrainer, make_config, make_offer
from tests.unit.agent.fakes import offer_bytes as _offer_bytes

KEY, PUB = generate_keypair()


@dataclasses.dataclass
class FlakyLink(FakeLink):
    """Raises like the demo's link while offline; `fail_next` fails the next cohort publishes
    while 'online' (the connection dropped between the check and the publish)."""

    fail_next: int = 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if not self.connected or (self.fail_next and topic.endswith("/secagg_up")):
            self.fail_next = max(0, self.fail_next - 1)
            raise ConnectionError("device is offline")
        super().publish(topic, payload, qos, retain)


def _agent(tmp_path: Path, link: FlakyLink) -> AgentRuntime:
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, secure_aggregation=SecAggAgentSettings(True, 60.0))
    agent = AgentRuntime(
        cfg, MANIFEST, link=link, trainer=StepTrainer(),
        train_x=np.zeros((40, 4), np.float32), train_y=np.zeros(40, np.int64),
        conditions=FakeConditions(), fleet_key=PUB, clock=lambda: 10_000.0,
        identity=Enrolment.generate("home").enrol(cfg.device_id),
    )  # fmt: skip
    offer = offer_bytes(1)
    link.deliver(global_model_topic("home", MANIFEST.model_id), offer)
    return agent


def offer_bytes(version: int) -> bytes:
    return _offer_bytes(sign_offer(make_offer(version), KEY))


def _joins(link: FakeLink) -> int:
    return sum(type(decode_up(p)).__name__ == "SecAggJoin" for p in link.on("/secagg_up"))


def test_an_offline_agent_waits_to_join_instead_of_crashing(tmp_path: Path) -> None:
    link = FlakyLink(connected=False)
    agent = _agent(tmp_path, link)
    agent.start()  # the first turn sees the offer while offline: must not raise
    agent.poll(0)
    assert agent.offer is not None and _joins(link) == 0
    assert agent.state is AgentState.WAITING_FOR_CONDITIONS
    link.connected = True
    agent.poll(0)
    assert _joins(link) == 1 and agent.secure is not None and agent.secure.in_cohort


def test_a_publish_that_fails_mid_turn_gives_the_cohort_up_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = FlakyLink(connected=True, fail_next=1)
    agent = _agent(tmp_path, link)
    with caplog.at_level(logging.WARNING, logger="agent.secagg"):
        agent.start()  # the join's publish fails: given up, not raised
    assert _joins(link) == 0 and agent.secure is not None and not agent.secure.in_cohort
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "publish failed" in warned[0]
    agent.poll(0)  # and the device goes on: it asks again
    assert _joins(link) == 1 and agent.secure.in_cohort
