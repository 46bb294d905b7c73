"""The device side of an update on the wire: error feedback, the codec, `encode_update_compact`.

Bytes counted by the simulator are the real `ClientUpdate` messages production devices publish,
so codec savings (and message overhead) are measured, not estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from protocol import codecs
from protocol.error_feedback import compress_with_feedback
from protocol.manifest import Manifest
from protocol.messages import ClientUpdate, EncodedVector
from protocol.update_header import encode_update_compact

__all__ = ["Uplink", "codec_label"]


def codec_label(spec: Mapping[str, Any]) -> str:
    """A short stable name for reports: e.g. 'float32', 'int8', 'topk0.01+int8'."""
    name = str(spec["name"])
    if name == "topk":
        inner = codec_label(spec.get("values", {"name": "float32"}))
        name = f"topk{spec['fraction']}+{inner}"
    lossless = spec.get("lossless", "none")
    return name if lossless == "none" else f"{name}+{lossless}"


class Uplink:
    """Encodes deltas for one fleet; keeps each device's error-feedback residual."""

    def __init__(
        self, manifest: Manifest, codec: Mapping[str, Any], error_feedback: bool = True
    ) -> None:
        self.manifest = manifest
        self.spec = codecs.validate_spec(dict(codec))
        self.label = codec_label(self.spec)
        self.lossy = self.spec["name"] != "float32"
        self.error_feedback = error_feedback and self.lossy
        self._residual: dict[int, np.ndarray] = {}  # device -> (n,) float32

    def encode(
        self,
        device: int,
        device_id: str,
        seq: int,
        base_version: int,
        num_samples: int,
        local_steps: int,
        delta: np.ndarray,
    ) -> tuple[bytes, np.ndarray | None]:
        """(message bytes, the residual to keep once the message is delivered, or None)."""
        residual = None
        if self.error_feedback:
            data, residual = compress_with_feedback(delta, self._residual.get(device), self.spec)
        else:
            data = codecs.encode(delta, self.spec)
        vec = EncodedVector(self.spec, data, int(delta.size))
        msg = ClientUpdate(
            self.manifest.model_id, base_version, device_id, seq, num_samples, local_steps, vec, {}
        )
        return encode_update_compact(msg), residual

    def delivered(self, device: int, residual: np.ndarray | None) -> None:
        if residual is not None:
            self._residual[device] = residual
