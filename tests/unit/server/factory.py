"""Small real inputs for server tests: a manifest, and ClientUpdate bytes through the real codecs."""

from __future__ import annotations

from typing import Any

import numpy as np

from protocol.manifest import Manifest, ParamSpec
from protocol.messages import ClientUpdate, encode_update, encode_vector

__all__ = ["make_manifest", "update_bytes"]


def make_manifest(n: int = 6) -> Manifest:
    """A two-tensor model with n parameters in total (n even)."""
    return Manifest(
        model_name="tiny",
        params=(ParamSpec("w", (n // 2,)), ParamSpec("b", (n - n // 2,))),
        input_name="x",
        input_shape=(n // 2,),
        num_classes=2,
    )


def update_bytes(
    manifest: Manifest,
    delta: np.ndarray | list[float],
    *,
    device: str = "dev-1",
    seq: int = 1,
    base: int = 0,
    samples: int = 10,
    codec: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> bytes:
    vec = np.asarray(delta, np.float32)
    msg = ClientUpdate(
        model_id=model_id or manifest.model_id,
        base_version=base,
        device_id=device,
        seq=seq,
        num_samples=samples,
        local_steps=1,
        delta=encode_vector(vec, codec or {"name": "float32"}),
        metrics={"loss": 0.5},
    )
    return encode_update(msg)
