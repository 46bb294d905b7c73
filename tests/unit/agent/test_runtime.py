"""The agent loop with fakes at every edge: link, trainer, conditions, clock."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.conditions import Conditions, FakeConditions
from agent.runtime import AgentRuntime
from agent.state import AgentState
from protocol.errors import Reason
from protocol.messages import Ack, decode_vector, encode_ack
from protocol.signing import generate_keypair, sign_offer
from protocol.topics import ack_topic, global_model_topic, serving_model_topic
from protocol.update_header import decode_any_update
from tests.unit.agent.fakes import (
    MANIFEST,
    FakeLink,
    StepTrainer,
    make_config,
    make_offer,
    offer_bytes,
)

KEY, PUB = generate_keypair()
OFFER_TOPIC = global_model_topic("home", MANIFEST.model_id)
ACK_TOPIC = ack_topic("home", "dev-1")


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Rig:
    agent: AgentRuntime
    link: FakeLink
    trainer: StepTrainer
    cond: FakeConditions
    clock: Clock

    def offer(self, version: int, mu: float = 0.0) -> None:
        self.link.deliver(OFFER_TOPIC, offer_bytes(sign_offer(make_offer(version, mu=mu), KEY)))

    def ack(self, seq: int, accepted: bool = True, reason: Reason = Reason.OK) -> None:
        self.link.deliver(ACK_TOPIC, encode_ack(Ack("dev-1", seq, accepted, reason, 1)))

    def state(self) -> AgentState:
        return self.agent.state

    def updates(self) -> list[Any]:
        return [decode_any_update(p) for p in self.link.on("/update")]


def rig(tmp_path: Path, link: FakeLink | None = None, models: Any = None, **training: Any) -> Rig:
    link = link or FakeLink()
    trainer = StepTrainer()
    cond = FakeConditions()
    clock = Clock()
    x = np.zeros((40, 4), np.float32)
    y = np.zeros(40, np.int64)
    agent = AgentRuntime(
        make_config(tmp_path, **training),
        MANIFEST,
        link=link,
        trainer=trainer,
        train_x=x,
        train_y=y,
        conditions=cond,
        fleet_key=PUB,
        clock=clock,
        models=models,
    )
    agent.start()
    return Rig(agent, link, trainer, cond, clock)


def test_trains_only_when_idle_and_charging(tmp_path: Path) -> None:
    r = rig(tmp_path)
    assert r.state() is AgentState.WAITING_FOR_MODEL
    r.cond.set(cpu_percent=90.0)  # busy
    r.offer(1)
    r.agent.poll(0)
    assert r.trainer.rounds == [] and r.state() is AgentState.WAITING_FOR_CONDITIONS
    assert r.agent.decision is not None and r.agent.decision.reason.value == "busy"
    r.cond.set(cpu_percent=1.0, charging=False, battery_percent=90.0)  # idle, unplugged
    r.agent.poll(0)
    assert r.trainer.rounds == [] and r.agent.decision.reason.value == "unplugged"
    r.cond.set(charging=True)  # idle and charging
    r.agent.poll(0)
    assert len(r.trainer.rounds) == 1 and r.state() is AgentState.UPLOADING
    (update,) = r.updates()
    assert (update.seq, update.base_version, update.local_steps) == (1, 1, 10)
    # 10 steps of +0.01 from the zero base; float32 codec is exact.
    np.testing.assert_allclose(decode_vector(update.delta, MANIFEST), 0.1, rtol=1e-5)


def test_unplugging_mid_training_stops_within_one_step(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.cond.set(battery_percent=90.0, charging=True)  # a battery device on its charger
    r.trainer.on_step = lambda i: r.cond.set(charging=False) if i == 2 else None
    r.offer(1)
    r.agent.poll(0)
    assert r.trainer.stopped_at == [3]  # unplugged after step index 2: not one step more
    # 3 of 10 planned steps >= partial_min_fraction 0.25: the partial round is sent (rule 'send').
    (update,) = r.updates()
    assert update.local_steps == 3 and update.metrics["partial"] == 1.0
    assert r.state() is AgentState.UPLOADING


def test_partial_round_discarded_by_rule(tmp_path: Path) -> None:
    r = rig(tmp_path, partial_work="discard")
    r.trainer.on_step = lambda i: r.cond.set(temperature_c=95.0) if i == 5 else None
    r.offer(1)
    r.agent.poll(0)
    r.trainer.on_step = lambda i: None
    assert r.trainer.stopped_at == [6] and r.updates() == []
    assert r.state() is AgentState.WAITING_FOR_CONDITIONS
    assert r.agent.decision is not None and r.agent.decision.reason.value == "hot"
    r.cond.set(temperature_c=68.0)  # below the 70 C limit but not below 70 - 5: still hot
    r.agent.poll(0)
    assert r.updates() == [] and r.agent.decision.reason.value == "hot"
    r.cond.set(temperature_c=64.0)  # cooled below max - margin: the same version is retrained
    r.agent.poll(0)
    (update,) = r.updates()
    assert update.seq == 1 and update.local_steps == 10  # the discarded round used no sequence


def test_below_min_fraction_partial_round_discarded(tmp_path: Path) -> None:
    r = rig(tmp_path, partial_min_fraction=0.5)
    r.trainer.on_step = lambda i: r.cond.set(metered=True) if i == 1 else None
    r.offer(1)
    r.agent.poll(0)
    assert r.trainer.stopped_at == [2] and r.updates() == []


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: make_offer(1), "unsigned"),
        (lambda: sign_offer(make_offer(1), generate_keypair()[0]), "does not verify"),
        (lambda: dataclasses.replace(sign_offer(make_offer(1), KEY), version=7), "does not verify"),
    ],
    ids=["unsigned", "wrong-key", "tampered"],
)
def test_bad_offers_ignored_with_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Any, expected: str
) -> None:
    r = rig(tmp_path)
    caplog.set_level(logging.INFO, logger="agent")
    r.link.deliver(OFFER_TOPIC, offer_bytes(make()))
    r.agent.poll(0)
    assert r.agent.offer is None and r.trainer.rounds == []
    assert r.state() is AgentState.WAITING_FOR_MODEL
    assert any("ignoring message" in m and expected in m for m in caplog.messages)


def test_duplicate_and_older_offers_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    r = rig(tmp_path, min_retrain_interval_s=1e9)
    r.offer(2)
    r.agent.poll(0)
    r.offer(2)  # brokers deliver retained offers twice (FACTS.md: amqtt)
    r.offer(1)
    r.agent.poll(0)
    assert len(r.trainer.rounds) == 1 and r.agent.offer is not None and r.agent.offer.version == 2
    assert any("ignoring offer v2: duplicate (have v2)" in m for m in caplog.messages)
    assert any("ignoring offer v1: older (have v2)" in m for m in caplog.messages)


def test_offer_mu_overrides_config(tmp_path: Path) -> None:
    r = rig(tmp_path, fedprox_mu=0.1)
    r.offer(1, mu=0.5)
    r.agent.poll(0)
    r.ack(1)
    r.offer(2)  # mu 0 in the offer: the config default applies
    r.agent.poll(0)
    assert [c.prox_mu for c in r.trainer.rounds] == [0.5, 0.1]


def test_ack_clears_outbox_and_next_version_trains(tmp_path: Path) -> None:
    r = rig(tmp_path, min_retrain_interval_s=100.0)
    r.offer(1)
    r.agent.poll(0)
    assert len(r.agent.store.pending()) == 1
    r.ack(1)
    r.agent.poll(0)
    assert r.agent.store.pending() == [] and r.state() is AgentState.IDLE
    r.clock.now += 99.0
    r.agent.poll(0)
    assert len(r.trainer.rounds) == 1  # same version, interval not passed
    r.clock.now += 1.0
    r.agent.poll(0)
    assert len(r.trainer.rounds) == 2 and [u.seq for u in r.updates()] == [1, 2]


def test_resends_same_sequence_after_reconnect_and_restart(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.offer(1)
    r.agent.poll(0)
    first = r.link.on("/update")
    r.link.connected = False
    r.agent.poll(0)
    r.link.connected = True
    r.agent.poll(0)
    assert r.link.on("/update") == first * 2  # byte-identical re-send
    # Restart: a new runtime on the same state folder re-sends the same bytes at start.
    r2 = rig(tmp_path)
    assert r2.state() is AgentState.UPLOADING and r2.link.on("/update") == first
    r2.ack(1)
    r2.offer(2)
    r2.agent.poll(0)
    assert [u.seq for u in r2.updates()] == [1, 2]  # sequence numbers survive restarts


def test_ack_timeout_resends(tmp_path: Path) -> None:
    r = rig(tmp_path, ack_timeout_s=30.0)
    r.offer(1)
    r.agent.poll(0)
    r.clock.now += 29.0
    r.agent.poll(0)
    assert len(r.link.on("/update")) == 1
    r.clock.now += 1.0
    r.agent.poll(0)
    assert len(r.link.on("/update")) == 2


def test_stale_rejection_drops_update_and_restores_residual(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    r = rig(tmp_path, codec="float16")
    r.trainer.step_size = 0.0123  # not representable in float16: a non-zero residual
    r.offer(1)
    r.agent.poll(0)
    after_first = r.agent.store.residual()
    assert np.abs(after_first).max() > 0
    r.ack(1)  # accepted: the leftover stays owed
    r.offer(2)
    r.agent.poll(0)
    after_second = r.agent.store.residual()
    assert not np.array_equal(after_second, after_first)
    r.ack(2, accepted=False, reason=Reason.STALE)
    r.agent.poll(0)
    assert r.agent.store.pending() == []
    np.testing.assert_array_equal(r.agent.store.residual(), after_first)  # as before seq 2
    assert any("seq 2 rejected (stale" in m for m in caplog.messages)


def test_status_published_retained_with_state(tmp_path: Path) -> None:
    from protocol.messages import decode_status

    r = rig(tmp_path)
    r.cond.set(charging=False, battery_percent=80.0)
    r.offer(3)
    r.agent.poll(0)
    statuses = [m for m in r.link.published if m.topic.endswith("/status")]
    assert statuses and all(m.retained for m in statuses)
    last = decode_status(statuses[-1].payload)
    assert (last.state, last.model_version, last.online) == ("waiting_for_conditions", 3, True)
    assert last.reason.startswith("unplugged") and last.conditions["charging"] is False


class FlipAfter(FakeConditions):
    """Unplugs itself on the n-th read: the trainer asks between steps."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.set(battery_percent=90.0, charging=True)
        self.n = n

    def read(self) -> Conditions:
        if self.reads + 1 >= self.n:
            self.set(charging=False)
        return super().read()


def test_with_the_trainer_teams_fake_trainer(tmp_path: Path) -> None:
    """The shared FakeTrainer (agent/trainer/fake.py) stops at the step boundary too."""
    from agent.trainer import FakeTrainer

    cond = FlipAfter(n=6)  # read 1: the pre-round decision; reads 2..: one per step
    link, clock = FakeLink(), Clock()
    agent = AgentRuntime(
        make_config(tmp_path, steps=50, partial_min_fraction=0.0),
        MANIFEST,
        link=link,
        trainer=FakeTrainer(MANIFEST, step_delta=0.5),
        train_x=np.zeros((40, 4), np.float32),
        train_y=np.zeros(40, np.int64),
        conditions=cond,
        fleet_key=PUB,
        clock=clock,
    )
    agent.start()
    link.deliver(OFFER_TOPIC, offer_bytes(sign_offer(make_offer(1), KEY)))
    agent.poll(0)
    (update,) = [decode_any_update(p) for p in link.on("/update")]
    # Reads 2..5 allowed 4 steps; read 6 unplugged before step 5.
    assert update.local_steps == 4 and update.metrics["partial"] == 1.0
    np.testing.assert_allclose(decode_vector(update.delta, MANIFEST), 2.0, rtol=1e-6)


def test_replay_rejection_drops_and_jumps_sequence(tmp_path: Path) -> None:
    r = rig(tmp_path)  # a re-flashed device: fresh state, but the server knows seq up to 57
    r.offer(1)
    r.agent.poll(0)
    r.ack(1, accepted=False, reason=Reason.REPLAY)
    r.agent.poll(0)
    assert r.agent.store.pending() == []
    r.offer(2)
    r.agent.poll(0)
    assert [u.seq for u in r.updates()] == [1, int(r.clock.now * 1000)]


def test_internal_error_keeps_update_for_resend(tmp_path: Path) -> None:
    r = rig(tmp_path, ack_timeout_s=5.0)
    r.offer(1)
    r.agent.poll(0)
    r.ack(1, accepted=False, reason=Reason.INTERNAL)
    r.agent.poll(0)
    assert [e.seq for e in r.agent.store.pending()] == [1]
    r.clock.now += 5.0
    r.agent.poll(0)
    assert [u.seq for u in r.updates()] == [1, 1]  # re-sent, same sequence


class RecordingModels:
    """Stands in for agent.personal.PersonalModels: records what the apps would get."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, int, np.ndarray]] = []

    def save(self, kind: Any, weights: np.ndarray, *, version: int, **_: Any) -> Path:
        self.saved.append((kind.value, version, weights.copy()))
        return Path("unused")


def test_serving_model_is_what_local_apps_get(tmp_path: Path) -> None:
    serving_topic = serving_model_topic("home", MANIFEST.model_id)
    assert serving_topic not in rig(tmp_path / "no-apps").link.subscriptions  # nothing to serve
    models = RecordingModels()
    r = rig(tmp_path, models=models)
    assert serving_topic in r.link.subscriptions
    r.offer(1)
    r.agent.poll(0.0)
    assert [(k, v) for k, v, _ in models.saved] == [("global", 1)]  # no serving model yet
    avg = np.full(MANIFEST.num_params, 0.25, np.float32)
    r.link.deliver(serving_topic, offer_bytes(sign_offer(make_offer(2, weights=avg), KEY)))
    r.offer(3)  # a newer iterate: trained from, but no longer saved for apps
    r.link.deliver(serving_topic, offer_bytes(sign_offer(make_offer(2, weights=avg), KEY)))
    r.agent.poll(0.0)
    assert [(k, v) for k, v, _ in models.saved] == [("global", 1), ("global", 2)]
    np.testing.assert_array_equal(models.saved[-1][2], avg)
    assert r.agent.offer is not None and r.agent.offer.version == 3  # training uses the iterate
    forged = sign_offer(make_offer(9, weights=avg), generate_keypair()[0])
    r.link.deliver(serving_topic, offer_bytes(forged))
    r.agent.poll(0.0)
    assert len(models.saved) == 2  # an unsigned/forged serving model is refused


def test_a_spent_privacy_budget_stops_training_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The offer that spends the budget says so: devices stop training on it instead of
    sending updates the server must refuse, and a refusal in flight is a warning, not an error."""
    r = rig(tmp_path)
    r.cond.set(charging=True)
    r.offer(1)
    r.agent.poll(0)
    assert len(r.trainer.rounds) == 1
    caplog.set_level(logging.INFO, logger="agent")
    r.ack(1, accepted=False, reason=Reason.PRIVACY_BUDGET)
    spent = dataclasses.replace(make_offer(2), privacy={"epsilon": 8.0, "exhausted": 1.0})
    r.link.deliver(OFFER_TOPIC, offer_bytes(sign_offer(spent, KEY)))
    for _ in range(3):
        r.agent.poll(0)
    assert len(r.trainer.rounds) == 1 and r.state() is AgentState.IDLE
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert sum("privacy budget spent" in rec.getMessage() for rec in caplog.records) == 1


@pytest.mark.parametrize("reason", [Reason.DP_BUFFER, Reason.PRIVACY_BUDGET, Reason.DEVICE_LIMIT])
def test_routine_dp_refusals_are_warnings_not_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reason: Reason
) -> None:
    r = rig(tmp_path)
    r.cond.set(charging=True)
    r.offer(1)
    r.agent.poll(0)
    caplog.set_level(logging.INFO, logger="agent")
    r.ack(1, accepted=False, reason=reason)
    r.agent.poll(0)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert any(reason.value in rec.getMessage() for rec in caplog.records)
