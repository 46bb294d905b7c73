"""Privacy accounting with Google's `dp-accounting` (RDP or PLD). No privacy maths of our own.

One buffer flush is one Gaussian mechanism on a sum of clipped contributions: noise multiplier
sigma = noise std / clip norm. `epsilon(...)` composes `steps` such events:

    event = SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)     q < 1
            SelfComposed(Gaussian(sigma), steps)                         q = 1 (no amplification)

The server always passes q = 1: it does not sample devices at random (they arrive when they are
idle and charging), so claiming amplification by sampling would be an invalid bound
(docs/privacy.md, "Differential privacy"). q < 1 is here for reproducing published vectors and for
a future real sampler, nothing else.

Adaptive clipping (Andrew et al. 2021) spends part of the budget on a noisy count; the sum's noise
multiplier is raised so that the pair is exactly one Gaussian mechanism with the configured sigma:

    sigma_sum = (sigma^-2 - (2 * count_std)^-2) ^ -1/2

The factor 2 is the count's sensitivity of 1/2: each device adds b - 1/2 (centred, b = 1 when
unclipped), so zeroing a device moves the count by 1/2 (mechanism.py; tested by two worlds in
tests/unit/privacy/test_adaptive_clip_sensitivity.py).
"""

from __future__ import annotations

import math
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dp_accounting

# dp_accounting (with scipy) takes ~1-3 s to import: only servers that run DP pay for it.

__all__ = [
    "Method",
    "calibrate_noise_multiplier",
    "epsilon",
    "flush_event",
    "sum_noise_multiplier",
]


class Method(StrEnum):
    RDP = "rdp"  # Renyi DP (Mironov 2017): what Opacus and Flower report; slightly loose
    PLD = "pld"  # privacy loss distributions: tighter, slower


def flush_event(
    noise_multiplier: float, steps: int, sampling_probability: float = 1.0
) -> dp_accounting.DpEvent:
    """The DpEvent of `steps` flushes, each a Gaussian (optionally Poisson-sampled) mechanism."""
    import dp_accounting

    if not noise_multiplier > 0 or not 0.0 < sampling_probability <= 1.0 or steps < 0:
        raise ValueError(
            f"need noise_multiplier > 0, 0 < q <= 1, steps >= 0; got {noise_multiplier}, "
            f"{sampling_probability}, {steps}"
        )
    one: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_probability < 1.0:
        one = dp_accounting.PoissonSampledDpEvent(sampling_probability, one)
    return dp_accounting.SelfComposedDpEvent(one, steps)


def _accountant(method: Method) -> dp_accounting.PrivacyAccountant:
    from dp_accounting import pld, rdp

    if method is Method.RDP:
        return rdp.RdpAccountant()
    return pld.PLDAccountant()


@lru_cache(maxsize=4096)
def epsilon(
    noise_multiplier: float,
    steps: int,
    delta: float,
    sampling_probability: float = 1.0,
    method: Method = Method.RDP,
) -> float:
    """epsilon at `delta` after `steps` events (0 after none). Cached: the server asks per flush."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if steps == 0:
        return 0.0
    import dp_accounting

    accountant = _accountant(Method(method))
    if method is Method.PLD and sampling_probability == 1.0:
        # n unsampled Gaussian releases compose exactly into one with sigma / sqrt(n) (Dong,
        # Roth & Su 2019, Gaussian DP); PLD's self-composition of n of them is slow and looser
        accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier / math.sqrt(steps)))
    else:
        accountant.compose(flush_event(noise_multiplier, steps, sampling_probability))
    return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(
    target_epsilon: float, delta: float, steps: int, method: Method = Method.RDP
) -> float:
    """The smallest sigma (to 1e-4 relative) whose `steps` unsampled flushes stay within
    `target_epsilon` at `delta` (dp-accounting's own bisection)."""
    if not target_epsilon > 0 or math.isinf(target_epsilon) or steps < 1:
        raise ValueError(f"need a finite epsilon > 0 and steps >= 1, got {target_epsilon}, {steps}")
    import dp_accounting
    from dp_accounting import pld, rdp

    if method is Method.PLD:  # calibrate one Gaussian (see epsilon()), then spread over steps
        one = dp_accounting.calibrate_dp_mechanism(
            pld.PLDAccountant,
            dp_accounting.GaussianDpEvent,
            target_epsilon,
            delta,
            # PLD's cost grows as 1/sigma (15 s at 0.05): this bracket covers epsilon <~ 20
            dp_accounting.ExplicitBracketInterval(0.25, 100.0),
            tol=1e-3,
        )
        return float(one) * math.sqrt(steps)
    sigma = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda s: flush_event(s, steps),
        target_epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-4,
    )
    return float(sigma)


def sum_noise_multiplier(noise_multiplier: float, count_std: float) -> float:
    """The sum's sigma once adaptive clipping's noisy count (std `count_std`) takes its share."""
    rest = noise_multiplier**-2 - (2.0 * count_std) ** -2
    if rest <= 0:
        raise ValueError(
            f"adaptive clipping: the clipped-count noise std {count_std:g} is too small for "
            f"noise multiplier {noise_multiplier:g} (need 2 * std > sigma); raise "
            "privacy.clipped_count_std or buffer_size, or use a fixed clip"
        )
    return float(rest**-0.5)
