"""When the server publishes a new offer: coalesced, never more often than a minimum interval.

An offer carries the whole model and goes to every device (4 MiB each for 1M parameters). One
offer per tiny update let 400 updates (113 kB) cause 244 offers, 9.5 MB to every device (issue
15). Now a new version is published when

    at least `min_interval_seconds` passed since the last offer, and
    `every_versions` new versions arrived, or `every_seconds` passed with any new version.

The worker calls this every loop turn (at least every 0.1 s, with or without traffic), so the
latest version is always published eventually: at most max(min_interval, every_seconds) late.
"""

from __future__ import annotations

__all__ = ["offer_due"]


def offer_due(
    version: int,
    published_version: int,
    now: float,
    published_at: float,
    *,
    every_versions: int,
    every_seconds: float,
    min_interval_seconds: float,
) -> bool:
    if version == published_version:
        return False
    since = now - published_at
    if since < min_interval_seconds:
        return False
    return version - published_version >= every_versions or since >= every_seconds
