"""Secure aggregation on the device: join a cohort, train from its version, mask, reveal.

    [secure_aggregation]        (agent.toml)
    enabled = false
    cohort_timeout_s = 300      give up on a cohort that has not finished by then (retry later)
    min_size = 3                refuse a cohort announced with fewer members
    min_threshold_fraction = 2/3  refuse a threshold t < ceil(fraction * neighbourhood)
    identity_key = "identity.key"     this device's enrolled identity (agent/secagg_identity.py)
    identity_cert = "identity.cert"
    enrolment_key = "enrolment.pub"

The two minimums are this device's own: a server (or relay) announcing a weaker cohort gets no
share from it. Keep them at or below the server's `min_size` and `threshold_fraction`. The
identity signs this device's keys and survivor lists; the enrolment key checks every other
member's, so keys a relay or server substituted are refused before any share is dealt.

The protocol steps are protocol/secagg/device.py's pure state machine; this module moves its
messages over the device's own secagg_up / secagg_down topics, keeps the last few global models
(a cohort trains from the version it announces) and holds the error-feedback residual until the
server says the cohort's sum was applied. Nothing here is stored in the outbox: a cohort is live,
and a device that vanishes is simply a drop-out the cohort recovers from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.errors import ProtocolError
from protocol.secagg import SecAggError
from protocol.secagg.device import DevicePhase, DevicePolicy, DeviceSession
from protocol.secagg.identity import DeviceIdentity
from protocol.secagg.messages import (
    AnyDown,
    AnyUp,
    CohortAnnounce,
    CohortResult,
    ConsistencyRequest,
    ShareBundle,
    UnmaskRequest,
    decode_down,
    encode,
)
from protocol.topics import secagg_down_topic, secagg_up_topic

__all__ = ["RoundOutcome", "SecAggAgentSettings", "SecureRounds"]

_log = logging.getLogger("agent.secagg")
_KEEP_MODELS = 3  # a cohort announced just before a new offer still trains from its version


@dataclass(frozen=True)
class SecAggAgentSettings:
    enabled: bool = False
    cohort_timeout_s: float = 300.0
    min_size: int = 3  # the server's default min_size; 2 members learn each other's input
    min_threshold_fraction: float = 2 / 3  # the server's default threshold_fraction
    identity_key: Path | None = None  # parse_config resolves the defaults beside agent.toml
    identity_cert: Path | None = None
    enrolment_key: Path | None = None

    def policy(self) -> DevicePolicy:
        return DevicePolicy(self.min_size, self.min_threshold_fraction)


class _PublishFailed(Exception):
    """A cohort message that could not be handed to the link (offline, queue full)."""


@dataclass(frozen=True)
class RoundOutcome:
    applied: bool
    base_version: int
    residual: np.ndarray | None  # (n,) float32 new residual when applied
    reason: str


class SecureRounds:
    def __init__(
        self,
        settings: SecAggAgentSettings,
        *,
        fleet: str,
        device_id: str,
        model_id: str,
        identity: DeviceIdentity,
        publish: Callable[[str, bytes], None],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.device_id, self.model_id = device_id, model_id
        self._identity = identity
        self.topic_down = secagg_down_topic(fleet, device_id)
        self._topic_up = secagg_up_topic(fleet, device_id)
        self._publish, self._clock = publish, clock
        self._models: dict[int, np.ndarray] = {}
        self.session: DeviceSession | None = None
        self._joined_at = 0.0
        self._update: tuple[np.ndarray, int] | None = None  # corrected delta, samples
        self._residual: np.ndarray | None = None
        self._outcome: RoundOutcome | None = None
        self.bytes_published = 0

    # --- models ---------------------------------------------------------------------------

    def remember(self, version: int, weights: np.ndarray) -> None:
        self._models[version] = weights
        for old in sorted(self._models)[:-_KEEP_MODELS]:
            del self._models[old]

    # --- cohort life ----------------------------------------------------------------------

    @property
    def in_cohort(self) -> bool:
        return self.session is not None and not self.session.finished

    def join(self) -> None:
        self.session = DeviceSession(
            self.device_id, self.model_id, self._identity, self.settings.policy()
        )
        self._joined_at = self._clock()
        self._update = self._residual = None
        session = self.session
        self._guarded(lambda: self._send(session.join()))
        if self.in_cohort:
            _log.info("asked to join a secure-aggregation cohort")

    def _send(self, msg: AnyUp) -> None:
        data = encode(msg)
        try:
            self._publish(self._topic_up, data)
        except (ConnectionError, OSError, ProtocolError) as exc:  # offline, queue full, oversize
            raise _PublishFailed(f"publish failed: {exc}") from exc
        self.bytes_published += len(data)

    def _guarded(self, step: Callable[[], None]) -> None:
        """One cohort step. Nothing a server, peer or relay sends, and no failed publish, ends
        the agent: a refusal that fails the session, or a publish that did not go out, gives
        this cohort up (one log line) and the device asks for a new one later; a message the
        session merely refuses (stale, duplicate) is ignored."""
        s = self.session
        try:
            step()
        except _PublishFailed as exc:
            self._end(False, str(exc))  # a drop-out: the cohort recovers without this device
        except (ProtocolError, SecAggError) as exc:
            if s is not None and s.finished:
                self._end(False, str(exc))
            else:
                _log.warning("cohort message ignored: %s", exc)
        except Exception as exc:  # a bug met by hostile input: lose the cohort, not the device
            _log.exception("secure-aggregation step failed")
            self._end(False, f"internal error: {exc!r}")

    def training_base(self) -> tuple[int, np.ndarray] | None:
        """(version, weights) to train from once the cohort is announced and not yet trained."""
        s = self.session
        if s is None or s.view is None or self._update is not None or s.finished:
            return None
        version = s.view.announce.base_version
        weights = self._models.get(version)
        return None if weights is None else (version, weights)

    def submit(self, corrected: np.ndarray, num_samples: int) -> None:
        """The trained delta plus the residual; masked as soon as the shares bundle is here."""
        self._update = (corrected, num_samples)
        self._guarded(self._mask_if_ready)

    def _mask_if_ready(self) -> None:
        s = self.session
        if s is None or self._update is None or s.phase is not DevicePhase.READY:
            return
        corrected, samples = self._update
        msg, sent = s.mask(corrected, samples)
        self._residual = (corrected - sent).astype(np.float32)  # what the cohort sum left out
        self._send(msg)
        _log.info("masked update sent (%d bytes)", len(msg.data))

    def on_message(self, payload: bytes) -> None:
        try:
            msg = decode_down(payload)
        except ProtocolError as exc:
            _log.warning("cohort message ignored: %s", exc)
            return
        s = self.session
        if s is not None:
            self._guarded(lambda: self._step(s, msg))

    def _step(self, s: DeviceSession, msg: AnyDown) -> None:
        if isinstance(msg, CohortAnnounce):
            self._send(s.on_announce(msg))
            _log.info(
                "in cohort %s (v%d, %d members, t=%d)",
                msg.cohort_id.hex()[:8],
                msg.base_version,
                len(msg.members),
                msg.threshold,
            )
        elif isinstance(msg, ShareBundle):
            s.on_bundle(msg)
            self._mask_if_ready()
        elif isinstance(msg, ConsistencyRequest):
            self._send(s.on_check(msg))
        elif isinstance(msg, UnmaskRequest):
            self._send(s.on_unmask(msg))
        elif isinstance(msg, CohortResult):
            self._finish(msg)

    def _finish(self, result: CohortResult) -> None:
        s = self.session
        assert s is not None
        s.on_result(result)
        self._end(result.applied and self._residual is not None, result.reason)

    def _end(self, applied: bool, reason: str) -> None:
        s = self.session
        base = s.view.announce.base_version if s is not None and s.view is not None else -1
        self._outcome = RoundOutcome(applied, base, self._residual if applied else None, reason)
        self.session, self._update, self._residual = None, None, None
        _log.log(
            logging.INFO if applied else logging.WARNING,
            "cohort round %s (%s)",
            "applied" if applied else "not applied",
            reason,
        )

    def poll(self) -> RoundOutcome | None:
        """Time out a stuck cohort; hand over the outcome of a finished one (once)."""
        if self.in_cohort and self._clock() - self._joined_at > self.settings.cohort_timeout_s:
            self._end(False, f"no result within {self.settings.cohort_timeout_s:g} s")
        outcome, self._outcome = self._outcome, None
        return outcome

    def give_up(self, why: str) -> None:
        if self.in_cohort:
            self._end(False, why)
