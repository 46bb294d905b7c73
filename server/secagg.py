"""Secure aggregation on the server: cohorts of devices, run by protocol/secagg's state machine.

    [secure_aggregation]            (server.toml; absent or enabled = false: off)
    enabled = true
    cohort_size = 10                K: one FedBuff buffer
    min_size = 3                    a cohort closed with fewer joiners is abandoned
    threshold_fraction = 0.667      t = ceil(fraction * n): up to 1/3 may drop after masking
    bits = 32                       fixed point in Z_2^bits (16 or 32)
    clip = 10.0                     L2 bound per device update (needed for a wrap-free sum)
                                    (with [privacy]: at most clip_norm, which is the default)
    kept_fraction = 1.0             shared-seed random-k (1.0 = every coordinate)
    degree = 0                      SecAgg+ neighbourhood degree (0 = complete graph)
                                    collusion bound: the server places neighbourhoods, so it
                                    plus `degree` devices around a member unmask that member
                                    (complete graph: t members); trust the server's placement
    noise_std = 0.0                 distributed Skellam noise on each cohort sum (each member adds
                                    its share before masking; protocol/secagg/noise.py)
    noise_delta = 1e-5              delta at which the log reports the noise's epsilon
    enrolment_key = "enrolment.pub" the fleet's enrolment public key (optional; see below)

With noise_std > 0 every applied cohort is accounted by the dp branch's accountant
(server/privacy/accountant.py, dp-accounting) as one Gaussian mechanism with noise multiplier
    sigma_eff / (clip + sqrt(kept) / scale),   sigma_eff = noise_std * sqrt(counted / members)
(the survivors' shares only; the sensitivity includes stochastic rounding), composed over
cohorts at the smallest multiplier so far (an upper bound). Skellam is accounted as the Gaussian
of the same variance, which Agarwal et al. (2021) show is tight up to a small additive term in
RDP; that approximation, and q = 1 (no sampling amplification), are stated, not hidden.
    join_timeout_s = 30             an open cohort closes this long after its first join
    phase_timeout_s = 60            each later phase proceeds with whoever answered in time

Devices refuse a cohort below their own `min_size` / `min_threshold_fraction` (agent.toml,
defaults 3 and 2/3): a server configured lower gets cohorts nobody takes part in.

Every member's keys are signed by its enrolled identity and every survivor signs the survivor
list before anything is unmasked; the devices check both themselves (protocol/secagg/identity.py).
Given the fleet's enrolment public key (`fleetlearn broker init-ca` writes it), the server checks
them too, so one unenrolled or forged join cannot make every honest member refuse the cohort.

`CohortRunner` turns device messages into messages for devices and, for each completed cohort,
a log record the core applies as one buffer (server/secagg_apply.py). The server learns only
each cohort's sum; the ACL keeps cohort messages between the server and their addressee.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import ConfigError, ProtocolError
from protocol.manifest import Manifest, ParamSpec
from protocol.secagg import SecAggError, SecAggReason
from protocol.secagg.cohort import CohortConfig, CohortPhase, ServerCohort
from protocol.secagg.identity import Trust
from protocol.secagg.messages import (
    JOIN_MAX_BYTES,
    SMALL_MESSAGE_BYTES,
    ConsistencySignature,
    MaskedInput,
    SecAggJoin,
    SharesMessage,
    UnmaskResponse,
    decode_up,
    encode,
)
from server.secagg_apply import cohort_record

__all__ = ["CohortRunner", "SecAggSettings", "parse_secagg_settings"]

_log = logging.getLogger(__name__)
Outbox = list[tuple[str, bytes]]


@dataclass(frozen=True)
class SecAggSettings:
    enabled: bool = False
    cohort_size: int = 10
    min_size: int = 3
    threshold_fraction: float = 2 / 3
    bits: int = 32
    clip: float = 10.0
    kept_fraction: float = 1.0
    degree: int = 0
    noise_std: float = 0.0
    noise_delta: float = 1e-5
    join_timeout_s: float = 30.0
    phase_timeout_s: float = 60.0
    enrolment_key: Path | None = None  # server/config.py resolves it against the config's folder

    def cohort_config(self, manifest: Manifest) -> CohortConfig:
        return CohortConfig(
            model_id=manifest.model_id,
            num_params=manifest.num_params,
            target_size=self.cohort_size,
            min_size=self.min_size,
            threshold_fraction=self.threshold_fraction,
            bits=self.bits,
            clip=self.clip,
            kept_fraction=self.kept_fraction,
            degree=self.degree,
            noise_std=self.noise_std,
        )


def parse_secagg_settings(doc: Mapping[str, Any]) -> SecAggSettings:
    """The `[secure_aggregation]` table; errors name the key."""
    defaults = SecAggSettings()
    kinds: dict[str, tuple[type, ...]] = {
        "enabled": (bool,),
        "cohort_size": (int,),
        "min_size": (int,),
        "bits": (int,),
        "degree": (int,),
        "threshold_fraction": (int, float),
        "clip": (int, float),
        "kept_fraction": (int, float),
        "noise_std": (int, float),
        "noise_delta": (float,),
        "join_timeout_s": (int, float),
        "phase_timeout_s": (int, float),
        "enrolment_key": (str,),
    }
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in kinds:
            raise ConfigError(f"secure_aggregation.{key}: unknown key (allowed: {sorted(kinds)})")
        if not isinstance(value, kinds[key]) or (bool not in kinds[key] and value is True):
            raise ConfigError(f"secure_aggregation.{key}: wrong type {type(value).__name__}")
        values[key] = Path(str(value)) if key == "enrolment_key" else value
    settings = SecAggSettings(**{**defaults.__dict__, **values})
    if settings.join_timeout_s <= 0 or settings.phase_timeout_s <= 0:
        raise ConfigError("secure_aggregation: timeouts must be > 0")
    if not 0.0 < settings.noise_delta < 1.0:
        raise ConfigError("secure_aggregation.noise_delta: must be in (0, 1)")
    try:  # the same checks the cohorts apply, now, with the key names
        settings.cohort_config(_PROBE)
    except (ValueError, SecAggError) as exc:
        raise ConfigError(f"secure_aggregation: {exc}") from exc
    return settings


_PROBE = Manifest("probe", (ParamSpec("w", (1,)),), "x", (1,), 2)


class CohortRunner:
    """Open cohort + running cohorts; deadlines come from the caller's clock (`now`)."""

    def __init__(
        self, settings: SecAggSettings, manifest: Manifest, trust: Trust | None = None
    ) -> None:
        self.settings = settings
        self.trust = trust  # the enrolment key: refuse unenrolled joins and bad U3 signatures
        self.config = settings.cohort_config(manifest)
        self._max_bytes = 64 * 1024 + manifest.num_params * 4
        self._open: ServerCohort | None = None
        self._running: list[ServerCohort] = []
        self._of_device: dict[str, ServerCohort] = {}
        self._phase_since: dict[bytes, tuple[CohortPhase, float]] = {}
        self.completed = 0
        self.abandoned = 0
        self.noise_multipliers: list[float] = []  # one per applied cohort with noise

    def epsilon(self) -> float | None:
        """epsilon at `noise_delta` of the distributed noise over every applied cohort so far."""
        if not self.noise_multipliers:
            return None
        from server.privacy.accountant import epsilon

        steps = len(self.noise_multipliers)
        return epsilon(min(self.noise_multipliers), steps, self.settings.noise_delta)

    def _account(self, cohort: ServerCohort) -> None:
        view, result = cohort.view, cohort.result
        if self.settings.noise_std <= 0 or view is None or result is None:
            return
        a = view.announce
        sigma = self.settings.noise_std * (len(result.members) / len(a.members)) ** 0.5
        sensitivity = a.clip + a.kept**0.5 / view.scale  # clip, then rounding up to 1 per coord
        self.noise_multipliers.append(sigma / sensitivity)
        _log.info(
            "secagg distributed noise: epsilon %.3f at delta %g after %d cohorts",
            self.epsilon(),
            self.settings.noise_delta,
            len(self.noise_multipliers),
        )

    def _new_cohort(self, version: int) -> ServerCohort:
        cohort = ServerCohort(self.config, os.urandom(16), version, os.urandom(32), self.trust)
        self._running.append(cohort)
        return cohort

    def max_bytes_for(self, device_id: str) -> int:
        """The size a message from `device_id` may have, checked before decoding: a masked
        vector only from a member whose cohort is masking, a join's size from a non-member
        (a 4 MB message at the vector's cap took 0.3 s and +282 MiB to decode)."""
        cohort = self._of_device.get(device_id)
        if cohort is None:
            return JOIN_MAX_BYTES
        if cohort.phase is CohortPhase.MASKING:
            return self._max_bytes
        return min(self._max_bytes, SMALL_MESSAGE_BYTES)

    def waiting(self) -> tuple[str, ...]:
        """Devices that joined the open cohort (none open: empty)."""
        return () if self._open is None else self._open.members

    def handle(self, device_id: str, payload: bytes, now: float, version: int) -> Outbox:
        """One message from `device_id`'s secagg_up topic; refusals are logged, never raised."""
        try:
            msg = decode_up(payload, self._max_bytes)
            if msg.device_id != device_id:
                raise SecAggError(SecAggReason.NOT_MEMBER, "device id differs from the topic's")
            if isinstance(msg, SecAggJoin):
                if self._open is None:
                    self._open = self._new_cohort(version)
                cohort = self._open
                cohort.base_version = version  # the version members will train from
                out = cohort.add_join(msg)  # a refused join (e.g. BAD_KEY) leaves no trace
                self._of_device[device_id] = cohort
            else:
                cohort = self._of_device.get(device_id)  # type: ignore[assignment]
                if cohort is None or msg.cohort_id != cohort.cohort_id:
                    return []  # a cohort that ended or was never ours: nothing to say
                if isinstance(msg, SharesMessage):
                    out = cohort.on_shares(msg)
                elif isinstance(msg, MaskedInput):
                    out = cohort.on_masked(msg)
                elif isinstance(msg, ConsistencySignature):
                    out = cohort.on_consistency(msg)
                else:
                    assert isinstance(msg, UnmaskResponse)
                    out = cohort.on_reveal(msg)
        except (ProtocolError, SecAggError) as exc:
            _log.warning("secagg message from %s refused: %s", device_id, exc)
            return []
        return self._advance(cohort, out, now)

    def _advance(self, cohort: ServerCohort, out: list[Any], now: float) -> Outbox:
        if cohort is self._open and cohort.phase is not CohortPhase.OPEN:
            self._open = None
        last = self._phase_since.get(cohort.cohort_id)
        if last is None or last[0] is not cohort.phase:
            self._phase_since[cohort.cohort_id] = (cohort.phase, now)
        return [(d, encode(m)) for d, m in out]

    def tick(self, now: float, version: int) -> Outbox:
        """Close every phase whose deadline passed."""
        out: Outbox = []
        for cohort in list(self._running):
            phase, since = self._phase_since.get(cohort.cohort_id, (cohort.phase, now))
            limit = (
                self.settings.join_timeout_s
                if phase is CohortPhase.OPEN
                else self.settings.phase_timeout_s
            )
            if cohort.phase in (CohortPhase.DONE, CohortPhase.ABANDONED) or now - since < limit:
                continue
            if cohort.phase is CohortPhase.OPEN:
                if not cohort.members:
                    continue
                cohort.base_version = version
            out += self._advance(cohort, cohort.close(), now)
        return out

    def finished(self) -> list[tuple[ServerCohort, dict[str, object] | None]]:
        """Cohorts that ended since the last call, with the record to apply (None: abandoned)."""
        done = [c for c in self._running if c.phase in (CohortPhase.DONE, CohortPhase.ABANDONED)]
        out: list[tuple[ServerCohort, dict[str, object] | None]] = []
        for cohort in done:
            self._running.remove(cohort)
            self._phase_since.pop(cohort.cohort_id, None)
            for d in cohort.members:
                if self._of_device.get(d) is cohort:
                    del self._of_device[d]
            record = None
            if cohort.result is not None:
                r = cohort.result
                record = cohort_record(
                    r.cohort_id, r.base_version, r.mean, r.num_samples, len(r.members)
                )
                self.completed += 1
                self._account(cohort)
                _log.info(
                    "cohort %s: sum of %d members unmasked (excluded %s)",
                    r.cohort_id.hex()[:8],
                    len(r.members),
                    list(r.excluded),
                )
            else:
                self.abandoned += 1
                _log.warning(
                    "cohort %s abandoned: %s", cohort.cohort_id.hex()[:8], cohort.abandon_reason
                )
            out.append((cohort, record))
        return out

    def results(self, cohort: ServerCohort, version: int) -> Outbox:
        return [(d, encode(m)) for d, m in cohort.results(version)]
