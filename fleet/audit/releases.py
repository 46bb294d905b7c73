"""One audit trial: devices' updates through the real server path, the published models out.

    plain:   ClientUpdate (protocol encoder, float32 codec) -> ServerCore.submit (admission, log,
             strategy: DP clip, buffer, noised flush)
    secure:  DeviceSession (protocol/secagg) <-> CohortRunner (server/secagg.py), every message
             encoded; the unmasked cohort -> ServerCore.submit_cohort, as server/app.py does

A `Plan` says what each device sends in each release (it may read the clip norm the last offer
carried: adaptive clipping moves it). Every model version the server reaches is what an observer
of the published offers sees, so the trial returns them all.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.audit.scenario import Scenario
from protocol.errors import FleetlearnError
from protocol.manifest import Manifest
from protocol.messages import ClientUpdate, encode_update, encode_vector
from protocol.secagg.device import DeviceSession
from protocol.secagg.identity import Enrolment
from protocol.secagg.local import device_reply
from protocol.secagg.messages import (
    decode_down,
    encode,
)
from server.core import ServerCore
from server.secagg import CohortRunner
from server.secagg_privacy import member_settings

__all__ = ["AuditError", "Plan", "Trial", "run_trial"]

# (release index, clip norm C of the offer it trains on) -> [(device id, (n,) float32 delta)]
Plan = Callable[[int, float], list[tuple[str, np.ndarray]]]
_LATER = 1e9  # a clock reading past every secure-aggregation deadline


class AuditError(FleetlearnError):
    """The planned trial did not run as planned (an update refused, a cohort abandoned)."""


@dataclass(frozen=True)
class Trial:
    models: np.ndarray  # (releases + 1, n) float32: the initial model, then every release
    clips: np.ndarray  # (releases + 1,) the clip norm C each offer carried
    reported_epsilon: float  # what the server reports after the last release
    delta: float


def run_trial(
    scenario: Scenario,
    seed: int,
    plan: Plan,
    releases: int,
    manifest: Manifest | None = None,
    scratch: Path | None = None,
) -> Trial:
    manifest = manifest or scenario.manifest()
    with tempfile.TemporaryDirectory(dir=scratch, prefix="fleetlearn-audit-") as tmp:
        core = scenario.server(seed, Path(tmp) / "state", manifest)
        try:
            return _run(scenario, core, seed, plan, releases, manifest)
        finally:
            core.close()


def _run(
    scenario: Scenario, core: ServerCore, seed: int, plan: Plan, releases: int, manifest: Manifest
) -> Trial:
    mechanism = core.strategy.privacy
    assert mechanism is not None  # a Scenario always has [privacy]
    models, clips = [core.model.copy()], [mechanism.status().clip_norm]
    runner = None
    if scenario.secure:  # as server/app.py builds it: members clip to C less rounding
        c = scenario.config
        # devices enrolled as a deployment enrols them: the server checks their signed keys
        enrolment = Enrolment.generate("audit")
        settings = member_settings(c.secure_aggregation, manifest, c.privacy)
        runner = CohortRunner(settings, manifest, enrolment.trust)
    rng = np.random.default_rng(seed)  # the devices' stochastic rounding (secure only)
    for release in range(releases):
        contributions = plan(release, clips[-1])
        if runner is None:
            _plain_release(core, manifest, release, contributions)
        else:
            _secure_release(core, runner, enrolment, manifest, contributions, rng)
        if core.version != release + 1:
            raise AuditError(f"release {release + 1}: the server did not step (privacy budget?)")
        models.append(core.model.copy())
        clips.append(mechanism.status().clip_norm)
    status = mechanism.status()
    return Trial(np.stack(models), np.asarray(clips), status.epsilon_spent, status.delta)


def _plain_release(
    core: ServerCore, manifest: Manifest, release: int, contributions: list[tuple[str, np.ndarray]]
) -> None:
    for device_id, delta in contributions:
        message = ClientUpdate(
            model_id=manifest.model_id,
            base_version=core.version,
            device_id=device_id,
            seq=release + 1,
            num_samples=1,
            local_steps=1,
            delta=encode_vector(np.asarray(delta, np.float32), {"name": "float32"}),
            metrics={},
        )
        outcome = core.submit(device_id, encode_update(message))
        if not outcome.ack.accepted:
            raise AuditError(
                f"release {release + 1}: {device_id}'s update refused "
                f"({outcome.ack.reason.value}: {outcome.ack.detail})"
            )


def _secure_release(
    core: ServerCore,
    runner: CohortRunner,
    enrolment: Enrolment,
    manifest: Manifest,
    contributions: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
) -> None:
    deltas = dict(contributions)
    sessions = {d: DeviceSession(d, manifest.model_id, enrolment.enrol(d)) for d in deltas}
    outbox = []
    for device_id, session in sessions.items():
        outbox += runner.handle(device_id, encode(session.join()), 0.0, core.version)
    now = 0.0
    while True:
        replies = []
        for device_id, payload in outbox:
            msg = decode_down(payload)
            reply, _sent = device_reply(sessions[device_id], msg, deltas[device_id], rng)
            if reply is not None:
                replies.append((device_id, encode(reply)))
        outbox = []
        for device_id, payload in replies:
            outbox += runner.handle(device_id, payload, now, core.version)
        finished = runner.finished()
        if finished:
            break
        if not outbox:  # everyone answered: the phase deadline closes it
            now += _LATER
            outbox = runner.tick(now, core.version)
    for cohort, record in finished:
        if record is None:
            raise AuditError(f"cohort abandoned: {cohort.abandon_reason}")
        core.submit_cohort(record)
