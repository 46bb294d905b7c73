"""The robust-defence hooks FedAsync, FedBuff and FedAvg share (the defence itself: server/robust).

A strategy mixes this in before `Strategy` and sets `_defence` in its `__post_init__`;
`buffered` says whether one update per device applies per buffer (FedBuff, FedAvg) or not at all
(FedAsync applies each update on arrival).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from server.optimizers import ServerOptimizer
from server.privacy import DpMechanism
from server.robust import Defence, warm_up_kernels

__all__ = ["Defended"]


class Defended:
    _defence: Defence | None
    buffered: ClassVar[bool] = True

    @property
    def defence(self) -> Defence | None:
        return self._defence

    def warm_up(self, num_params: int) -> None:
        """The robust aggregators' kernels, when this defence keeps rows for them."""
        if self._defence is not None and self._defence.keeps_rows:
            warm_up_kernels(num_params)

    def start_from(self, model: np.ndarray) -> None:
        if self._defence is not None:
            self._defence.start_from(model)

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

    def _reduce_and_step(
        self,
        opt: ServerOptimizer,
        model: np.ndarray,
        total: np.ndarray | None,
        weight: float,
        version: int,
        privacy: DpMechanism | None,
    ) -> np.ndarray | None:
        """A buffer's new (n,) float32 model, and the defence's buffer ended: the optimiser's
        step on the robust rows' aggregate, or its fused step from the (DP-noised) sum and
        weight. None when the privacy budget refuses this flush (the caller drops the buffer and
        keeps its model). Without DP, `total` comes back zeroed for reuse."""
        d = self._defence
        try:
            if d is not None and d.keeps_rows:
                return opt.step(model, d.reduce())  # coordinate-wise robust aggregate
            assert total is not None  # count > 0
            if privacy is not None:
                noised = privacy.release(total, version)  # S + noise, before dividing
                if noised is None:
                    return None
                total = noised  # a fresh array
            return opt.step_from_sum(model, total, weight)
        finally:
            if d is not None:
                d.end_buffer()
