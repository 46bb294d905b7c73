"""Error feedback: what compression dropped this round is added to the next round's delta.

    corrected = delta + residual
    payload = encode(corrected, spec)
    new_residual = corrected - decode(payload, spec)

So sum(decoded_t) = sum(delta_t) + residual_0 - residual_T: over many rounds the transmitted
vectors track the true ones, and biased codecs (topk, coarse int4) stop losing mass. With an exact
codec (float32) the residual is exactly zero. Pure; the agent persists the residual itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.codecs import decode, encode
from protocol.errors import ProtocolError, Reason

__all__ = ["compress_with_feedback"]

F32 = npt.NDArray[np.float32]


def compress_with_feedback(
    delta: np.ndarray[Any, Any], residual: np.ndarray[Any, Any] | None, spec: Mapping[str, Any]
) -> tuple[bytes, F32]:
    """(n,) float32 delta and residual (None = zeros) -> (payload, new residual (n,) float32)."""
    d = np.asarray(delta)
    if d.ndim != 1:
        raise ProtocolError(Reason.SHAPE, f"delta must be a flat vector, got shape {d.shape}")
    if d.dtype != np.float32:
        raise ProtocolError(Reason.DTYPE, f"delta must be float32, got {d.dtype}")
    if residual is None:
        corrected = d.copy()
    else:
        r = np.asarray(residual)
        if r.shape != d.shape:
            raise ProtocolError(Reason.SHAPE, f"residual {r.shape} does not match delta {d.shape}")
        if r.dtype != np.float32:
            raise ProtocolError(Reason.DTYPE, f"residual must be float32, got {r.dtype}")
        with np.errstate(over="ignore"):  # overflow to inf is refused by encode below
            corrected = d + r  # (n,) float32
    payload = encode(corrected, spec)
    return payload, corrected - decode(payload, spec, corrected.size)
