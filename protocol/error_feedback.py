"""Error feedback: what compression dropped this round is added to the next round's delta.

    corrected = delta + residual
    payload = encode(corrected, spec)
    new_residual = corrected - decode(payload, spec)

So sum(decoded_t) = sum(delta_t) + residual_0 - residual_T: over many rounds the transmitted
vectors track the true ones, and biased codecs (topk, coarse int4) stop losing mass. With an exact
codec (float32) the residual is exactly zero. Pure; the agent persists the residual itself.

With `max_norm` (differential privacy's clip C, from the offer) the device clips too, so the
residual can never push a sent message past C:

    corrected = clip(clip(delta, C) + residual, C)     what clipping cuts is dropped, not carried
    payload   = encode(corrected), shrunk until ||decode(payload)|| <= C (quantisation rounds up)
    new_residual = corrected - decode(payload)         quantisation error only, bounded
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.clipping import clip_l2, l2_norm
from protocol.codecs import decode, encode
from protocol.errors import ProtocolError, Reason

__all__ = ["compress_with_feedback"]

F32 = npt.NDArray[np.float32]


def compress_with_feedback(
    delta: np.ndarray[Any, Any],
    residual: np.ndarray[Any, Any] | None,
    spec: Mapping[str, Any],
    max_norm: float | None = None,
) -> tuple[bytes, F32]:
    """(n,) float32 delta and residual (None = zeros) -> (payload, new residual (n,) float32).
    With `max_norm`, the decoded payload's L2 norm is at most `max_norm`."""
    d = np.asarray(delta)
    if d.ndim != 1:
        raise ProtocolError(Reason.SHAPE, f"delta must be a flat vector, got shape {d.shape}")
    if d.dtype != np.float32:
        raise ProtocolError(Reason.DTYPE, f"delta must be float32, got {d.dtype}")
    if max_norm is not None:
        d, _ = clip_l2(d, max_norm)
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
    if max_norm is not None:
        corrected, _ = clip_l2(corrected, max_norm)
        payload, decoded = _encode_within(corrected, spec, max_norm)
        return payload, corrected - decoded
    payload = encode(corrected, spec)
    return payload, corrected - decode(payload, spec, corrected.size)


def _encode_within(x: F32, spec: Mapping[str, Any], max_norm: float) -> tuple[bytes, F32]:
    """Encode x so that the decoded vector's norm is <= max_norm (shrink and retry)."""
    for _ in range(8):
        payload = encode(x, spec)
        decoded = decode(payload, spec, x.size)  # (n,) float32
        norm = l2_norm(decoded)
        if norm <= max_norm:
            return payload, decoded
        x = (x * np.float32(max_norm / norm * (1.0 - 2.0**-12))).astype(np.float32)
    raise ProtocolError(Reason.NORM, f"codec keeps the delta above the clip norm {max_norm:g}")
