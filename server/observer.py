"""What the server tells an observer (the web console's read model) as it works.

Called on the server's worker thread, in the order things happen: an observer must be quick
(record and return; never block, never raise) and must not call back into the server. The
server keeps no history for observers: what an observer wants to show over time it keeps.
"""

from __future__ import annotations

from typing import Protocol

from server.evaluation import EvalResult
from server.privacy import PrivacyStatus

__all__ = ["NullObserver", "ServerObserver"]


class ServerObserver(Protocol):
    def device_message(self, topic: str, payload: bytes, now: float) -> None:
        """Every message on a device topic, before routing (statuses: the device's latest
        word, or empty when cleared). Updates are large: ignore what you don't read."""

    def update_outcome(self, device_id: str, reason: str, staleness: int | None) -> None:
        """An update (or a cohort member's share) admitted ("ok") or refused (a Reason value),
        once durable; device_id is "" when the topic named no valid device."""

    def model_published(self, version: int, privacy: PrivacyStatus | None) -> None:
        """A signed offer of `version` left for the devices."""

    def model_evaluated(self, iterate: EvalResult, serving: EvalResult) -> None:
        """The server-side evaluation of a published version (only with a test set)."""

    def cohort_finished(self, cohort_id: str, members: int, ok: bool, base_version: int) -> None:
        """A secure-aggregation cohort ended: its unmasked sum applied (ok) or given up."""


class NullObserver:
    """Observes nothing (the default)."""

    def device_message(self, topic: str, payload: bytes, now: float) -> None:
        pass

    def update_outcome(self, device_id: str, reason: str, staleness: int | None) -> None:
        pass

    def model_published(self, version: int, privacy: PrivacyStatus | None) -> None:
        pass

    def model_evaluated(self, iterate: EvalResult, serving: EvalResult) -> None:
        pass

    def cohort_finished(self, cohort_id: str, members: int, ok: bool, base_version: int) -> None:
        pass
