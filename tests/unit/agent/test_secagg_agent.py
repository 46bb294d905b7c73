"""The agent's secure-aggregation rounds over a fake publish: versions, masking, outcomes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import pytest

from agent.secagg import SecAggAgentSettings, SecureRounds
from protocol.secagg.cohort import CohortConfig, CohortPhase, ServerCohort
from protocol.secagg.identity import Enrolment
from protocol.secagg.messages import AnyDown, CohortAnnounce, decode_up, encode
from protocol.secagg.prg import new_keypair
from protocol.topics import secagg_up_topic

N = 12
ENROL = Enrolment.generate("home")
Outbox = list[tuple[str, AnyDown]]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _agents(
    ids: list[str], clock: _Clock, settings: SecAggAgentSettings | None = None
) -> tuple[dict[str, SecureRounds], ServerCohort, Outbox]:
    cohort = ServerCohort(CohortConfig("m", N, target_size=len(ids), min_size=3, clip=5.0),
                          bytes(16), 4, bytes(32), ENROL.trust)  # fmt: skip
    outbox: list[tuple[str, AnyDown]] = []
    agents: dict[str, SecureRounds] = {}

    def publisher(
        device_id: str,
    ) -> Callable[[str, bytes], None]:  # the server answers at once, as over a broker
        def publish(topic: str, payload: bytes) -> None:
            assert topic == secagg_up_topic("home", device_id)
            msg = decode_up(payload)
            handler = {
                "SecAggJoin": cohort.add_join,
                "SharesMessage": cohort.on_shares,
                "MaskedInput": cohort.on_masked,
                "ConsistencySignature": cohort.on_consistency,
                "UnmaskResponse": cohort.on_reveal,
            }
            outbox.extend(handler[type(msg).__name__](msg))  # type: ignore[operator]

        return publish

    settings = settings or SecAggAgentSettings(True, 60.0)
    for d in ids:
        agents[d] = SecureRounds(settings, fleet="home", device_id=d, model_id="m",
                                 identity=ENROL.enrol(d), publish=publisher(d),
                                 clock=clock)  # fmt: skip
    return agents, cohort, outbox


Relay = Callable[[str, AnyDown], AnyDown]


def _deliver(agents: dict[str, SecureRounds], outbox: Outbox, relay: Relay | None = None) -> None:
    while outbox:
        d, msg = outbox.pop(0)
        agents[d].on_message(encode(relay(d, msg) if relay else msg))


def test_round_trains_from_the_announced_version_and_keeps_residual_until_applied() -> None:
    clock = _Clock()
    ids = ["a", "b", "c"]
    agents, cohort, outbox = _agents(ids, clock)
    for d in ids:
        agents[d].remember(3, np.zeros(N, np.float32))
        agents[d].join()
    _deliver(agents, outbox)  # announce (v4) -> shares -> bundles
    assert all(a.training_base() is None for a in agents.values())  # v4 not held yet
    for a in agents.values():
        a.remember(4, np.ones(N, np.float32))
    version, base = agents["a"].training_base()  # type: ignore[misc]
    assert version == 4 and base[0] == 1.0
    deltas = {d: np.full(N, 0.1 * (i + 1), np.float32) for i, d in enumerate(ids)}
    for d in ids:
        agents[d].submit(deltas[d], 10)
    _deliver(agents, outbox)  # masked -> unmask -> reveal
    assert cohort.phase is CohortPhase.DONE and cohort.result is not None
    np.testing.assert_allclose(cohort.result.mean, 0.2, atol=1e-6)
    assert agents["a"].poll() is None  # no result yet: residual not handed over
    outbox.extend(cohort.results(5))
    _deliver(agents, outbox)
    outcome = agents["a"].poll()
    assert outcome is not None and outcome.applied and outcome.base_version == 4
    assert outcome.residual is not None and np.abs(outcome.residual).max() < 1e-4
    assert not agents["a"].in_cohort and agents["a"].poll() is None


def test_a_cohort_that_never_finishes_times_out_without_a_residual() -> None:
    clock = _Clock()
    agents, _cohort, outbox = _agents(["a", "b", "c", "d"], clock)  # K=4, only one joins
    agents["a"].join()
    assert agents["a"].in_cohort and outbox == []
    clock.now = 61.0
    outcome = agents["a"].poll()
    assert outcome is not None and not outcome.applied and outcome.residual is None
    assert "no result" in outcome.reason and not agents["a"].in_cohort


def test_garbage_on_the_cohort_topic_is_ignored() -> None:
    agents, _cohort, _ = _agents(["a", "b", "c"], _Clock())
    agents["a"].join()
    agents["a"].on_message(b"\x00not msgpack")
    assert agents["a"].in_cohort


def _zero_key_of_c_for_a(d: str, msg: AnyDown) -> AnyDown:
    """A malicious server (or relay) gives member c a zero mask-agreement key in a's copy."""
    if d == "a" and isinstance(msg, CohortAnnounce):
        members = tuple(
            dataclasses.replace(m, s_pk=bytes(32)) if m.device_id == "c" else m for m in msg.members
        )
        return dataclasses.replace(msg, members=members)
    return msg


def _announce_more_params(d: str, msg: AnyDown) -> AnyDown:
    """A malicious server announces a model size that is not the agent's."""
    if isinstance(msg, CohortAnnounce):
        return dataclasses.replace(msg, num_params=N + 1, kept=N + 1)
    return msg


def _swap_keys_of_c_for_a(d: str, msg: AnyDown) -> AnyDown:
    """A relay puts its own (valid) X25519 keys under c's name in a's copy of the announce."""
    if d == "a" and isinstance(msg, CohortAnnounce):
        c, s = new_keypair(), new_keypair()
        members = tuple(
            dataclasses.replace(m, c_pk=c.public, s_pk=s.public) if m.device_id == "c" else m
            for m in msg.members
        )
        return dataclasses.replace(msg, members=members)
    return msg


@pytest.mark.parametrize(
    "relay", [_zero_key_of_c_for_a, _announce_more_params, _swap_keys_of_c_for_a]
)
def test_a_hostile_cohort_message_ends_the_cohort_not_the_agent(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    ids = ["a", "b", "c"]
    agents, _cohort, outbox = _agents(ids, clock)
    for d in ids:
        agents[d].remember(4, np.zeros(N, np.float32))
        agents[d].join()
    with caplog.at_level(logging.WARNING, logger="agent.secagg"):
        _deliver(agents, outbox, relay)
        for d in ids:
            if agents[d].in_cohort and agents[d].training_base() is not None:
                agents[d].submit(np.full(N, 0.1, np.float32), 10)  # must not raise
        _deliver(agents, outbox, relay)
    outcome = agents["a"].poll()
    assert outcome is not None and not outcome.applied and outcome.residual is None
    assert not agents["a"].in_cohort
    ended = [d for d in ids if not agents[d].in_cohort]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == len(ended)  # one line per device that gave its cohort up
    assert all(w.startswith("cohort round not applied") for w in warned)
    agents["a"].join()  # and the device goes on: a fresh session asks for a new cohort
    assert agents["a"].in_cohort


def test_the_agent_refuses_a_cohort_below_its_configured_minimum() -> None:
    clock = _Clock()
    ids = ["a", "b", "c"]
    settings = SecAggAgentSettings(True, 60.0, min_size=4)  # the server announces 3 members
    agents, cohort, outbox = _agents(ids, clock, settings)
    for d in ids:
        agents[d].join()
    sent_before = agents["a"].bytes_published
    _deliver(agents, outbox)
    outcome = agents["a"].poll()
    assert outcome is not None and not outcome.applied and "bad_params" in outcome.reason
    assert agents["a"].bytes_published == sent_before  # no shares dealt
    assert cohort.phase is CohortPhase.SHARING  # nobody shared: the cohort can only time out


def test_a_stale_result_does_not_end_the_next_cohort_before_its_announce() -> None:
    clock = _Clock()
    ids = ["a", "b", "c"]
    agents, cohort, outbox = _agents(ids, clock)
    for d in ids:
        agents[d].join()
    _deliver(agents, outbox)  # announced; a trains too slowly and times out
    clock.now = 61.0
    assert agents["a"].poll() is not None and not agents["a"].in_cohort
    agents["a"].join()  # waits for a new cohort, not yet announced
    stale = [m for d, m in cohort.results(5) if d == "a"]
    agents["a"].on_message(encode(stale[0]))  # the old cohort's result arrives late
    assert agents["a"].in_cohort and agents["a"].poll() is None
