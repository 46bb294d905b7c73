"""The robust-defence hooks FedAsync, FedBuff and FedAvg share (the defence itself: server/robust).

A strategy mixes this in before `Strategy` and sets `_defence` in its `__post_init__`;
`buffered` says whether one update per device applies per buffer (FedBuff, FedAvg) or not at all
(FedAsync applies each update on arrival).
"""

from __future__ import annotations

from typing import ClassVar

from server.privacy import DpMechanism
from server.robust import Defence

__all__ = ["Defended"]


class Defended:
    _defence: Defence | None
    buffered: ClassVar[bool] = True

    @property
    def defence(self) -> Defence | None:
        return self._defence

    def screen(self, device_id: str, norm: float) -> float:
        if self._defence is None:
            return 1.0
        return self._defence.screen(device_id, norm, buffered=self.buffered)

    def _refuse_rows_with_privacy(self, privacy: DpMechanism | None) -> None:
        """DP's noise is calibrated to a sum of contributions clipped to C; a coordinate-wise
        robust aggregator (rows) has another sensitivity."""
        if privacy is not None and self._defence is not None and self._defence.keeps_rows:
            raise ValueError(
                "privacy: the noise is calibrated to a sum of contributions clipped to C; a "
                "coordinate-wise robust aggregator has another sensitivity: use aggregator mean"
            )
