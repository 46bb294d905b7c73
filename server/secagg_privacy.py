"""Secure aggregation under central DP: every cohort member is one device of the accounting.

The server adds DP noise to a cohort's unmasked *sum* (server/privacy), so each member's
contribution to that sum must be bounded by the DP clip C, rounding included:

    member clip c  with  c + sqrt(kept) / s(c) <= C     s(c): the fixed-point scale for c
                                                         (stochastic rounding moves each
                                                         coordinate by < 1 / s)

and the cohort enters the DP buffer as the sum of `members` contributions of sensitivity C each
(`DpMechanism.admit`), not as one device's mean clipped to C (which one member could flip from
-C to +C). What the config must refuse: a member clip above C (the noise would not cover a
member) and adaptive clipping (the server never sees a member's norm, so it cannot count them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from protocol.errors import ConfigError
from protocol.manifest import Manifest
from protocol.secagg.fixedpoint import scale_for
from server.privacy import PrivacyConfig
from server.secagg import SecAggSettings

__all__ = ["dp_member_clip", "member_settings", "secagg_under_privacy"]


def secagg_under_privacy(
    settings: SecAggSettings, table: Mapping[str, Any], privacy: PrivacyConfig | None
) -> SecAggSettings:
    """The `[secure_aggregation]` settings DP allows: members clip to at most C (C when the
    table leaves `clip` out); combinations that break the DP bound are refused."""
    if privacy is None or not settings.enabled:
        return settings
    if privacy.adaptive_clip:
        raise ConfigError(
            "privacy.adaptive_clip: not with secure aggregation (the server never sees a "
            "member's update norm, so it cannot count the unclipped ones); use a fixed clip_norm"
        )
    if "clip" not in table:
        return dataclasses.replace(settings, clip=privacy.clip_norm)
    if settings.clip > privacy.clip_norm:
        raise ConfigError(
            f"secure_aggregation.clip: {settings.clip:g} exceeds privacy.clip_norm "
            f"{privacy.clip_norm:g}; a member's update must be bounded by the DP clip (leave "
            "secure_aggregation.clip out to use it)"
        )
    return settings


def dp_member_clip(settings: SecAggSettings, manifest: Manifest, dp_clip: float) -> float:
    """The clip members apply so that clip plus fixed-point rounding stays within `dp_clip`.

    c = B - sqrt(kept) / s(B) with B = min(clip, C): the scale only grows as the clip shrinks,
    so c's own rounding is at most s(B)'s and c + rounding(c) <= B."""
    kept = max(1, round(settings.kept_fraction * manifest.num_params))
    bound = min(settings.clip, dp_clip)
    scale = scale_for(settings.bits, bound, settings.cohort_size, settings.noise_std)
    member = bound - math.sqrt(kept) / scale
    if member <= 0.5 * bound:
        raise ConfigError(
            f"secure_aggregation: {settings.bits}-bit fixed point rounds {kept} coordinates by "
            f"more than half the DP clip {dp_clip:g}; use bits = 32"
        )
    return member


def member_settings(
    settings: SecAggSettings, manifest: Manifest, privacy: PrivacyConfig | None
) -> SecAggSettings:
    """What cohorts announce for this model: with DP, the member clip of `dp_member_clip`."""
    if privacy is None or not settings.enabled:
        return settings
    return dataclasses.replace(settings, clip=dp_member_clip(settings, manifest, privacy.clip_norm))
