"""One round's result -> one ClientUpdate: delta, error feedback, compression. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from agent.trainer import TrainResult
from protocol.error_feedback import compress_with_feedback
from protocol.errors import ProtocolError, Reason
from protocol.messages import ClientUpdate, EncodedVector

__all__ = ["BaseModel", "build_update"]


class BaseModel(Protocol):
    """What an update needs of the model it was trained from (a ModelOffer or a held model)."""

    @property
    def model_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def privacy(self) -> dict[str, float]: ...


def build_update(
    *,
    offer: BaseModel,
    base: np.ndarray,
    result: TrainResult,
    residual: np.ndarray,
    codec: Mapping[str, Any],
    device_id: str,
    seq: int,
    num_local: int,
) -> tuple[ClientUpdate, np.ndarray]:
    """Returns the update and the residual left after compressing it.

    base, result.weights, residual: (n_params,) float32. ``delta = trained - base``; what the
    codec drops of ``delta + residual`` becomes the new residual (error feedback).
    ``num_samples`` is the number of distinct local examples the round saw (a partial round saw
    fewer), never more than the device holds: the server weights by it. When the offer carries
    a DP clip norm, the decoded delta's L2 norm is at most that (the server clips again anyway).
    """
    delta = (result.weights - base).astype(np.float32)  # (n_params,) float32
    # Under differential privacy the offer names the clip norm C: the sent delta stays within it
    clip = offer.privacy.get("clip_norm")
    if clip is not None and not clip > 0:
        raise ProtocolError(Reason.FIELD, f"offer v{offer.version}: DP clip_norm {clip} <= 0")
    payload, residual_after = compress_with_feedback(delta, residual, codec, max_norm=clip)
    update = ClientUpdate(
        model_id=offer.model_id,
        base_version=offer.version,
        device_id=device_id,
        seq=seq,
        num_samples=max(1, min(result.samples, num_local)),
        local_steps=result.steps,
        delta=EncodedVector(dict(codec), payload, int(delta.size)),
        metrics={
            "loss": float(result.mean_loss),
            "train_s": float(result.seconds),
            "partial": float(result.stopped_early),
        },
    )
    return update, np.asarray(residual_after, dtype=np.float32)
