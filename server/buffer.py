"""The open buffer: everything that lives from a buffer's first admitted update to its flush.

    sum, weight, count    S = sum_i c_i * delta_i (float32, (n,)), W = sum_i w_i, updates in it
    rows                  one row per update when a coordinate-wise aggregator needs them
                          (server/robust/rows.py), labelled by `devices`
    devices               who has an update in it, in arrival order; one admission rule: a device's
                          second update is refused with the buffer's reason (DP_BUFFER under
                          differential privacy, DEVICE_LIMIT for the robust one-per-device option)
    unclipped, clipped    DP's counts for adaptive clipping: contributions within C, and all of them
                          (a secure-aggregation cohort counts its members)

One `state_dict` for all of it. Checkpoints written before the buffer had one owner kept these
under the strategy's, the defence's and the privacy mechanism's keys; `load_state_dict` reads both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protocol.errors import Reason, RejectedUpdate
from server.robust.rows import RowBuffer

__all__ = ["OpenBuffer"]

StateDict = dict[str, Any]
_P = "buffer."  # key prefix in the strategy's flat state dict

_RULE_TEXT = {
    Reason.DP_BUFFER: "one per flush under DP; send it after the next model version",
    Reason.DEVICE_LIMIT: "one per device",
}


class OpenBuffer:
    def __init__(self, one_per_device: Reason | None = None) -> None:
        """`one_per_device`: the reason a device's second update in the buffer is refused with;
        None: no such limit."""
        if one_per_device is not None and one_per_device not in _RULE_TEXT:
            raise ValueError(f"no one-per-device rule refuses with {one_per_device}")
        self.one_per_device = one_per_device
        self.sum: np.ndarray | None = None  # (n,) float32, made on the first summed update
        # the last buffer's (n,) float32 sum, zeroed by its flush for the next one: a fresh 4 MB
        # array per flush cost more than the top-1% updates that filled it (page faults)
        self._spare: np.ndarray | None = None
        self.weight = 0.0
        self.count = 0
        self.devices: list[str] = []
        self.rows = RowBuffer()  # weight already applied, and kept for the cosine cut
        self.unclipped = 0
        self.clipped = 0

    # --- admission ---------------------------------------------------------------------------

    def check_device(self, device_id: str) -> None:
        """The one-update-per-device rule: RejectedUpdate if `device_id` already has one here."""
        if self.one_per_device is not None and device_id in self.devices:
            raise RejectedUpdate(
                self.one_per_device,
                f"{device_id} already has an update in the open buffer "
                f"({_RULE_TEXT[self.one_per_device]})",
            )

    # --- filling -----------------------------------------------------------------------------

    def joined(self, device_id: str, weight: float) -> None:
        """An update from `device_id` entered the buffer with weight `weight` in W."""
        self.devices.append(device_id)
        self.weight += weight
        self.count += 1

    def sum_for(self, n: int) -> np.ndarray:
        """The (n,) float32 sum to add into: the open one, the last flush's zeroed one, or new."""
        if self.sum is None:
            spare, self._spare = self._spare, None
            fits = spare is not None and spare.shape == (n,)
            self.sum = spare if fits and spare is not None else np.zeros(n, np.float32)
        return self.sum

    def counted_clip(self, members: int, within_bound: bool) -> None:
        """DP: a contribution of `members` devices was clipped (within C already, or not)."""
        self.clipped += members
        self.unclipped += members if within_bound else 0

    def reuse(self, zeroed: np.ndarray) -> None:
        """A zeroed (n,) float32 array the next buffer may sum into."""
        self._spare = zeroed

    def clear(self) -> None:
        """The buffer was flushed (or dropped): an empty one opens."""
        self.sum, self.weight, self.count = None, 0.0, 0
        self.devices.clear()
        self.rows.clear()
        self.unclipped = self.clipped = 0

    # --- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> StateDict:
        state: StateDict = {
            _P + "weight": self.weight,
            _P + "count": self.count,
            _P + "devices": "\n".join(self.devices),  # device ids cannot hold \n
            _P + "unclipped": self.unclipped,
            _P + "clipped": self.clipped,
        }
        if self.sum is not None:
            state[_P + "sum"] = self.sum.copy()
        if self.rows.count:
            state[_P + "rows"] = self.rows.flat_copy()  # (k * n,) float32
            state[_P + "row_weights"] = self.rows.weights  # (k,) float64
        return state

    def load_state_dict(self, state: StateDict) -> None:
        """Restore from this buffer's keys, or from an older checkpoint's (see the module doc)."""
        s = state if _P + "count" in state else _from_older_keys(state)
        self.clear()
        self.weight = float(s.get(_P + "weight", 0.0))
        self.count = _int(s, _P + "count")
        text = s.get(_P + "devices", "")
        if not isinstance(text, str):
            raise ValueError(f"strategy state {_P}devices: expected a string")
        self.devices = text.split("\n") if text else []
        self.unclipped = _int(s, _P + "unclipped")
        self.clipped = _int(s, _P + "clipped")
        self.sum = _array(s, _P + "sum", np.float32) if _P + "sum" in s else None
        if _P + "rows" in s:
            self._load_rows(s)

    def _load_rows(self, s: StateDict) -> None:
        flat = _array(s, _P + "rows", np.float32)
        k = len(self.devices)
        if k == 0 or flat.shape[0] % k:
            raise ValueError(f"strategy state {_P}rows: length does not match the buffer")
        # checkpoints before the weights were kept: weight 1 (the cut then ignores staleness)
        key = _P + "row_weights"
        weights = _array(s, key, np.float64) if key in s else np.ones(k)
        if weights.shape != (k,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"strategy state {key}: k positive finite values")
        for row, weight in zip(flat.reshape(k, -1), weights, strict=True):
            np.copyto(self.rows.new_row(row.shape[0], float(weight)), row)


def _from_older_keys(state: StateDict) -> StateDict:
    """An older checkpoint's buffer: the strategy's sum/weight/count (FedAvg: samples), the robust
    defence's device list and rows, the privacy mechanism's clip counts and device set."""
    s: StateDict = {}
    if "weight" in state:
        s[_P + "weight"] = state["weight"]
    elif "samples" in state:
        s[_P + "weight"] = state["samples"]
    s[_P + "count"] = state.get("count", 0)
    if "sum" in state:
        s[_P + "sum"] = state["sum"]
    # the defence kept arrival order (its rows' labels); DP kept the same devices as a set
    devices = state.get("robust_devices") or state.get("dp_devices", "")
    s[_P + "devices"] = devices
    s[_P + "unclipped"] = state.get("dp_unclipped", 0)
    s[_P + "clipped"] = state.get("dp_count", 0)
    for old, new in (("robust_rows", "rows"), ("robust_row_weights", "row_weights")):
        if old in state:
            s[_P + new] = state[old]
    return s


def _int(state: StateDict, key: str) -> int:
    value = int(state.get(key, 0))
    if value < 0:
        raise ValueError(f"strategy state {key}: expected an int >= 0, got {value!r}")
    return value


def _array(state: StateDict, key: str, dtype: type[np.generic]) -> np.ndarray:
    value = state[key]
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != 1:
        raise ValueError(f"strategy state {key!r}: expected a flat {np.dtype(dtype)} array")
    return value.copy()
