"""The DP mechanism a strategy runs on its buffer: clip on the way in, noise on the way out.

    apply:  delta_i <- clip_l2(delta_i, C)                   (after decoding / dequantisation)
            S += s(tau_i) * delta_i                           (the strategy; s(tau) <= 1)
    flush:  refuse if epsilon(flushes + 1) > budget           (the model is not released)
            S~ = S + N(0, (sigma_sum * C)^2)                  key + version: replayable
            C  <- C * exp(-eta * (b~ / m + 1/2 - gamma))      adaptive: b~ = sum(b_i - 1/2) + noise,
                                                              b_i = 1 if unclipped (Andrew et al.)
            g  = S~ / m                                       (the strategy)

Sensitivity: each device adds at most one term to S per flush (the open buffer refuses a second
one, Reason.DP_BUFFER: server/buffer.py, server/reducer.py), weighted by s(tau) * 1 <= 1, so S
moves by at most C when one device's contribution is zeroed (the "zero-out" neighbouring relation
of Kairouz et al. 2021, valid because who arrives in which flush does not depend on the data).
Weights above 1 (FedBuff's sample_weighted) would break that bound and are refused.

State (flushes spent, C, the noise key) lives in the strategy's state dict, the open buffer's clip
counts in the buffer's (server/buffer.py), so checkpoints and log replay neither re-spend nor
forget budget. Pure: no clock, no unseeded randomness (the key is drawn once, before any flush,
and checkpointed).
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

import numpy as np

from protocol.clipping import clip_l2
from protocol.errors import Reason, RejectedUpdate
from server.privacy.accountant import epsilon, sum_noise_multiplier
from server.privacy.config import PrivacyConfig
from server.privacy.noise import KEY_BYTES, NoiseDomain, derive_key, gaussian

__all__ = ["DpMechanism", "PrivacyStatus"]

_log = logging.getLogger(__name__)
_PREFIX = "dp_"  # keys in the owning strategy's flat state dict


@dataclass(frozen=True, slots=True)
class PrivacyStatus:
    """What the server reports (status, metrics, the signed offer)."""

    epsilon_spent: float
    epsilon_budget: float
    delta: float
    noise_multiplier: float
    clip_norm: float  # C for the next flush
    flushes: int  # noised releases so far
    exhausted: bool  # one more flush would exceed the budget: training has stopped
    accountant: str
    sampling_amplification: bool = False  # never claimed: devices are not sampled at random

    def offer_fields(self) -> dict[str, float]:
        """The numbers a signed ModelOffer carries about the model it offers."""
        return {
            "epsilon": self.epsilon_spent,
            "delta": self.delta,
            "epsilon_budget": self.epsilon_budget,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "flushes": float(self.flushes),
            "exhausted": 1.0 if self.exhausted else 0.0,  # devices stop training on this model
        }


class DpMechanism:
    def __init__(self, config: PrivacyConfig, expected_per_flush: int) -> None:
        if expected_per_flush < 1:
            raise ValueError(f"expected_per_flush must be >= 1, got {expected_per_flush}")
        self.config = config
        self.expected_per_flush = expected_per_flush  # m: FedBuff's K, FedAvg's round size
        sigma = config.noise_multiplier
        if config.adaptive_clip:
            self.count_std = config.clipped_count_std or expected_per_flush / 20.0
            self.sum_sigma = sum_noise_multiplier(sigma, self.count_std)
        else:
            self.count_std = 0.0
            self.sum_sigma = sigma
        self._key = (
            derive_key(config.seed) if config.seed is not None else secrets.token_bytes(KEY_BYTES)
        )
        self._clip = config.clip_norm
        self._flushes = 0
        self._announced = False

    # --- accounting ---------------------------------------------------------------------------

    def epsilon_after(self, flushes: int) -> float:
        # q = 1: no amplification by sampling is claimed (see accountant.py)
        c = self.config
        return epsilon(c.noise_multiplier, flushes, c.delta, 1.0, c.accountant)

    @property
    def exhausted(self) -> bool:
        """One more flush would take epsilon past the budget (derived, never stored: a raised
        budget in the config lets a restarted server resume)."""
        return self.epsilon_after(self._flushes + 1) > self.config.epsilon

    def status(self) -> PrivacyStatus:
        c = self.config
        return PrivacyStatus(
            epsilon_spent=self.epsilon_after(self._flushes),
            epsilon_budget=c.epsilon,
            delta=c.delta,
            noise_multiplier=c.noise_multiplier,
            clip_norm=self._clip,
            flushes=self._flushes,
            exhausted=self.exhausted,
            accountant=c.accountant.value,
        )

    def check_open(self) -> None:
        """Admission: refuse updates once no further flush fits in the budget."""
        if self.exhausted:
            raise RejectedUpdate(
                Reason.PRIVACY_BUDGET,
                f"privacy budget epsilon={self.config.epsilon:g} spent after {self._flushes} "
                "flushes; training has stopped, the last model keeps being served",
            )

    # --- the mechanism ------------------------------------------------------------------------

    def clip(self, delta: np.ndarray) -> tuple[np.ndarray, bool]:
        """(n,) float32 -> clipped to C, and whether it was within C already (adaptive
        clipping counts those: the buffer keeps the counts)."""
        clipped, was_clipped = clip_l2(delta, self._clip)
        return clipped, not was_clipped

    def admit(
        self, delta: np.ndarray, device_id: str, members: int = 1
    ) -> tuple[np.ndarray, int, bool]:
        """One update's contribution to the noised sum, its weight (devices it stands for) and
        whether it was within C (for the buffer's adaptive-clipping counts).

        members > 1: `delta` is a secure-aggregation cohort's mean over `members` devices, each
        of which clipped to C (server/secagg_privacy.py); the cohort adds their sum, so every
        member has sensitivity C, as the accounting assumes. Clipping the sum to members * C
        only bounds a cohort with a member that did not clip (it cannot change honest sums)."""
        if members == 1:
            clipped, within = self.clip(delta)
            return clipped, 1, within
        if self.config.adaptive_clip:
            raise ValueError("privacy: adaptive clipping cannot count a cohort's members")
        total = (delta.astype(np.float64) * members).astype(np.float32)  # (n,) the cohort's sum
        bounded, was_clipped = clip_l2(total, members * self._clip)
        if was_clipped:
            _log.warning(
                "privacy: %s's sum exceeds %d members x C = %g; clipped (a member did not clip)",
                device_id,
                members,
                members * self._clip,
            )
        return bounded, members, False

    def release(
        self, total: np.ndarray, version: int, *, unclipped: int, clipped: int
    ) -> np.ndarray | None:
        """The noised sum for the flush taking `version` to `version + 1`, or None when that
        flush would exceed the budget (the caller drops its buffer and keeps the model).
        `unclipped` of the buffer's `clipped` contributions were within C (adaptive clipping)."""
        if self.exhausted:
            spent = self.epsilon_after(self._flushes)
            would = self.epsilon_after(self._flushes + 1)
            _log.warning(
                "privacy budget: flush %d refused (epsilon would be %.4g > budget %.4g; spent "
                "%.4g); the buffered updates are dropped and model version %d keeps being served",
                self._flushes + 1,
                would,
                self.config.epsilon,
                spent,
                version,
            )
            return None
        std = self.sum_sigma * self._clip
        noise = gaussian(self._key, NoiseDomain.SUM, version, total.shape[0], std)
        noised: np.ndarray = (total.astype(np.float64) + noise).astype(np.float32)  # (n,) f32
        if self.config.adaptive_clip:
            self._adapt_clip(version, unclipped, clipped)
        self._flushes += 1
        if self.exhausted and not self._announced:
            self._announced = True
            _log.warning(
                "privacy budget: epsilon %.4g of %.4g spent after %d flushes; the next flush "
                "would exceed it, so training stops and version %d is the last model",
                self.epsilon_after(self._flushes),
                self.config.epsilon,
                self._flushes,
                version + 1,
            )
        return noised

    def _adapt_clip(self, version: int, unclipped: int, clipped: int) -> None:
        # Andrew et al. 2021: each update adds b - 1/2 (b = 1 when unclipped), so zeroing one
        # device moves the count by 1/2, the sensitivity `sum_noise_multiplier` assumes. The
        # divisor is the public m, not the buffer's count, which would make it data-dependent.
        c = self.config
        centred = unclipped - clipped / 2.0
        noisy = centred + float(
            gaussian(self._key, NoiseDomain.CLIP_COUNT, version, 1, self.count_std)[0]
        )
        fraction = noisy / self.expected_per_flush + 0.5
        self._clip *= math.exp(-c.clip_learning_rate * (fraction - c.target_quantile))

    # --- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, float | int | str]:
        return {
            _PREFIX + "key": self._key.hex(),
            _PREFIX + "clip": self._clip,
            _PREFIX + "flushes": self._flushes,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from a strategy state dict. A state without DP keys (a server that ran
        without privacy) is refused: its model was released without noise."""
        if _PREFIX + "key" not in state:
            raise ValueError(
                "privacy is configured but the saved state has no privacy record (it was "
                "written without [privacy]); use a fresh state folder"
            )
        key = bytes.fromhex(str(state[_PREFIX + "key"]))
        if len(key) != KEY_BYTES:
            raise ValueError("privacy state: bad noise key")
        self._key = key
        self._clip = float(state[_PREFIX + "clip"])  # type: ignore[arg-type]
        self._flushes = int(state[_PREFIX + "flushes"])  # type: ignore[call-overload]
        if not (math.isfinite(self._clip) and self._clip > 0) or self._flushes < 0:
            raise ValueError("privacy state: bad clip norm or flush count")
