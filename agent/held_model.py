"""The global model this device holds, and its copy on disk so a restart can take deltas.

    <state_dir>/<name>.npy    (n_params,) float32 weights
    <state_dir>/<name>.json   {"version", "digest", "model_id", "manifest_digest",
                               "fedprox_mu", "privacy"}

(name: held_model for the training model, held_serving for the serving model.)

The weights are written first, the JSON last (both atomically): a crash between them leaves a
JSON whose digest does not match the weights, and the held model is then dropped (the device
takes the next whole offer). Only a model that verified is ever held: a whole offer's signature,
or a delta's signed result digest (protocol/downlink.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.fsio import atomic_write_bytes, atomic_write_json, load_npy, npy_bytes
from protocol.downlink import ModelDelta, PublishedModel, weights_digest
from protocol.errors import DataError
from protocol.manifest import Manifest
from protocol.messages import ModelOffer

__all__ = ["HeldModel", "HeldModelFile"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldModel:
    model_id: str
    version: int
    weights: np.ndarray  # (n_params,) float32, never mutated
    digest: str  # weights_digest(weights)
    fedprox_mu: float = 0.0
    privacy: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_offer(cls, offer: ModelOffer, weights: np.ndarray) -> HeldModel:
        return cls(
            offer.model_id,
            offer.version,
            weights,
            weights_digest(weights),
            offer.fedprox_mu,
            dict(offer.privacy),
        )

    @classmethod
    def from_delta(cls, delta: ModelDelta, result: PublishedModel) -> HeldModel:
        return cls(
            delta.model_id,
            result.version,
            result.weights,
            result.digest,
            delta.fedprox_mu,
            dict(delta.privacy),
        )

    def published(self) -> PublishedModel:
        return PublishedModel(self.version, self.weights, self.digest)


class HeldModelFile:
    def __init__(self, state_dir: Path, manifest: Manifest, name: str = "held_model") -> None:
        self.manifest = manifest
        self._weights = state_dir / f"{name}.npy"
        self._meta = state_dir / f"{name}.json"

    def save(self, held: HeldModel) -> None:
        self._weights.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._weights, npy_bytes(held.weights))
        atomic_write_json(
            self._meta,
            {
                "version": held.version,
                "digest": held.digest,
                "model_id": held.model_id,
                "manifest_digest": self.manifest.digest,
                "fedprox_mu": held.fedprox_mu,
                "privacy": held.privacy,
            },
        )

    def load(self) -> HeldModel | None:
        """The held model of a previous run, or None (none, another model, or damaged)."""
        if not self._meta.exists():
            return None
        try:
            return self._read()
        except (DataError, OSError, ValueError, TypeError, KeyError) as exc:
            _log.warning("held model on disk not usable (%s): waiting for a whole offer", exc)
            return None

    def _read(self) -> HeldModel | None:
        doc = json.loads(self._meta.read_text())
        if doc["manifest_digest"] != self.manifest.digest:
            return None  # another model's: this device was re-provisioned
        weights = load_npy(self._weights, self.manifest.num_params)
        digest = weights_digest(weights)
        if digest != doc["digest"]:
            raise DataError(f"{self._weights}: weights do not match the recorded digest")
        privacy = {str(k): float(v) for k, v in dict(doc.get("privacy", {})).items()}
        return HeldModel(
            str(doc["model_id"]),
            int(doc["version"]),
            weights,
            digest,
            float(doc.get("fedprox_mu", 0.0)),
            privacy,
        )
