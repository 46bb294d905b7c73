"""Server side of secure aggregation without a broker: settings, the cohort runner, the log."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import ConfigError
from protocol.secagg import fixedpoint
from protocol.secagg.device import DeviceSession
from protocol.secagg.identity import Enrolment
from protocol.secagg.messages import (
    AnyUp,
    CohortAnnounce,
    CohortResult,
    ConsistencyRequest,
    ShareBundle,
    UnmaskRequest,
    decode_down,
    encode,
)
from server.core import ServerCore
from server.secagg import CohortRunner, SecAggSettings, parse_secagg_settings
from server.secagg_apply import cohort_record
from server.strategies import FedBuff
from tests.unit.server.factory import make_manifest

M = make_manifest(8)
ENROL = Enrolment.generate("home")


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"cohort_sise": 3}, "cohort_sise"),
        ({"bits": "32"}, "bits"),
        ({"enabled": 1}, "enabled"),
        ({"bits": 8}, "bit width 8"),
        ({"min_size": 1}, "min_size"),
        ({"threshold_fraction": 0.5}, "threshold_fraction"),
        ({"join_timeout_s": 0}, "timeouts"),
    ],
)
def test_bad_settings_name_the_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_secagg_settings(doc)


def test_defaults_and_values() -> None:
    s = parse_secagg_settings({"enabled": True, "cohort_size": 4, "clip": 2})
    assert s.enabled and s.cohort_size == 4 and s.clip == 2.0 and s.bits == 32


class _Fleet:
    """Devices that answer the runner's messages at once (the agent's job, minus MQTT)."""

    def __init__(self, runner: CohortRunner, ids: list[str], silent_at_mask: set[str]) -> None:
        self.runner = runner
        self.sessions = {d: DeviceSession(d, M.model_id, ENROL.enrol(d)) for d in ids}
        self.silent = silent_at_mask
        self.results: dict[str, CohortResult] = {}
        self.deltas = {d: np.full(8, 0.1 * (i + 1), np.float32) for i, d in enumerate(ids)}

    def deliver(self, out: list[tuple[str, bytes]], now: float) -> None:
        queue = list(out)
        while queue:
            device_id, payload = queue.pop(0)
            s, msg = self.sessions[device_id], decode_down(payload)
            reply: AnyUp | None = None
            if isinstance(msg, CohortAnnounce):
                reply = s.on_announce(msg)
            elif isinstance(msg, ShareBundle):
                s.on_bundle(msg)
                if device_id not in self.silent:
                    reply, _ = s.mask(self.deltas[device_id], 5)
            elif isinstance(msg, ConsistencyRequest):
                reply = s.on_check(msg)
            elif isinstance(msg, UnmaskRequest):
                reply = s.on_unmask(msg)
            elif isinstance(msg, CohortResult):
                self.results[device_id] = msg
            if reply is not None:
                queue += self.runner.handle(device_id, encode(reply), now, 7)


def _run(ids: list[str], silent: set[str], size: int) -> tuple[CohortRunner, _Fleet]:
    settings = SecAggSettings(
        True, cohort_size=size, min_size=3, clip=5.0, join_timeout_s=10, phase_timeout_s=20
    )
    runner = CohortRunner(settings, M, ENROL.trust)
    fleet = _Fleet(runner, ids, silent)
    for d in ids:
        fleet.deliver(runner.handle(d, encode(fleet.sessions[d].join()), 0.0, 7), 0.0)
    return runner, fleet


def test_full_cohort_runs_to_a_record_of_the_mean() -> None:
    ids = ["d1", "d2", "d3", "d4"]
    runner, fleet = _run(ids, set(), size=4)
    [(cohort, record)] = runner.finished()
    assert record is not None and record["base"] == 7 and record["m"] == 4
    mean = np.frombuffer(record["mean"], "<f4")  # type: ignore[call-overload]
    np.testing.assert_allclose(mean, 0.25, atol=1e-6)  # (0.1 + 0.2 + 0.3 + 0.4) / 4
    fleet.deliver(runner.results(cohort, 8), 1.0)
    assert all(r.applied and r.server_version == 8 for r in fleet.results.values())


def test_deadlines_close_joining_and_recover_a_silent_member() -> None:
    ids = ["d1", "d2", "d3", "d4"]
    runner, fleet = _run(ids, {"d4"}, size=6)  # only 4 of 6 join: the join deadline closes it
    assert runner.finished() == []
    fleet.deliver(runner.tick(5.0, 7), 5.0)  # before the deadline: nothing
    assert runner.finished() == []
    fleet.deliver(runner.tick(10.0, 7), 10.0)  # announce, shares, bundles; d4 never masks
    fleet.deliver(runner.tick(31.0, 7), 31.0)  # masking deadline: unmask the other three
    [(cohort, record)] = runner.finished()
    assert record is not None and record["m"] == 3
    mean = np.frombuffer(record["mean"], "<f4")  # type: ignore[call-overload]
    np.testing.assert_allclose(mean, 0.2, atol=1e-6)  # d4's pairwise masks were removed
    fleet.deliver(runner.results(cohort, 8), 32.0)
    assert not fleet.results["d4"].applied and fleet.results["d1"].applied


def test_too_few_joiners_are_told_to_retry() -> None:
    runner, fleet = _run(["d1", "d2"], set(), size=4)
    fleet.deliver(runner.tick(11.0, 7), 11.0)
    [(_, record)] = runner.finished()
    assert record is None and runner.abandoned == 1
    assert {d: r.applied for d, r in fleet.results.items()} == {"d1": False, "d2": False}


def test_refused_messages_are_dropped_not_raised() -> None:
    runner = CohortRunner(SecAggSettings(True, cohort_size=3), M)
    assert runner.handle("d1", b"\x00garbage", 0.0, 0) == []
    join = DeviceSession("d2", M.model_id, ENROL.enrol("d2")).join()
    assert runner.handle("d1", encode(join), 0.0, 0) == []  # payload id differs from topic


def test_cohort_record_is_logged_and_replayed(tmp_path: Path) -> None:
    def core() -> ServerCore:
        c = ServerCore(M, np.zeros(8, np.float32), FedBuff(buffer_size=10), tmp_path)
        c.recover()
        return c

    first = core()
    mean = np.arange(8, dtype=np.float32)
    assert first.submit_cohort(cohort_record(bytes(16), 0, mean, 40, 4))
    first.commit()
    model, version = first.model.copy(), first.version
    first.close()
    np.testing.assert_allclose(model, mean)  # one buffer: K=10 not needed, the cohort is it
    again = core()
    assert again.version == version == 1
    np.testing.assert_array_equal(again.model, model)


def test_secure_aggregation_refused_with_a_shared_group(tmp_path: Path) -> None:
    from server.config import parse_config

    doc = {
        "fleet": "f",
        "artifacts": "a",
        "signing_key": "k",
        "state_dir": "s",
        "broker": {"shared_group": "aggs"},
        "secure_aggregation": {"enabled": True},
    }
    with pytest.raises(ConfigError, match="shared_group"):
        parse_config(doc, tmp_path)
    doc["secure_aggregation"] = {"enabled": True, "noise_std": -1}
    del doc["broker"]
    with pytest.raises(ConfigError, match="secure_aggregation"):
        parse_config(doc, tmp_path)


def test_distributed_noise_is_accounted_with_the_dp_accountant() -> None:
    from server.privacy.accountant import epsilon

    settings = SecAggSettings(
        True,
        cohort_size=4,
        min_size=3,
        clip=1.0,
        noise_std=2.0,
        join_timeout_s=10,
        phase_timeout_s=20,
    )
    runner = CohortRunner(settings, M)
    assert runner.epsilon() is None
    spent = []
    for round_ in range(2):
        ids = [f"r{round_}d{i}" for i in range(4)]
        fleet = _Fleet(runner, ids, set())
        for d in ids:
            fleet.deliver(runner.handle(d, encode(fleet.sessions[d].join()), 0.0, 7), 0.0)
        [(_, record)] = runner.finished()
        assert record is not None
        spent.append(runner.epsilon())
    view_scale = fixedpoint.scale_for(32, 1.0, 4, 2.0)
    multiplier = 2.0 / (1.0 + 8**0.5 / view_scale)  # every member counted; kept = 8 params
    assert runner.noise_multipliers == pytest.approx([multiplier, multiplier])
    assert spent[1] == pytest.approx(epsilon(multiplier, 2, 1e-5))
    first, second = spent
    assert first is not None and second is not None and 0 < first < second  # composition


def test_a_join_with_a_zero_key_is_refused_with_a_reason_and_never_relayed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = SecAggSettings(True, cohort_size=3, min_size=3, clip=5.0)
    runner = CohortRunner(settings, M, ENROL.trust)
    evil = DeviceSession("d0", M.model_id, ENROL.enrol("d0")).join()
    with caplog.at_level(logging.WARNING, logger="server.secagg"):
        assert runner.handle("d0", encode(dataclasses.replace(evil, c_pk=bytes(32))), 0.0, 7) == []
    assert any("d0" in r.getMessage() and "bad_key" in r.getMessage() for r in caplog.records)
    fleet = _Fleet(runner, ["d0", "d1", "d2"], set())  # d0 again, now with valid keys
    out = []
    for d in ["d1", "d2", "d0"]:
        out += runner.handle(d, encode(fleet.sessions[d].join()), 0.0, 7)
    announces = [decode_down(p) for _, p in out]
    assert len(announces) == 3  # the third valid join filled the cohort
    for a in announces:
        assert isinstance(a, CohortAnnounce)
        assert all(m.c_pk != bytes(32) for m in a.members)
        assert {m.device_id for m in a.members} == {"d0", "d1", "d2"}


def test_a_join_from_an_unenrolled_identity_is_refused_and_never_relayed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = SecAggSettings(True, cohort_size=3, min_size=3, clip=5.0)
    runner = CohortRunner(settings, M, ENROL.trust)
    stranger = Enrolment.generate("home").enrol("d0")  # certified by a key the fleet never had
    join = DeviceSession("d0", M.model_id, stranger).join()
    with caplog.at_level(logging.WARNING, logger="server.secagg"):
        assert runner.handle("d0", encode(join), 0.0, 7) == []
    assert any("bad_signature" in r.getMessage() for r in caplog.records)
    fleet = _Fleet(runner, ["d1", "d2", "d3"], set())
    out = []
    for d in ["d1", "d2", "d3"]:
        out += runner.handle(d, encode(fleet.sessions[d].join()), 0.0, 7)
    announce = decode_down(out[0][1])
    assert isinstance(announce, CohortAnnounce)
    assert {m.device_id for m in announce.members} == {"d1", "d2", "d3"}
    fleet.deliver(out, 0.0)
    [(_, record)] = runner.finished()
    assert record is not None and record["m"] == 3


def test_the_enrolment_key_path_resolves_beside_the_config(tmp_path: Path) -> None:
    from server.config import parse_config

    secure = {"enabled": True, "enrolment_key": "keys/enrolment.pub"}
    doc = {"fleet": "f", "artifacts": "a", "signing_key": "k", "state_dir": "s",
           "secure_aggregation": secure}  # fmt: skip
    config = parse_config(doc, tmp_path)
    assert config.secure_aggregation.enrolment_key == tmp_path / "keys" / "enrolment.pub"
    doc["secure_aggregation"] = {"enabled": True, "enrolment_key": 3}
    with pytest.raises(ConfigError, match="enrolment_key"):
        parse_config(doc, tmp_path)
