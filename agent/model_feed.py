"""Where this device's models come from: signed deltas when it holds the base, the retained
whole offer when it does not. One feed per model: the global model (training) and, with local
apps, the serving model.

    delta topic   always subscribed (retained: the latest step, a few bytes per parameter)
    whole topic   subscribed only while a whole model is wanted: no model yet, a delta that
                  does not apply (missed versions, or one that does not verify), the server
                  publishes no deltas, or no delta came within PROBE_S of a (re)connect

A delta verified by the fleet key proves the server publishes them; once this device holds a
model the deltas lead on from, it unsubscribes from the whole topic, so a new version costs it
one delta instead of a whole model. An empty retained delta topic means the server stopped
publishing deltas. The model taken is persisted (agent/held_model.py) at most every SAVE_EVERY_S
and on stop: a flash card is not rewritten for every version, and a crash that loses the latest
costs one whole offer (an older held model fails the next delta's base digest).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.held_model import HeldModel, HeldModelFile
from agent.link import Link
from protocol.downlink import BaseMismatch, apply_delta, decode_delta
from protocol.errors import ProtocolError
from protocol.manifest import Manifest
from protocol.messages import decode_offer, decode_vector
from protocol.signing import verify_delta, verify_offer

__all__ = ["PROBE_S", "SAVE_EVERY_S", "ModelFeed"]

_log = logging.getLogger("agent")

OFFER_QOS = 0  # the latest is retained; nothing older is worth queueing (agent/runtime.py)
# After a (re)connect the broker sends the retained delta at once; a delta of a 1M-parameter
# int8 model is ~1 MB, 30 s on a 256 kbit/s link. Without one by then, take the whole offer.
PROBE_S = 30.0
SAVE_EVERY_S = 60.0


class ModelFeed:
    def __init__(
        self,
        *,
        topics: tuple[str, str],  # (whole offer topic, delta topic)
        manifest: Manifest,
        link: Link,
        fleet_key: Ed25519PublicKey,
        disk: HeldModelFile,
        clock: Callable[[], float],
    ) -> None:
        self.manifest = manifest
        self.link = link
        self.fleet_key = fleet_key
        self.disk = disk
        self.clock = clock
        self.offer_topic, self.delta_topic = topics
        self.held: HeldModel | None = None
        self.whole_subscribed = False
        self._deltas_published = False  # a signed delta arrived since the last (re)connect
        self._probe_until = math.inf
        self._was_connected = False
        self._saved_at = -math.inf
        self._unsaved = False
        self.deltas_applied = 0  # counters for logs and the demo
        self.deltas_refused = 0

    def start(self) -> HeldModel | None:
        """Subscribe; returns the model held before a restart (already verified then)."""
        self.held = self.disk.load()
        self.link.subscribe(self.delta_topic, qos=OFFER_QOS)
        if self.held is None:
            self._want_whole("no model held")
        else:
            _log.info("holding v%d from before the restart", self.held.version)
        return self.held

    def tick(self, connected: bool) -> None:
        """Each (re)connect without the whole topic starts a probe for the retained delta."""
        now = self.clock()
        if connected and not self._was_connected and not self.whole_subscribed:
            self._deltas_published = False
            self._probe_until = now + PROBE_S
        self._was_connected = connected
        if connected and not self._deltas_published and now >= self._probe_until:
            self._want_whole(f"no delta within {PROBE_S:g} s of connecting")
        self.save()

    # -- messages ---------------------------------------------------------------------------
    def on_offer(self, payload: bytes) -> HeldModel | None:
        """A whole offer: the new model when it verifies and is newer, else None."""
        offer = decode_offer(payload)
        verify_offer(offer, self.fleet_key)  # before touching the weights: cheap, and decisive
        if (
            offer.model_id != self.manifest.model_id
            or offer.manifest_digest != self.manifest.digest
        ):
            _log.warning(
                "ignoring offer v%d: model %s / manifest %s is not ours",
                offer.version,
                offer.model_id[:16],
                offer.manifest_digest[:16],
            )
            return None
        held = self.held
        if held is not None and offer.version <= held.version:
            what = "duplicate" if offer.version == held.version else "older"
            _log.info("ignoring offer v%d: %s (have v%d)", offer.version, what, held.version)
            return None
        weights = decode_vector(offer.weights, self.manifest)  # (n_params,) float32, finite
        return self._take(HeldModel.from_offer(offer, weights))

    def on_delta(self, payload: bytes) -> HeldModel | None:
        """A delta: the new model when it applies to the held one and verifies, else None
        (and the whole topic is subscribed when this device needs the whole model)."""
        if not payload:  # the server cleared the topic: it publishes whole offers only
            self._deltas_published = False
            self._probe_until = math.inf
            self._want_whole("the server publishes no deltas")
            return None
        try:
            delta = decode_delta(payload)
            verify_delta(delta, self.fleet_key)
        except ProtocolError as exc:  # altered or forged on the way: the whole offer is signed
            self.deltas_refused += 1
            _log.warning("refusing a delta: %s", exc)
            self._want_whole("a delta did not verify")
            return None
        if (
            delta.model_id != self.manifest.model_id
            or delta.manifest_digest != self.manifest.digest
        ):
            _log.warning("ignoring delta v%d: not our model", delta.version)
            return None
        self._deltas_published = True
        held = self.held
        if held is not None and delta.version <= held.version:
            if delta.version == held.version and delta.result_digest == held.digest:
                self._drop_whole()  # current, and the deltas lead on from here
            return None
        if held is None:
            return None  # the whole offer is on its way
        try:
            result = apply_delta(delta, held.published(), self.manifest)
        except BaseMismatch as exc:
            _log.info("delta not for the held model: %s", exc)
            self._want_whole(f"delta v{delta.base_version}->v{delta.version} does not apply")
            return None
        except ProtocolError as exc:
            self.deltas_refused += 1
            _log.warning("refusing delta v%d: %s; keeping v%d", delta.version, exc, held.version)
            self._want_whole("a delta did not verify")
            return None
        self.deltas_applied += 1
        return self._take(HeldModel.from_delta(delta, result))

    # -- helpers ----------------------------------------------------------------------------
    def _ours(self, model_id: str, manifest_digest: str) -> bool:
        return model_id == self.manifest.model_id and manifest_digest == self.manifest.digest

    def save(self, *, force: bool = False) -> None:
        """Persist the held model if it changed and SAVE_EVERY_S passed (or `force`: on stop)."""
        now = self.clock()
        if self.held is None or not self._unsaved:
            return
        if not force and now - self._saved_at < SAVE_EVERY_S:
            return
        try:
            self.disk.save(self.held)
        except OSError as exc:  # training goes on; a restart then starts from a whole offer
            _log.error("could not persist the held model v%d: %s", self.held.version, exc)
            return
        self._saved_at, self._unsaved = now, False

    def _take(self, held: HeldModel) -> HeldModel:
        self.held = held
        self._unsaved = True
        self.save()
        if self._deltas_published:
            self._drop_whole()
        return held

    def _want_whole(self, why: str) -> None:
        self._probe_until = math.inf
        if not self.whole_subscribed:
            _log.info("subscribing to whole offers: %s", why)
            self.link.subscribe(self.offer_topic, qos=OFFER_QOS)  # the retained latest arrives
            self.whole_subscribed = True

    def _drop_whole(self) -> None:
        if self.whole_subscribed:
            _log.info(
                "deltas lead on from v%d: leaving whole offers",
                self.held.version if self.held else -1,
            )
            self.link.unsubscribe(self.offer_topic)
            self.whole_subscribed = False
