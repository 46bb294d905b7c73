"""The server's side of downlink deltas (protocol/downlink.py): which model it publishes.

With a delta codec configured the published model P is not the training iterate M but the chain
P_k = P_{k-1} + codec(M_k - P_{k-1}), rounded as the whole offer: the whole offer (for newcomers
and devices that missed versions) and the signed delta (for devices holding P_{k-1}) carry the
same bits. The chain advances only once its offers went out, so a delta's base is always a
model devices were sent. A restarted server starts a new chain with a whole offer (devices'
held models then fail the base digest and take the whole offer).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import codecs
from protocol.downlink import ModelDelta, PublishedModel, encode_delta, next_published
from protocol.manifest import Manifest
from protocol.signing import sign_delta

__all__ = ["DownlinkChain", "signed_delta_bytes"]


class DownlinkChain:
    def __init__(
        self, manifest: Manifest, whole_codec: str, delta_codec: Mapping[str, Any] | None
    ) -> None:
        self.manifest = manifest
        self.whole_codec: dict[str, Any] = {"name": whole_codec}
        self.delta_codec = None if delta_codec is None else codecs.validate_spec(dict(delta_codec))
        self.last: PublishedModel | None = None  # what devices were last sent

    def propose(self, model: np.ndarray, version: int) -> tuple[PublishedModel, ModelDelta | None]:
        """The model to publish for `version` and the unsigned delta to it (None: whole only)."""
        if self.delta_codec is None:  # deltas off: publish the iterate as before
            weights = np.ascontiguousarray(model, dtype=np.float32)
            return PublishedModel(version, weights, ""), None
        previous = self.last
        published, step = next_published(
            previous, model, version, self.manifest, self.delta_codec, self.whole_codec
        )
        if step is None or previous is None:
            return published, None
        delta = ModelDelta(
            model_id=self.manifest.model_id,
            version=version,
            base_version=previous.version,
            manifest_digest=self.manifest.digest,
            base_digest=previous.digest,
            result_digest=published.digest,
            result_codec=self.whole_codec,
            delta=step,
            created_at=time.time(),
        )
        return published, delta

    def commit(self, published: PublishedModel) -> None:
        """Its offers went out: the next delta starts from it."""
        if self.delta_codec is not None:
            self.last = published


def signed_delta_bytes(
    delta: ModelDelta,
    key: Ed25519PrivateKey,
    *,
    fedprox_mu: float,
    privacy: dict[str, float],
) -> bytes:
    """The wire bytes of a delta with the offer's hints, signed by the fleet key."""
    return encode_delta(
        sign_delta(dataclasses.replace(delta, fedprox_mu=fedprox_mu, privacy=privacy), key)
    )
