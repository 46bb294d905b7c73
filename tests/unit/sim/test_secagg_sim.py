"""Secure-aggregation cohorts in the simulator (fake learner): real protocol, real strategy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fleet.sim.profiles import FleetConfig
from fleet.sim.runner import Experiment, StrategySpec
from tests.unit.sim.test_engine import _run

SPEC = StrategySpec("fedbuff", staleness="polynomial", buffer_size=5)
EXP = Experiment(concurrency=15, duration_s=2 * 3600.0, eval_every_s=600.0)


def test_cohorts_learn_and_count_every_member_once() -> None:
    plain, _ = _run(SPEC, EXP)
    secure, server = _run(SPEC, replace(EXP, secure_aggregation=True))
    assert secure.label.endswith("+secagg")
    applied = secure.counts["cohorts_applied"]
    assert applied > 5
    # each applied cohort stepped the model once (the cohort is the FedBuff buffer)
    assert server.version == applied
    assert secure.accepted >= 3 * applied  # at least t = 3 of 5 members per cohort
    assert secure.final_accuracy > 0.5 and plain.final_accuracy > 0.5  # chance is 0.1


def test_heavy_drop_out_abandons_some_cohorts_and_recovers_others() -> None:
    fleet = FleetConfig(median_s_per_sample=2.0, start_hour=0.0, dropout_p=0.3)
    secure, server = _run(SPEC, replace(EXP, secure_aggregation=True), fleet_cfg=fleet)
    assert secure.counts.get("cohorts_abandoned", 0) > 0
    assert (
        secure.counts["cohorts_applied"] > 0 and server.version == secure.counts["cohorts_applied"]
    )
    assert np.isfinite(server.model).all()
