"""The configurations the benchmark audits, written as an operator writes server.toml.

Every preset releases models with sigma = 5 and C = 1 (epsilon about 1.7 after 4 releases at
delta 1e-5 by the RDP accountant) so that the audit's scores are comparable across them.
"""

from __future__ import annotations

__all__ = ["PRESETS"]

_PRIVACY = """
[privacy]
epsilon = 50.0
delta = 1e-5
noise_multiplier = 5.0
clip_norm = 1.0
"""

_PLAIN = """
[strategy]
name = "fedbuff"
buffer_size = 8
[strategy.staleness]
function = "polynomial"
a = 0.5
[strategy.robust]
enabled = false
"""

PRESETS: dict[str, str] = {
    # FedBuff, no defence, a fixed clip norm
    "fixed-clip": _PLAIN + _PRIVACY,
    # C follows the median norm (Andrew et al. 2021); its noisy count takes part of sigma
    "adaptive-clip": _PLAIN + _PRIVACY + "adaptive_clip = true\nclipped_count_std = 5.0\n",
    # what an operator gets by default: the robust defence's norm bound and one update per
    # device, aggregated by the mean under DP
    "robust-default": """
[strategy]
name = "fedbuff"
buffer_size = 8
[strategy.staleness]
function = "polynomial"
a = 0.5
"""
    + _PRIVACY,
    # secure aggregation: each cohort of 8 is one buffer; under DP members clip to C (less
    # fixed-point rounding) and the cohort's sum is noised
    "secure-aggregation": _PLAIN
    + _PRIVACY
    + """
[secure_aggregation]
enabled = true
cohort_size = 8
min_size = 8
""",
}
