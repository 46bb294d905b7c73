"""The devices' downlink in the simulator: the published model and the bytes the protocol sends.

Devices are connected while their availability window is open (the simulator's only notion of
a connection) and, like real agents, are pushed every new version while connected:

    whole offers only (delta codec None)   every version: one whole offer per connected device;
                                           each connect: the retained whole offer
    deltas (server/downlink.py's chain)    every version: one signed delta per connected device;
                                           each connect: the retained delta, plus the retained
                                           whole offer unless the device holds that delta's
                                           base or result (agent/model_feed.py)

Every run also counts the same pushes as whole float32 offers (`whole_float32_bytes`): the
baseline deltas are measured against. Sizes are real encoded messages (a delta signed with a
throw-away key; an offer's header measured once). Sessions train from the published model,
which with deltas is the chain P_k, not the server's iterate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from protocol.manifest import Manifest
from protocol.messages import ModelOffer, encode_offer, encode_vector
from protocol.signing import generate_keypair, sign_offer
from server.downlink import DownlinkChain, signed_delta_bytes

__all__ = ["SimDownlink"]


class SimDownlink:
    def __init__(
        self,
        manifest: Manifest,
        initial: np.ndarray,
        devices: int,
        delta_codec: Mapping[str, Any] | None,
    ) -> None:
        self._key = generate_keypair()[0]
        self.chain = DownlinkChain(manifest, "float32", delta_codec)
        self.deltas = delta_codec is not None
        offer = ModelOffer(
            manifest.model_id,
            0,
            manifest.digest,
            encode_vector(np.asarray(initial, np.float32), {"name": "float32"}),
            1.7e9,
        )
        self.whole_size = len(encode_offer(sign_offer(offer, self._key)))  # float32: fixed
        self.held = np.full(devices, -1, np.int64)  # version each device held at disconnect
        self.connected = np.zeros(devices, bool)
        self.n_connected = 0
        self.bytes = 0  # what this run's protocol sent
        self.whole_float32_bytes = 0  # the same pushes as whole float32 offers
        self.delta_size = 0  # the retained delta's size (0: none yet)
        self.version = -1
        self.model = np.asarray(initial, np.float32)
        self.publish(self.model, 0)

    def publish(self, model: np.ndarray, version: int) -> None:
        """A new server version: pushed to every connected device."""
        published, delta = self.chain.propose(model, version)
        self.chain.commit(published)
        self.model, self.version = published.weights, version
        size = self.whole_size
        if delta is not None:
            self.delta_size = size = len(
                signed_delta_bytes(delta, self._key, fedprox_mu=0.0, privacy={})
            )
        self.bytes += self.n_connected * size
        self.whole_float32_bytes += self.n_connected * self.whole_size

    def connect(self, d: int) -> None:
        if self.connected[d]:
            return
        self.connected[d] = True
        self.n_connected += 1
        self.whole_float32_bytes += self.whole_size  # the retained whole offer
        if not self.deltas:
            self.bytes += self.whole_size
            return
        self.bytes += self.delta_size  # the retained delta, then the whole offer if it is needed
        if self.held[d] < self.version - (1 if self.delta_size else 0):
            self.bytes += self.whole_size

    def disconnect(self, d: int) -> None:
        if not self.connected[d]:
            return
        self.connected[d] = False
        self.n_connected -= 1
        self.held[d] = self.version  # it took every version while connected
