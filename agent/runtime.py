"""The agent's own loop: offers in, training when eligible, compressed updates out, acks in.

Network callbacks only enqueue (transport.MqttLink); everything happens here, on one thread, in
`poll()`. Nothing here knows paho, sysfs or ONNX Runtime: the link, the trainer, the conditions and
the clock are injected, so tests drive the whole agent with fakes.

Partial-work rule (config ``training.partial_work``): when the device becomes ineligible mid-round
the trainer stops at the next step boundary. With ``send`` (default) the partial delta is sent if
at least ``partial_min_fraction`` of the planned steps ran - fewer steps give a smaller but still
useful descent step, and the server weights it by ``num_samples``; below that fraction it is noise
for the network's cost and is discarded. With ``discard`` every interrupted round is thrown away.
A discarded round leaves no trace: no sequence number, no residual change, the same global version
is retrained when the device is eligible again.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.conditions import Conditions, ConditionsSource
from agent.config import AgentConfig, PartialWork
from agent.held_model import HeldModel, HeldModelFile
from agent.link import Link
from agent.model_feed import ModelFeed
from agent.personal import ModelKind, PersonalModels
from agent.policy import Decision, decide
from agent.secagg import SecureRounds
from agent.secagg_turn import secure_turn
from agent.state import AgentState, StateMachine
from agent.store import StateStore
from agent.trainer import TrainConfig, Trainer, TrainResult
from agent.update import build_update
from protocol import codecs
from protocol.errors import ConfigError, FleetlearnError, ProtocolError, Reason
from protocol.manifest import Manifest
from protocol.messages import (
    DeviceStatus,
    decode_ack,
    encode_status,
)
from protocol.secagg.identity import DeviceIdentity
from protocol.topics import (
    ack_topic,
    global_model_topic,
    model_delta_topic,
    serving_delta_topic,
    serving_model_topic,
    status_topic,
    update_topic,
)
from protocol.update_header import encode_update_compact

__all__ = ["AgentRuntime", "offline_status"]

_log = logging.getLogger("agent")

# Offers at QoS 0 (agent/model_feed.py OFFER_QOS): a device needs only the latest offer, which
# is retained and re-sent on every (re)subscribe. At QoS 1 a persistent session queued every
# offer published while the device was away and replayed them all on reconnect (244 models).
# Ack reasons after which the update is kept and re-sent later (the server could not decide,
# or this device sent faster than its rate limit).
_TopicOf = Callable[[str, str], str]  # (fleet, model_id) -> topic, from protocol/topics.py
_RETRY = frozenset({Reason.INTERNAL, Reason.RATE_LIMITED})


def offline_status(device_id: str, clock: Callable[[], float] = time.time) -> bytes:
    """Retained status payload for the last will (and a clean shutdown)."""
    status = DeviceStatus(device_id, False, "offline", None, "offline", {}, clock())
    return encode_status(status)


class AgentRuntime:
    def __init__(
        self,
        config: AgentConfig,
        manifest: Manifest,
        *,
        link: Link,
        trainer: Trainer,
        train_x: np.ndarray,
        train_y: np.ndarray,
        test_x: np.ndarray | None = None,
        test_y: np.ndarray | None = None,
        conditions: ConditionsSource,
        fleet_key: Ed25519PublicKey,
        models: PersonalModels | None = None,
        clock: Callable[[], float] = time.time,
        identity: DeviceIdentity | None = None,  # needed with secure aggregation on
    ) -> None:
        self.config = config
        self.manifest = manifest
        self.link = link
        self.trainer = trainer
        self.train_x, self.train_y = train_x, train_y
        self.test_x, self.test_y = test_x, test_y
        self.conditions = conditions
        self.fleet_key = fleet_key
        self.models = models
        self.clock = clock
        self.store = StateStore(config.state_dir, manifest.num_params)
        self.machine = StateMachine()
        self.codec: Mapping[str, Any] = codecs.validate_spec(
            dict(config.training.codec or {"name": "float32"})
        )
        self.offer: HeldModel | None = None  # the global model held (whole offer or deltas)
        self.base: np.ndarray | None = None  # (n_params,) float32 weights of `offer`
        self.feed = self._feed(global_model_topic, model_delta_topic, "held_model")
        self.decision: Decision | None = None
        self.last_conditions: Conditions | None = None
        self._sent_at: dict[int, float] = {}  # seq -> when we last published it
        self._was_connected = False
        self._status_at = -math.inf
        self._status_key: tuple[str, str, int | None] | None = None
        # The server's serving average (server/serving.py), when it publishes one, is the model
        # local apps run (only they need it); the global model is what this device trains from.
        self.serving_feed: ModelFeed | None = None
        if models is not None:
            self.serving_feed = self._feed(serving_model_topic, serving_delta_topic, "held_serving")
        self._serving_version = -1
        self._ack_topic = ack_topic(config.fleet, config.device_id)
        self._update_topic = update_topic(config.fleet, config.device_id)
        self._status_topic = status_topic(config.fleet, config.device_id)
        # Counters for logs, --report and the benchmark.
        self.acked = 0  # updates the server acknowledged (delivered)
        self.round_seconds: list[float] = []  # wall time of each committed round
        self.bytes_published = 0  # update payload bytes handed to the link, re-sends included
        self._should_exit: Callable[[], bool] = lambda: False
        self.secure: SecureRounds | None = None  # secure aggregation (agent/secagg.py)
        if config.secure_aggregation.enabled:
            if identity is None:
                raise ConfigError("secure_aggregation: enabled, but no identity was loaded")
            self.secure = SecureRounds(
                config.secure_aggregation,
                fleet=config.fleet,
                device_id=config.device_id,
                model_id=config.model_id,
                identity=identity,
                publish=lambda t, p: self.link.publish(t, p, 1, False),
                clock=clock,
            )

    @property
    def state(self) -> AgentState:
        return self.machine.state

    def _feed(self, whole: _TopicOf, delta: _TopicOf, name: str) -> ModelFeed:
        fleet, model_id = self.config.fleet, self.config.model_id
        return ModelFeed(
            topics=(whole(fleet, model_id), delta(fleet, model_id)),
            manifest=self.manifest,
            link=self.link,
            fleet_key=self.fleet_key,
            disk=HeldModelFile(self.config.state_dir, self.manifest, name),
            clock=self.clock,
        )

    def _feeds(self) -> list[ModelFeed]:
        return [self.feed] if self.serving_feed is None else [self.feed, self.serving_feed]

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.serving_feed is not None:  # its models were saved for the apps when taken
            held = self.serving_feed.start()
            self._serving_version = -1 if held is None else held.version
        self._on_model(self.feed.start())  # subscribes to deltas, and to whole offers if needed
        self.link.subscribe(self._ack_topic, qos=1)
        if self.secure is not None:
            self.link.subscribe(self.secure.topic_down, qos=1)
        pending = self.store.pending_seqs()
        if pending:
            _log.info("outbox holds %d update(s) from before: seq %s", len(pending), pending)
            self.machine.to(AgentState.UPLOADING, "outbox not empty")
        else:
            self.machine.to(AgentState.WAITING_FOR_MODEL, "no global model yet")
        self.poll(0.0)

    def stop(self) -> None:
        self.machine.to(AgentState.STOPPED, "shutting down")
        for feed in self._feeds():
            feed.save(force=True)
        if self.link.connected:
            self.link.publish(
                self._status_topic, offline_status(self.config.device_id, self.clock), 1, True
            )

    def run(self, should_exit: Callable[[], bool]) -> None:
        self._should_exit = should_exit
        self.start()
        try:
            while not should_exit():
                self.poll(self.config.training.check_interval_s)
        finally:
            self.stop()

    def poll(self, timeout: float) -> None:
        """One turn: wait up to `timeout` for messages, handle them, then act."""
        self._drain(timeout)
        for feed in self._feeds():
            feed.tick(self.link.connected)
        self._resend_if_due()
        if not self._should_exit():  # e.g. the last acked round of --max-rounds: no new round
            self._maybe_train()
        self._publish_status()

    # -- messages ---------------------------------------------------------------------------
    def _drain(self, timeout: float) -> None:
        inbox = self.link.incoming()
        try:
            msg = inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._dispatch(msg.topic, msg.payload)
            try:
                msg = inbox.get_nowait()
            except queue.Empty:
                return

    def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.feed.offer_topic:
                self._on_model(self.feed.on_offer(payload))
            elif topic == self.feed.delta_topic:
                self._on_model(self.feed.on_delta(payload))
            elif topic == self._ack_topic:
                self._on_ack(payload)
            elif self.secure is not None and topic == self.secure.topic_down:
                self.secure.on_message(payload)
            elif self.serving_feed is not None and topic == self.serving_feed.offer_topic:
                self._on_serving(self.serving_feed.on_offer(payload))
            elif self.serving_feed is not None and topic == self.serving_feed.delta_topic:
                self._on_serving(self.serving_feed.on_delta(payload))
            else:
                _log.debug("ignoring message on unexpected topic %s", topic)
        except ProtocolError as exc:
            _log.warning("ignoring message on %s: %s", topic, exc)

    def _on_model(self, held: HeldModel | None) -> None:
        """A newer global model arrived (whole or delta) and verified (agent/model_feed.py)."""
        if held is None:
            return
        self.offer, self.base = held, held.weights
        if self.secure is not None:
            self.secure.remember(held.version, held.weights)
        _log.info("new global model v%d (fedprox_mu=%g)", held.version, held.fedprox_mu)
        if held.privacy.get("exhausted", 0.0):
            _log.warning(
                "privacy budget spent (epsilon %.3g): v%d is the final model; training stops",
                held.privacy.get("epsilon", math.nan),
                held.version,
            )
        if self.models is not None and self._serving_version < 0:  # no serving model yet
            self._save_model(ModelKind.GLOBAL, held.weights, held.version)

    def _on_serving(self, held: HeldModel | None) -> None:
        """A newer serving model arrived and verified: saved for local apps only."""
        if held is None:
            return
        self._serving_version = held.version
        _log.info("new serving model v%d", held.version)
        if self.models is not None:
            self._save_model(ModelKind.GLOBAL, held.weights, held.version)

    def _on_ack(self, payload: bytes) -> None:
        ack = decode_ack(payload)
        if ack.device_id != self.config.device_id:
            _log.warning("ignoring ack for device %s", ack.device_id)
            return
        if ack.accepted:  # (a byte-identical redelivery is acked as accepted, never re-applied)
            if self.store.delivered(ack.seq):
                self.acked += 1
                _log.info("update seq %d acknowledged (server v%d)", ack.seq, ack.server_version)
        elif ack.reason in _RETRY:
            _log.warning("update seq %d: server says %s; will re-send", ack.seq, ack.reason.value)
            self._sent_at[ack.seq] = self.clock()  # re-sent after ack_timeout_s
            return
        elif self.store.dropped(ack.seq):
            if ack.reason is Reason.REPLAY:
                # The server applied higher sequence numbers from us: this state folder was
                # restored or the device re-flashed. Jump past them (wall-clock ms is far above
                # any count a device reaches) instead of being refused round after round.
                jumped = self.store.skip_sequence_to(int(self.clock() * 1000))
                _log.error(
                    "server already applied newer updates from this device; "
                    "next sequence number is now %d",
                    jumped,
                )
            # stale, a second update into an open buffer, or training over because the privacy
            # budget is spent (the next offer says so): routine, not a fault
            routine = ack.reason in (
                Reason.STALE,
                Reason.DEVICE_LIMIT,
                Reason.DP_BUFFER,
                Reason.PRIVACY_BUDGET,
            )
            level = logging.WARNING if routine else logging.ERROR
            _log.log(
                level,
                "update seq %d rejected (%s: %s): dropped; residual restored to before it",
                ack.seq,
                ack.reason.value,
                ack.detail,
            )
        else:
            _log.debug("ack for seq %d which is not pending", ack.seq)
            return
        self._sent_at.pop(ack.seq, None)
        if not self.store.pending_seqs() and self.state is AgentState.UPLOADING:
            self.machine.to(
                AgentState.IDLE if self.offer else AgentState.WAITING_FOR_MODEL, "outbox empty"
            )

    # -- store and forward ------------------------------------------------------------------
    def _resend_if_due(self) -> None:
        connected = self.link.connected
        reconnected = connected and not self._was_connected
        self._was_connected = connected
        if not connected:
            return
        now = self.clock()
        timeout = self.config.training.ack_timeout_s
        for seq in self.store.pending_seqs():  # payloads are read only when (re-)sent
            sent = self._sent_at.get(seq)
            if reconnected or sent is None or now - sent >= timeout:
                self._publish_update(seq, self.store.entry(seq).payload, resend=sent is not None)

    def _publish_update(self, seq: int, payload: bytes, *, resend: bool) -> None:
        try:
            self.link.publish(self._update_topic, payload, 1, False)
        except ProtocolError as exc:  # OversizeMessage: it can never be sent
            _log.error("update seq %d can never be sent (%s): dropped", seq, exc)
            self.store.dropped(seq)
            return
        self._sent_at[seq] = self.clock()
        self.bytes_published += len(payload)
        _log.info("%s update seq %d (%d bytes)", "re-sent" if resend else "sent", seq, len(payload))

    # -- training ---------------------------------------------------------------------------
    def _read_decision(self) -> Decision:
        self.last_conditions = self.conditions.read()
        decision = decide(self.last_conditions, self.config.policy, self.decision)
        if decision != self.decision:
            _log.info("policy: %s", decision)
        self.decision = decision
        return decision

    def _due(self) -> bool:
        assert self.offer is not None
        progress = self.store.progress()
        if progress.trained_version is None or self.offer.version > progress.trained_version:
            return True
        last = progress.trained_at if progress.trained_at is not None else -math.inf
        return self.clock() - last >= self.config.training.min_retrain_interval_s

    def _maybe_train(self) -> None:
        if self.secure is not None and secure_turn(self.secure, self):
            return
        if self.store.pending_seqs():
            self.machine.to(AgentState.UPLOADING, "waiting for ack")
            return
        if self.offer is None:
            self.machine.to(AgentState.WAITING_FOR_MODEL)
            return
        if not self._due():
            self.machine.to(AgentState.IDLE, f"trained on v{self.offer.version}")
            return
        if self.offer.privacy.get("exhausted", 0.0):  # the server refuses every further update
            self.machine.to(AgentState.IDLE, f"v{self.offer.version} is final (privacy budget)")
            return
        if not self._read_decision().eligible:
            self.machine.to(AgentState.WAITING_FOR_CONDITIONS, str(self.decision))
            return
        if self.secure is not None and not self.link.connected:  # a cohort is live: no outbox
            self.machine.to(AgentState.WAITING_FOR_CONDITIONS, "offline: cohorts need the broker")
            return
        self.machine.to(AgentState.WAITING_FOR_CONDITIONS)
        self.machine.to(AgentState.TRAINING, f"v{self.offer.version}")
        self._publish_status(force=True)
        if self.secure is not None:
            self.secure.join()  # trains once the cohort announces its version
        else:
            self._train_round()

    def _planned_steps(self) -> int:
        tr = self.config.training
        if tr.steps is not None:
            return tr.steps
        return (tr.epochs or 1) * math.ceil(len(self.train_y) / tr.batch_size)

    # -- the local round (also what agent/secagg_turn.py sees, through RoundHost) -------------
    def eligible(self) -> bool:
        return self._read_decision().eligible

    def offer_mu(self) -> float:
        return self.offer.fedprox_mu if self.offer is not None else 0.0

    def local_samples(self) -> int:
        return len(self.train_y)

    def count_delivered(self) -> None:
        self.acked += 1

    def count_round(self, seconds: float) -> None:
        self.round_seconds.append(seconds)

    def train_local(self, base: np.ndarray, version: int, offer_mu: float) -> TrainResult | None:
        result = self._train_from(base, version, offer_mu)
        if result.stopped_early and not self._keep_partial(result):
            return None
        return result

    def _train_from(self, base: np.ndarray, version: int, offer_mu: float) -> TrainResult:
        tr = self.config.training
        mu = offer_mu if offer_mu > 0 else tr.fedprox_mu  # the offer overrides
        cfg = TrainConfig(
            epochs=tr.epochs,
            steps=tr.steps,
            batch_size=tr.batch_size,
            prox_mu=mu,
            seed=version,
        )
        self.trainer.set_weights(base)
        return self.trainer.train(
            self.train_x, self.train_y, cfg, lambda: not self._read_decision().eligible
        )

    def _train_round(self) -> None:
        assert self.offer is not None and self.base is not None
        offer, base = self.offer, self.base
        t0 = time.perf_counter()
        result = self.train_local(base, offer.version, offer.fedprox_mu)
        if result is None:
            self.machine.to(AgentState.WAITING_FOR_CONDITIONS, str(self.decision))
            return
        self._commit_update(offer, base, result)
        self.count_round(time.perf_counter() - t0)
        if self.models is not None and self.config.personal.enabled and not result.stopped_early:
            self._save_model(ModelKind.PERSONAL, result.weights, offer.version)
        self.machine.to(AgentState.UPLOADING, "update in outbox")
        self._resend_if_due()

    def _keep_partial(self, result: TrainResult) -> bool:
        tr = self.config.training
        rule, fraction = tr.partial_work, tr.partial_min_fraction
        planned = self._planned_steps()
        keep = rule is PartialWork.SEND and result.steps > 0 and result.steps >= fraction * planned
        _log.info(
            "round stopped early after %d/%d steps (%s): %s (partial_work=%s, min fraction %g)",
            result.steps,
            planned,
            self.decision,
            "sending it" if keep else "discarded",
            rule.value,
            fraction,
        )
        return keep

    def _commit_update(self, offer: HeldModel, base: np.ndarray, result: TrainResult) -> None:
        residual_before = self.store.residual()  # (n_params,) float32
        seq = self.store.next_sequence()
        update, residual_after = build_update(
            offer=offer, base=base, result=result, residual=residual_before, codec=self.codec,
            device_id=self.config.device_id, seq=seq, num_local=len(self.train_y),
        )  # fmt: skip
        data = encode_update_compact(update)
        self.store.commit(seq, offer.version, data, residual_before, residual_after, self.clock())
        _log.info(
            "round on v%d: %d steps, loss %.4f, %.2fs; update seq %d (%d bytes) in outbox",
            offer.version,
            result.steps,
            result.mean_loss,
            result.seconds,
            seq,
            len(data),
        )

    def _save_model(self, kind: ModelKind, weights: np.ndarray, version: int) -> None:
        assert self.models is not None
        accuracy, samples = None, 0
        if self.test_x is not None and self.test_y is not None and len(self.test_y):
            self.trainer.set_weights(weights)
            ev = self.trainer.evaluate(self.test_x, self.test_y)
            accuracy, samples = float(ev.accuracy), ev.samples
        try:
            self.models.save(
                kind, weights, version=version, accuracy=accuracy, test_samples=samples
            )
        except (FleetlearnError, OSError) as exc:  # the apps' copy must never stop training
            _log.error("could not write the %s model: %s", kind.value, exc)
            return
        _log.info(
            "%s model v%d saved (accuracy %s)",
            kind.value,
            version,
            "n/a" if accuracy is None else f"{accuracy:.3f}",
        )

    # -- observability ----------------------------------------------------------------------
    def _publish_status(self, force: bool = False) -> None:
        version = self.offer.version if self.offer else None
        key = (self.state.value, str(self.decision), version)
        now = self.clock()
        due = now - self._status_at >= self.config.training.status_interval_s
        if not (force or due or key != self._status_key) or not self.link.connected:
            return
        status = DeviceStatus(
            device_id=self.config.device_id,
            online=True,
            state=self.state.value,
            model_version=version,
            reason=str(self.decision) if self.decision else "",
            conditions=self.last_conditions.as_status() if self.last_conditions else {},
            timestamp=now,
        )
        self.link.publish(self._status_topic, encode_status(status), 1, True)
        self._status_key, self._status_at = key, now
