"""The strategy interface: a few hooks; the numbers live in plain functions in each module.

A strategy folds admitted updates into a flat float32 model vector (manifest order). It is pure of
its inputs plus its own state: no I/O, no clock reads (time is passed to `tick`), no randomness. The
server drives it from its one worker thread, and the fleet simulator drives the same objects
without MQTT. Recovery replays the durable log through the same hooks, so determinism is a
correctness property, not a nicety.

    start_from(initial_model)           the model a fleet starts at (the defence's warm-up bound)
    check(version, base_version)        strategy-specific admission (FedAvg: current round only)
    check_device(device_id)             before decoding: DP's one update per device per buffer
    screen(device_id, norm)             -> clip factor; robust options may refuse (server.robust)
    apply(model, version, update)       -> StepResult   one admitted update
    apply_contribution(model, version, c) -> StepResult one update whose delta may still be in
                                                        codec form (server/admitted.py); the default
                                                        expands it and calls `apply`
    tick(model, version, now)           -> StepResult   time passes (FedAvg's round deadline)
    flush(model, version)               -> StepResult   force the pending step (replay of a tick)
    state_dict() / load_state_dict(s)                   buffers and momentum for checkpoints

A `StepResult` with `stepped=True` carries a new model and `version + 1`; otherwise the model and
version are returned unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from server.admitted import AdmittedUpdate, Contribution

if TYPE_CHECKING:
    from server.privacy import DpMechanism

__all__ = [
    "StateDict",
    "StepResult",
    "Strategy",
    "as_array",
    "load_privacy_state",
]

# Values: flat float32/float64 numpy arrays or JSON-like scalars (the checkpoint stores them).
StateDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepResult:
    model: np.ndarray  # (n,) float32
    version: int
    stepped: bool  # True when the model changed and the version advanced by one


def as_array(
    state: StateDict, key: str, dtype: type[np.generic], n: int | None = None
) -> np.ndarray:
    """Fetch an array from a loaded state dict, checking dtype and (optionally) length."""
    value = state[key]
    if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != 1:
        raise ValueError(f"strategy state {key!r}: expected a flat {np.dtype(dtype)} array")
    if n is not None and value.shape != (n,):
        raise ValueError(f"strategy state {key!r}: length {value.shape[0]} != {n}")
    return value.copy()


def load_privacy_state(privacy: DpMechanism | None, state: StateDict) -> None:
    """Restore a strategy's DP record; refuse a mismatch (budget is never forgotten silently)."""
    if privacy is not None:
        privacy.load_state_dict(state)
    elif any(key.startswith("dp_") for key in state):
        raise ValueError(
            "the saved state has a differential-privacy record but [privacy] is not configured: "
            "turning privacy off would forget the budget spent (use a fresh state folder)"
        )


class Strategy(ABC):
    """Folds admitted updates into the global model. See the module docstring for the hooks."""

    name: ClassVar[str]
    fedprox_mu: float = 0.0  # hint sent to devices in the ModelOffer (FedProx); 0 = plain local SGD
    privacy: DpMechanism | None = None  # user-level DP (server/privacy); None = off
    buffered: ClassVar[bool] = True  # updates wait in a buffer; False: each applies on arrival

    def start_from(self, model: np.ndarray) -> None:  # noqa: B027 - optional hook
        """The model the fleet starts at (the artifacts' initial weights, not a checkpoint's),
        (n,) float32; called once, before any update. Default: nothing."""

    def check(self, version: int, base_version: int) -> None:  # noqa: B027 - optional hook
        """Raise RejectedUpdate if this strategy refuses an update on `base_version` now."""

    def check_device(self, device_id: str) -> None:  # noqa: B027 - optional hook
        """Raise RejectedUpdate if this strategy takes no update from `device_id` now (asked
        before the delta is decoded)."""

    def screen(self, device_id: str, norm: float) -> float:
        """Admission of the delta itself, given its L2 norm: a clip factor (1.0 = untouched), or
        RejectedUpdate. Reads state, never changes it (the update may still be refused)."""
        del device_id, norm
        return 1.0

    def warm_up(self, num_params: int) -> None:  # noqa: B027 - optional hook
        """Load (or compile) what the first step on a model of `num_params` values will need,
        at start-up rather than while a device waits. Default: nothing."""

    @abstractmethod
    def apply(self, model: np.ndarray, version: int, update: AdmittedUpdate) -> StepResult: ...

    def apply_contribution(
        self, model: np.ndarray, version: int, update: Contribution
    ) -> StepResult:
        """Fold an update whose delta may be in codec form. Default: expand it, then `apply`."""
        return self.apply(model, version, update.admitted())

    def tick(self, model: np.ndarray, version: int, now: float) -> StepResult:
        """Time passed (seconds, any monotonic origin). Default: nothing time-driven."""
        del now
        return StepResult(model, version, stepped=False)

    def flush(self, model: np.ndarray, version: int) -> StepResult:
        """Take the pending step now, if anything is pending. Default: nothing is ever pending."""
        return StepResult(model, version, stepped=False)

    @property
    def pending(self) -> int:
        """Updates received but not yet folded into the model (buffer size)."""
        return 0

    @abstractmethod
    def state_dict(self) -> StateDict: ...

    @abstractmethod
    def load_state_dict(self, state: StateDict) -> None: ...
