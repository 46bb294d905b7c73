"""Which MQTT filters the server holds, and which an earlier run may have left in its session.

A persistent session keeps its subscriptions across restarts. A server that changes between a
plain subscription and a `$share/<group>/...` one (or between groups) must unsubscribe the old
filter, or the broker delivers every update twice: once per matching subscription (issue 15).
The filters of the last run are remembered in the state folder (`subscriptions`, one per line),
so the old group's name is known even after the config changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.topics import (
    DeviceTopicKind,
    device_subscription,
    shared_update_subscription,
    update_subscription,
)

__all__ = ["SubscriptionPlan", "plan_subscriptions", "remember_subscriptions"]

_FILE = "subscriptions"


@dataclass(frozen=True, slots=True)
class SubscriptionPlan:
    wanted: tuple[tuple[str, int], ...]  # (filter, QoS) to subscribe
    unwanted: tuple[str, ...]  # unsubscribe (harmless if the session never held them)


def plan_subscriptions(fleet: str, shared_group: str, state_dir: Path) -> SubscriptionPlan:
    updates = (
        shared_update_subscription(fleet, shared_group)
        if shared_group
        else update_subscription(fleet)
    )
    # status: to clear what a device leaves retained there when it is oversized or garbage. QoS 0:
    # never queued for us while we are away (the queue is for updates); the retained ones come
    # again on every (re)subscribe anyway.
    wanted = ((updates, 1), (device_subscription(fleet, DeviceTopicKind.STATUS), 0))
    filters = {f for f, _ in wanted}
    try:
        before = (state_dir / _FILE).read_text().split()
    except FileNotFoundError:
        before = []
    unwanted = {f for f in before if f not in filters}
    if shared_group:
        unwanted.add(update_subscription(fleet))  # the common case: plain -> shared
    return SubscriptionPlan(wanted, tuple(sorted(unwanted)))


def remember_subscriptions(state_dir: Path, plan: SubscriptionPlan) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{_FILE}.tmp"
    tmp.write_text("".join(f"{f}\n" for f, _ in plan.wanted))
    tmp.replace(state_dir / _FILE)
