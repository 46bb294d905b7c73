"""The robust-aggregation options a strategy can carry, and the per-buffer state they need.

    RobustConfig        what `[strategy.robust]` in server.toml configures (defaults = the default
                        defence, chosen by `benchmarks/robustness.py`)
    Defence             one strategy's state: the adaptive norm bound, the devices in the open
                        buffer (at most one update each), the buffer's rows when a coordinate-wise
                        aggregator needs them, and the last flush's per-device anomaly scores.

Hook order (the FedBuff seam): admission calls `screen(device, norm)` (refuse or clip factor,
logged with the update, so replay needs no second screen) -> `FedBuff.apply` calls `accept` and
`add_row` -> `FedBuff.flush` calls `reduce` (the aggregate g) then `end_buffer`.

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

from protocol.errors import Reason, RejectedUpdate
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
    # attack at 20% within 1.5 points of clean; the norm bound caps scaled updates; sign agreement
    # holds a 10% backdoor to 0.02 success (0.62 without it) at a 0.6-point clean cost. The cosine
    # aggregate (agreeing rows once, cut at s(tau) x the median delta length) was chosen on
    # fleet.py and parity.py too (docs/security.md, "Skewed fleets and the default defence").
    aggregator: Aggregator = Aggregator.COSINE
    trim_fraction: float = 0.2  # trimmed mean: cut floor(0.2 * K) rows per end and coordinate
    norm_multiplier: float | None = 3.0  # adaptive bound = this x running median; None = off
    norm_window: int = 200  # accepted updates in the running median
    norm_warmup: int = 10  # accepted updates before the adaptive bound applies
    norm_action: BoundAction = BoundAction.CLIP
    one_per_device: bool = True  # a device's second update in an open buffer is refused
    # each coordinate moves as far as the kept rows agree on its sign (server/robust/agreement.py;
    # a 10% backdoor's success 0.62 -> 0.02 on robustness.py). Row aggregators only: with
    # aggregator "mean" the server keeps a running sum, no rows, and there is nothing to vote on.
    sign_agreement: bool = True

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
        self._devices: list[str] = []  # devices in the open buffer, in arrival order
        self._rows = RowBuffer()  # weight already applied, and kept for the cosine cut (rows.py)
        self.scores: list[DeviceScore] = []  # the last flush's

    # --- admission ---------------------------------------------------------------------------

    def start_from(self, model: np.ndarray) -> None:
        """The model a fleet starts at, (n,) float32: the norm bound's warm-up value."""
        if self.norm_bound is not None:
            self.norm_bound.start_from(model)

    def screen(self, device_id: str, norm: float, *, buffered: bool) -> float:
        """Refuse (RejectedUpdate) or return the clip factor for a delta of L2 norm `norm`."""
        if buffered and self.config.one_per_device and device_id in self._devices:
            raise RejectedUpdate(
                Reason.DEVICE_LIMIT,
                f"{device_id} already has an update in the open buffer (one per device)",
            )
        if self.norm_bound is None:
            return 1.0
        return self.norm_bound.screen(norm)

    # --- buffer ------------------------------------------------------------------------------

    def accept(self, device_id: str, norm: float) -> None:
        """An admitted update of L2 norm `norm` (as clipped) entered the buffer (or, for
        FedAsync, the model). The norm, not the vector: a defence without rows lets FedBuff
        keep the delta in codec form."""
        self._devices.append(device_id)
        if self.norm_bound is not None:
            self.norm_bound.record(norm)

    def new_row(self, n: int, weight: float = 1.0) -> np.ndarray:
        """The next row of the buffer, (n,) float32 zeros, for the caller to add its delta
        times `weight` into (FedBuff writes a codec-form delta straight from its codes)."""
        return self._rows.new_row(n, weight)

    def add_sparse_row(
        self, n: int, index: np.ndarray, values: np.ndarray, weight: float = 1.0
    ) -> None:
        """The next row: `values` (already times `weight`) at strictly increasing positions
        `index` (top-k)."""
        self._rows.add_sparse(n, index, values, weight)

    def add_row(self, row: np.ndarray, weight: float = 1.0) -> None:
        np.copyto(self.new_row(row.shape[0], weight), row)

    @property
    def rows(self) -> np.ndarray:
        """The open buffer's rows, (k, n) float32 (a view: valid until the next row or buffer)."""
        return self._rows.dense()

    def reduce(self) -> np.ndarray:
        """The buffer's coordinate-wise aggregate of its rows, (n,) float32."""
        support, rows = self._rows.compact()  # (k, n), or (k, |support|) for sparse rows
        g = aggregate(
            rows,
            self.config.aggregator,
            self.config.trim_fraction,
            self._rows.weights,
            sign_agreement=self.config.votes_on_signs,
        )
        self._score(rows, g)
        if support is None:
            return g
        full = np.zeros(self._rows.width, np.float32)  # (n,): zero off every row's support
        full[support] = g
        return full

    def end_buffer(self) -> None:
        self._devices.clear()
        self._rows.clear()

    def _score(self, rows: np.ndarray, g: np.ndarray) -> None:
        (g_sq,), _ = row_stats(g[None, :], g)
        g_norm = math.sqrt(g_sq)
        sq, dots = row_stats(rows, g)  # (k,) float64 each: one pass over the rows
        median = (self.norm_bound.median if self.norm_bound is not None else None) or 0.0
        scores = []
        for device, r_sq, dot in zip(self._devices, sq, dots, strict=True):
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
        state: StateDict = {"robust_devices": "\n".join(self._devices)}
        if self._rows.count:
            state["robust_rows"] = self._rows.flat_copy()  # (k * n,) float32
            state["robust_row_weights"] = self._rows.weights  # (k,) float64
        if self.norm_bound is not None:
            state["robust_norms"] = self.norm_bound.state_dict()
        return state

    def load_state_dict(self, state: StateDict) -> None:
        text = state.get("robust_devices", "")
        if not isinstance(text, str):
            raise ValueError("strategy state 'robust_devices': expected a string")
        self._devices = text.split("\n") if text else []
        self._rows.clear()
        if "robust_rows" in state:
            flat = _array(state, "robust_rows", np.float32)
            k = len(self._devices)
            if k == 0 or flat.shape[0] % k:
                raise ValueError("strategy state 'robust_rows': length does not match the buffer")
            # checkpoints before the weights were kept: weight 1 (the cut then ignores staleness)
            weights = (
                _array(state, "robust_row_weights", np.float64)
                if "robust_row_weights" in state
                else np.ones(k)
            )
            if weights.shape != (k,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
                raise ValueError("strategy state 'robust_row_weights': k positive finite values")
            for row, weight in zip(flat.reshape(k, -1), weights, strict=True):
                self.add_row(row, float(weight))
        if self.norm_bound is not None and "robust_norms" in state:
            self.norm_bound.load_state_dict(_array(state, "robust_norms", np.float64))
