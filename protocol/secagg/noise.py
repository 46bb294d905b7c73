"""Distributed discrete noise: each member adds its share of the sum's noise before masking.

The server then never holds an un-noised sum. We use the Skellam distribution (Agarwal, Kairouz
and Liu, "The Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021):

    each of n members adds  Sk(mu) = Poisson(mu) - Poisson(mu)   per coordinate (integers)
    the sum holds           Sk(n mu): variance 2 n mu   (Skellam is closed under summation)
    mu = (sigma * s)^2 / (2 n)   so the decoded sum has standard deviation sigma (s = scale)

Why Skellam and not Gaussian: the masks work in Z_{2^b}, so the noise must be an integer and
survive the modular sum exactly; a sum of discrete Gaussians is not a discrete Gaussian, a sum of
Skellams is a Skellam, so the accountant analyses one known distribution. Its Renyi DP is within
a small additive term of the Gaussian mechanism with the same variance (Agarwal et al., Thm. 3.5),
with the L2 sensitivity taken after clipping *and* stochastic rounding (<= C s + sqrt(d) in
integer units, so noise must be sized for the rounded vector). If members drop, the sum holds
only the survivors' shares: the variance falls to 2 |U3| mu (members should over-provision by
n / t; not done here). Accounting of these releases belongs to the DP accountant (not built on
this branch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["skellam", "skellam_share_mu", "wrap"]


def skellam_share_mu(noise_std: float, scale: float, members: int) -> float:
    """mu of one member's Skellam share so n shares sum to std `noise_std` in update units."""
    return (noise_std * scale) ** 2 / (2.0 * members)


def skellam(mu: float, size: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """(size,) int64 draws of Poisson(mu) - Poisson(mu)."""
    return rng.poisson(mu, size).astype(np.int64) - rng.poisson(mu, size).astype(np.int64)


def wrap(values: npt.NDArray[np.int64], bits: int) -> npt.NDArray[Any]:
    """Signed integers -> their residues in Z_{2^b} as uint16 / uint32."""
    dtype = np.dtype("<u2") if bits == 16 else np.dtype("<u4")
    return (values & ((1 << bits) - 1)).astype(dtype)
