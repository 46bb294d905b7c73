"""The robust-aggregation options a strategy can carry, and the per-buffer state they need.

    RobustConfig        what `[strategy.robust]` in server.toml configures (defaults = the default
                        defence, chosen by `benchmarks/robustness.py`)
    Defence             one strategy's defence: the adaptive norm bound across buffers, the
                        coordinate-wise aggregate of a buffer's rows, and the last flush's
                        per-device anomaly scores. The rows and which devices are in the open
                        buffer (one update each) belong to the buffer (server/buffer.py).

Hook order (the FedBuff seam): admission calls `screen(norm)` (refuse or clip factor, logged with
the update, so replay needs no second screen) -> `FedBuff.apply` calls `record` and writes the row
into the buffer -> the reducer (server/reducer.py) calls `reduce(devices, rows)` at the flush.

Anomaly score per device (logged at each flush, kept in `scores`): the cosine between the
device's row and the buffer's robust aggregate, and its norm over the running median. A
sign-flipping device scores near -1; a scaled one shows a norm ratio at the clip multiplier.
Scores are diagnostics only: they are recomputed from the rows, never part of the state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

import numpy as np

from server.robust.aggregators import Aggregator, aggregate, row_stats
from server.robust.norm_bound import AdaptiveNormBound, BoundAction
from server.robust.rows import RowBuffer

__all__ = ["Defence", "DeviceScore", "RobustConfig"]

_log = logging.getLogger("server.robust")

StateDict = dict[str, Any]  # the strategies' own alias (kept local: this package is a leaf)


def _array(state: StateDict, key: str, dtype: type[np.generic]) -> np.ndarray:
    value = state[key]
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != 1:
        raise ValueError(f"strategy state {key!r}: expected a flat {np.dtype(dtype)} array")
    return value.copy()


@dataclass(frozen=True)
class RobustConfig:
    # Defaults: the default defence, chosen on benchmarks/robustness.py (results/robustness.json,
    # 1,000 devices, 60 virtual minutes): the cosine filter against the buffer's median keeps every
    # attack at 20% within 1.5 points of clean; the norm bound caps scaled updates. No default
    # holds a backdoor (10%: 0.62 success); `sign_agreement` does, at a cost (below). The cosine
    # aggregate (agreeing rows once, cut at s(tau) x the median delta length) was chosen on
    # fleet.py and parity.py too (docs/security.md, "Skewed fleets and the default defence").
    aggregator: Aggregator = Aggregator.COSINE
    trim_fraction: float = 0.2  # trimmed mean: cut floor(0.2 * K) rows per end and coordinate
    norm_multiplier: float | None = 3.0  # adaptive bound = this x running median; None = off
    norm_window: int = 200  # accepted updates in the running median
    norm_warmup: int = 10  # accepted updates before the adaptive bound applies
    norm_action: BoundAction = BoundAction.CLIP
    one_per_device: bool = True  # a device's second update in an open buffer is refused
    # each coordinate moves as far as the kept rows agree on its sign (server/robust/agreement.py):
    # a 10% backdoor's success 0.62 -> 0.03 on robustness.py, but off by default: it slowed the
    # recommended fleet to target 6.0x -> 3.9x FedAvg's speed (fleet.py) and costs skewed fleets up
    # to 6 points (parity). Row aggregators only (a plain mean keeps no rows to vote with).
    sign_agreement: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.norm_multiplier is not None:
            AdaptiveNormBound(self.norm_multiplier, self.norm_window, self.norm_warmup)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> RobustConfig | None:
        """`[strategy.robust]` -> config; None when `enabled = false`. ValueError names the key."""
        allowed = {f.name for f in fields(cls)} | {"enabled"}
        extra = sorted(set(doc) - allowed)
        if extra:
            raise ValueError(f"robust.{extra[0]}: unknown key (allowed: {sorted(allowed)})")
        enabled = doc.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError("robust.enabled: must be true or false")
        if not enabled:
            return None
        kw: dict[str, Any] = {k: v for k, v in doc.items() if k != "enabled"}
        for key, kind in (("aggregator", Aggregator), ("norm_action", BoundAction)):
            if key in kw:
                try:
                    kw[key] = kind(kw[key])
                except ValueError:
                    choices = [m.value for m in kind]
                    raise ValueError(f"robust.{key}: one of {choices}, got {kw[key]!r}") from None
        if kw.get("norm_multiplier") == 0:
            kw["norm_multiplier"] = None  # 0 switches the adaptive bound off
        for key in ("trim_fraction", "norm_multiplier"):
            v = kw.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ValueError(f"robust.{key}: must be a number, got {v!r}")
        for key in ("norm_window", "norm_warmup"):
            v = kw.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"robust.{key}: must be an integer, got {v!r}")
        for key in ("one_per_device", "sign_agreement"):
            if not isinstance(kw.get(key, True), bool):
                raise ValueError(f"robust.{key}: must be true or false")
        return cls(**kw)

    def to_mapping(self) -> dict[str, Any]:
        """The `[strategy.robust]` table that `from_mapping` reads back to this config: only the
        keys that differ from the defaults, so the server's own rules (what DP allows) still
        apply to the ones the table leaves out."""
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                doc[f.name] = value.value if isinstance(value, Enum) else value
        if "norm_multiplier" in doc and self.norm_multiplier is None:
            doc["norm_multiplier"] = 0  # TOML has no null: 0 switches the bound off
        return doc

    @property
    def label(self) -> str:
        """A short name for reports, e.g. 'trimmed_mean0.2+norm3+1pd'."""
        parts = [self.aggregator.value]
        if self.aggregator is Aggregator.TRIMMED_MEAN:
            parts[0] += f"{self.trim_fraction:g}"
        if self.norm_multiplier is not None:
            parts.append(f"norm{self.norm_multiplier:g}")
        if self.one_per_device:
            parts.append("1pd")
        if self.votes_on_signs:
            parts.append("sign")
        return "+".join(parts)

    @property
    def votes_on_signs(self) -> bool:
        """Sign agreement applies: it is on and the aggregator keeps rows to vote with."""
        return self.sign_agreement and self.aggregator is not Aggregator.MEAN


@dataclass(frozen=True, slots=True)
class DeviceScore:
    device_id: str
    cosine: float  # to the buffer's aggregate; nan when the aggregate is zero
    norm_ratio: float  # row norm / running median norm; nan before any norm is known


class Defence:
    def __init__(self, config: RobustConfig, *, keeps_rows: bool) -> None:
        self.config = config
        # rows only when a coordinate-wise aggregator needs them (K x n float32 of memory)
        self.keeps_rows = keeps_rows and config.aggregator is not Aggregator.MEAN
        self.norm_bound = (
            None
            if config.norm_multiplier is None
            else AdaptiveNormBound(
                config.norm_multiplier,
                config.norm_window,
                config.norm_warmup,
                config.norm_action,
            )
        )
        self.scores: list[DeviceScore] = []  # the last flush's

    # --- admission ---------------------------------------------------------------------------

    def start_from(self, model: np.ndarray) -> None:
        """The model a fleet starts at, (n,) float32: the norm bound's warm-up value."""
        if self.norm_bound is not None:
            self.norm_bound.start_from(model)

    def screen(self, norm: float) -> float:
        """Refuse (RejectedUpdate) or return the clip factor for a delta of L2 norm `norm`."""
        if self.norm_bound is None:
            return 1.0
        return self.norm_bound.screen(norm)

    # --- buffer ------------------------------------------------------------------------------

    def record(self, norm: float) -> None:
        """An admitted update of L2 norm `norm` (as clipped) entered the buffer (or, for
        FedAsync, the model). The norm, not the vector: a defence without rows lets FedBuff
        keep the delta in codec form."""
        if self.norm_bound is not None:
            self.norm_bound.record(norm)

    def reduce(self, devices: list[str], rows: RowBuffer) -> np.ndarray:
        """The coordinate-wise aggregate of a buffer's rows (one per device in `devices`, in
        arrival order), (n,) float32; scores each device against it."""
        support, matrix = rows.compact()  # (k, n), or (k, |support|) for sparse rows
        g = aggregate(
            matrix,
            self.config.aggregator,
            self.config.trim_fraction,
            rows.weights,
            sign_agreement=self.config.votes_on_signs,
        )
        self._score(devices, matrix, g)
        if support is None:
            return g
        full = np.zeros(rows.width, np.float32)  # (n,): zero off every row's support
        full[support] = g
        return full

    def _score(self, devices: list[str], rows: np.ndarray, g: np.ndarray) -> None:
        (g_sq,), _ = row_stats(g[None, :], g)
        g_norm = math.sqrt(g_sq)
        sq, dots = row_stats(rows, g)  # (k,) float64 each: one pass over the rows
        median = (self.norm_bound.median if self.norm_bound is not None else None) or 0.0
        scores = []
        for device, r_sq, dot in zip(devices, sq, dots, strict=True):
            r_norm = math.sqrt(r_sq)
            cos = float(dot) / (r_norm * g_norm) if r_norm > 0 and g_norm > 0 else math.nan
            ratio = r_norm / median if median > 0 else math.nan
            scores.append(DeviceScore(device, cos, ratio))
        self.scores = scores
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "buffer scores (cosine to aggregate, norm / median): %s",
                ", ".join(f"{s.device_id} {s.cosine:+.2f} {s.norm_ratio:.2f}" for s in scores),
            )

    # --- state -------------------------------------------------------------------------------

    def state_dict(self) -> StateDict:
        """The norm bound's window (the open buffer's devices and rows: server/buffer.py)."""
        if self.norm_bound is None:
            return {}
        return {"robust_norms": self.norm_bound.state_dict()}

    def load_state_dict(self, state: StateDict) -> None:
        if self.norm_bound is not None and "robust_norms" in state:
            self.norm_bound.load_state_dict(_array(state, "robust_norms", np.float64))
