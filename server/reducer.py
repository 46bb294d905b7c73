"""The reducer: how a closed buffer becomes the server optimiser's input, and which robust and
privacy settings compose. The one place that decides both (STYLE.md 16).

    mean      g = S / W                       the plain buffer (a robust defence may still bound
                                              norms and limit devices: it keeps no rows)
    rows      g = aggregate(rows)             a coordinate-wise robust aggregator (server/robust)
    dp_mean   g = (S + N(0, (sigma C)^2)) / W  user-level DP (server/privacy); refused once the
                                              budget is spent

Refused, because they do not compose:
    DP with an unbuffered strategy (FedAsync)  every single update would be a release
    DP with a row aggregator                   the noise is calibrated to a clipped *sum*
    DP with sample weights                     a weight above 1 breaks the sensitivity bound C
    a row aggregator with sample weights       rows weigh equally (a device states its count)
and under DP the defence keeps only what DP allows (`robust_under_privacy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import numpy as np

from protocol.errors import Reason
from server.buffer import OpenBuffer
from server.optimizers import ServerOptimizer
from server.privacy import DpMechanism
from server.robust import Aggregator, Defence, RobustConfig

__all__ = ["Reducer", "Reduction", "refuse_privacy_without_buffer", "robust_under_privacy"]


class Reduction(StrEnum):
    MEAN = "mean"
    ROWS = "rows"
    DP_MEAN = "dp_mean"


def refuse_privacy_without_buffer(buffered: bool) -> None:
    """ValueError when DP is asked of a strategy that applies each update on arrival."""
    if not buffered:
        raise ValueError(
            "privacy: FedAsync releases a new model after every single update, so DP would "
            "add noise of std sigma*C to each update alone (a buffer of one) and spend "
            "budget per update; use strategy fedbuff with a large buffer_size instead"
        )


def robust_under_privacy(defence: RobustConfig, table: Mapping[str, Any]) -> RobustConfig:
    """The part of a defence (`[strategy.robust]` `table`, parsed as `defence`) that DP allows.
    DP's noise is calibrated to a clipped *sum*, so the default aggregates by the mean; and the
    adaptive norm bound (a multiple of the running median of raw update norms) is a non-private
    statistic of earlier devices' data that would rescale later devices' updates, so it is off:
    DP's own clip to C already bounds every contribution."""
    if table.get("norm_multiplier", 0) not in (0, None):
        raise ValueError(
            "strategy.robust.norm_multiplier: with [privacy] the adaptive norm bound would leak "
            "earlier devices' update norms into later releases; DP's clip_norm already bounds "
            "each update (use privacy.adaptive_clip for a private, adaptive bound)"
        )
    aggregator = defence.aggregator if "aggregator" in table else Aggregator.MEAN
    return dataclasses.replace(defence, aggregator=aggregator, norm_multiplier=None)


class Reducer:
    def __init__(
        self,
        robust: RobustConfig | None,
        privacy: DpMechanism | None,
        *,
        buffered: bool,
        sample_weighted: bool = False,
    ) -> None:
        """Raises ValueError for a combination that does not compose (see the module doc)."""
        self.privacy = privacy
        self.defence = (
            None if robust is None else Defence(robust, keeps_rows=buffered)
        )  # rows only in a buffer, and only for a coordinate-wise aggregator
        rows = self.defence is not None and self.defence.keeps_rows
        if privacy is not None:
            refuse_privacy_without_buffer(buffered)
            if rows:
                raise ValueError(
                    "privacy: the noise is calibrated to a sum of contributions clipped to C; a "
                    "coordinate-wise robust aggregator has another sensitivity: use aggregator "
                    "mean"
                )
            if sample_weighted:
                raise ValueError(
                    "privacy: sample_weighted weights a delta by its sample count (> 1), which "
                    "breaks the sensitivity bound C of the noised sum; set sample_weighted = false"
                )
        if rows and sample_weighted:
            raise ValueError("sample_weighted cannot be combined with a robust aggregator")
        self.rule = (
            Reduction.DP_MEAN if privacy is not None else Reduction.ROWS if rows else Reduction.MEAN
        )
        self.one_per_device: Reason | None = None
        if privacy is not None:  # DP's sensitivity bound needs it, whatever the defence says
            self.one_per_device = Reason.DP_BUFFER
        elif buffered and robust is not None and robust.one_per_device:
            self.one_per_device = Reason.DEVICE_LIMIT

    def open_buffer(self) -> OpenBuffer:
        """An empty buffer with this reducer's one-update-per-device rule."""
        return OpenBuffer(self.one_per_device)

    @property
    def keeps_rows(self) -> bool:
        return self.rule is Reduction.ROWS

    def step(
        self, opt: ServerOptimizer, model: np.ndarray, buffer: OpenBuffer, version: int
    ) -> np.ndarray | None:
        """The closed buffer's new (n,) float32 model: the optimiser's step on the rows'
        aggregate, or its fused step from the (noised) sum and weight. None when the privacy
        budget refuses this release (the caller drops the buffer and keeps its model). The
        buffer is left for the caller to clear; a sum stepped from without DP comes back zeroed
        and is kept for the next buffer."""
        if self.rule is Reduction.ROWS:
            assert self.defence is not None
            return opt.step(model, self.defence.reduce(buffer.devices, buffer.rows))
        total = buffer.sum
        assert total is not None  # count > 0
        if self.privacy is None:
            new = opt.step_from_sum(model, total, buffer.weight)
            buffer.reuse(total)  # zeroed by the step
            return new
        noised = self.privacy.release(
            total, version, unclipped=buffer.unclipped, clipped=buffer.clipped
        )  # S + noise, a fresh array
        if noised is None:
            return None
        return opt.step_from_sum(model, noised, buffer.weight)
