"""The server service: MQTT in, durable aggregation, Acks and signed model offers out.

    link callbacks ──enqueue──> incoming queue ──> one worker thread:
        take 1 message (or up to batch_max in group-commit mode)
        ServerCore.submit each (decode -> admit -> log append -> apply)
        tick (FedAvg deadline) -> commit_start (fsync queued)
        then, for the batch before: wait for its fsync -> Acks (QoS 1) -> publish? -> checkpoint?

The fsync of one batch overlaps the decoding of the next (a pipelined group commit): Acks and
offers still leave only after the fsync that covers them, and an offer carries the model as of
its batch's commit (`Commit.model`), never one with updates not yet on disk.

Only the worker touches the core, so there are no locks around the model. On start the server
recovers its state folder and publishes the current model (retained, signed). Offers are paced
(server/offer_pacing.py): never within `publish.min_interval_seconds` of the last one, then after
`publish.every_versions` new versions or `publish.every_seconds` after any new version.

In-process use (demo, tests):

    app = ServerApp(config); app.start(); ...; app.wait_for_version(5, timeout=30); app.stop()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import numpy as np

from protocol.downlink import PublishedModel
from protocol.errors import FleetlearnError, Reason
from protocol.messages import ModelOffer, encode_ack, encode_offer, encode_vector
from protocol.secagg.identity import Trust
from protocol.signing import load_private_key, load_public_key, sign_offer
from protocol.topics import (
    DeviceTopicKind,
    ack_topic,
    device_subscription,
    global_model_topic,
    model_delta_topic,
    secagg_down_topic,
    serving_delta_topic,
    serving_model_topic,
)
from server.artifacts import ServerArtifacts, load_server_artifacts
from server.config import FsyncMode, ServerConfig
from server.core import Commit, Outcome, ServerCore
from server.device_inbox import Action, DeviceInbox
from server.downlink import DownlinkChain, signed_delta_bytes
from server.evaluation import EvalResult, Evaluator, load_test_set
from server.kernels.fused import warm_up
from server.metrics import ServerMetrics
from server.observer import NullObserver, ServerObserver
from server.offer_pacing import offer_due
from server.privacy import PrivacyStatus
from server.refusal_acks import RefusalAckGate
from server.secagg import CohortRunner, SecAggSettings
from server.secagg_privacy import member_settings
from server.serving import ServingAverage
from server.strategies import make_strategy
from server.subscriptions import plan_subscriptions, remember_subscriptions
from transport import IncomingMessage, MqttLink, PublishHandle

__all__ = ["LinkLike", "ServerApp", "ServerStatus"]

_log = logging.getLogger(__name__)
_FAILURE_LOG_INTERVAL = 10.0  # seconds between warnings about publishes the link refused

# Offers go out at QoS 0, retained. A message reaches a subscriber at the lower of the two QoS
# and the broker never queues QoS 0 for an offline client, so a device subscribing at QoS 1 on
# a persistent session cannot make the broker hoard offers for it (the probe: 808 offers, 31 MB
# in 6.8 min); on every (re)subscribe it gets the retained latest, all a device ever needs.
# QoS 0 is dropped while our own link is down: the latest offer is re-sent on every reconnect.
OFFER_QOS = 0


class LinkLike(Protocol):
    """The part of transport.MqttLink the server uses (tests pass an in-memory fake)."""

    connect_count: int  # successful CONNACKs so far: offers are re-sent when it moves

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def subscribe(self, topic_filter: str, qos: int = 1) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishHandle: ...
    def incoming(self) -> queue.Queue[IncomingMessage]: ...


@dataclass(frozen=True, slots=True)
class ServerStatus:
    version: int  # committed (durable) version
    published_version: int
    counts: dict[str, int]  # accepted and rejected-by-reason
    last_eval: EvalResult | None  # the training iterate (what devices train from)
    pending: int  # updates buffered in the strategy
    privacy: PrivacyStatus | None = None  # epsilon spent, budget, exhausted; None = no DP
    last_serving_eval: EvalResult | None = None  # the serving average (server/serving.py)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A processed batch waiting for its fsync before anything about it leaves the process."""

    commit: Commit
    outcomes: list[Outcome]
    secagg_out: list[tuple[str, bytes]]  # secure-aggregation replies released by this batch
    now: float
    started: float  # perf_counter at the start of processing (ingest latency metric)


class ServerApp:
    def __init__(
        self,
        config: ServerConfig,
        *,
        link: LinkLike | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._artifacts: ServerArtifacts = load_server_artifacts(config.artifacts)
        manifest = self._artifacts.manifest
        try:
            self._key = load_private_key(config.signing_key.read_bytes())
        except OSError as exc:
            raise FleetlearnError(f"signing_key {config.signing_key}: {exc}") from exc
        strategy = make_strategy(
            config.strategy,
            config.strategy_params,
            config.staleness or None,
            config.robust,
            privacy=config.privacy,
        )
        self.core = ServerCore(
            manifest,
            self._artifacts.initial_weights,
            strategy,
            config.state_dir,
            config.admission,
            checkpoint_every=config.durability.checkpoint_every,
            checkpoint_log_ratio=config.durability.checkpoint_log_ratio,
            serving=ServingAverage(config.serving.decay),
        )
        self.metrics = ServerMetrics()
        self.metrics_port: int | None = None
        self._evaluator: Evaluator | None = None
        if config.test_data is not None:
            x, y = load_test_set(config.test_data, manifest)
            self._evaluator = Evaluator(self._artifacts.inference_model, manifest, x, y)
        self._link: LinkLike = link or MqttLink(config.broker)
        self._topic = global_model_topic(config.fleet, manifest.model_id)
        self._serving_topic = serving_model_topic(config.fleet, manifest.model_id)
        self._delta_topic = model_delta_topic(config.fleet, manifest.model_id)
        self._serving_delta_topic = serving_delta_topic(config.fleet, manifest.model_id)
        # what devices hold of each published model (server/downlink.py)
        pub = config.publish
        self._downlink = DownlinkChain(manifest, pub.codec, pub.delta_codec)
        self._serving_downlink = DownlinkChain(manifest, pub.codec, pub.delta_codec)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the published snapshot and last eval
        self._published: tuple[int, np.ndarray] | None = None
        self._published_at = 0.0
        self._offers: list[tuple[str, bytes]] = []  # the latest signed offers, as sent
        self._offers_sent_on = -1  # the link's connect_count when they were last sent
        self._last_eval: EvalResult | None = None
        self._last_serving_eval: EvalResult | None = None
        self._version_changed = threading.Condition(self._lock)
        self._committed_version = 0
        self.error: BaseException | None = None  # set if the worker died
        self.offers_published = 0  # full offers sent (each goes to every device)
        sa = member_settings(config.secure_aggregation, manifest, config.privacy)
        self.secagg = CohortRunner(sa, manifest, _trust(sa, config.fleet)) if sa.enabled else None
        self._inbox = DeviceInbox(config.fleet, config.admission, self.secagg)
        self._refusal_acks = RefusalAckGate()
        self._failures_logged_at = self._flood_logged_at = -_FAILURE_LOG_INTERVAL  # log pacing
        self._observer: ServerObserver = NullObserver()

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        report = self.core.recover()
        warm_up(self.core.manifest.num_params)  # kernels now, not while a device waits
        self.core.strategy.warm_up(self.core.manifest.num_params)  # the strategy's own kernels
        self._committed_version = report.version
        self.metrics.version.set(report.version)
        self.metrics.set_privacy(self._privacy_status())
        if self.config.metrics is not None:
            self.metrics_port = self.metrics.serve(
                self.config.metrics.address, self.config.metrics.port
            )
            _log.info(
                "metrics on http://%s:%d/metrics", self.config.metrics.address, self.metrics_port
            )
        plan = plan_subscriptions(
            self.config.fleet, self.config.shared_group, self.config.state_dir
        )
        for topic_filter in plan.unwanted:  # before start: sent ahead of the SUBSCRIBEs
            self._link.unsubscribe(topic_filter)
        for topic_filter, qos in plan.wanted:
            self._link.subscribe(topic_filter, qos)
        if self.secagg is not None:  # cohort messages: one server instance owns a cohort
            self._link.subscribe(
                device_subscription(self.config.fleet, DeviceTopicKind.SECAGG_UP), 1
            )
        remember_subscriptions(self.config.state_dir, plan)
        self._link.start()
        self._publish(self._clock())
        if self.config.publish.delta_codec is None:  # agents waiting for deltas: none will come
            for topic in (self._delta_topic, self._serving_delta_topic):
                self._send(topic, b"", qos=1, retain=True)
        self._thread = threading.Thread(target=self._run, name="fleetlearn-server", daemon=True)
        self._thread.start()
        _log.info(
            "server up: model %s… version %d, strategy %s, fsync %s",
            self.core.manifest.model_id[:12],
            self.core.version,
            self.core.strategy.name,
            self.config.durability.fsync.value,
        )

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._link.stop()
        self.core.close()
        self.metrics.close()

    def __enter__(self) -> ServerApp:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def observe(self, observer: ServerObserver) -> None:
        """Tell `observer` what happens from now on (before `start`: the web console)."""
        self._observer = observer

    # --- views for the demo and tests ------------------------------------------------------

    def status(self) -> ServerStatus:
        with self._lock:
            published = self._published[0] if self._published else -1
            return ServerStatus(
                self._committed_version,
                published,
                self.metrics.counts(),
                self._last_eval,
                self.core.strategy.pending,
                self._privacy_status(),
                self._last_serving_eval,
            )

    def _privacy_status(self) -> PrivacyStatus | None:
        mechanism = self.core.strategy.privacy
        return None if mechanism is None else mechanism.status()

    def published_model(self) -> tuple[int, np.ndarray] | None:
        with self._lock:
            return (
                None if self._published is None else (self._published[0], self._published[1].copy())
            )

    @property
    def last_eval(self) -> EvalResult | None:
        """The latest evaluation of the training iterate."""
        with self._lock:
            return self._last_eval

    @property
    def last_serving_eval(self) -> EvalResult | None:
        """The latest evaluation of the serving model (the iterate's when serving is off)."""
        with self._lock:
            return self._last_serving_eval

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Block until the committed version reaches `version` (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        with self._version_changed:
            while self._committed_version < version:
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    return False
                self._version_changed.wait(min(left, 0.5))
            return True

    # --- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        incoming = self._link.incoming()
        batch_max = (
            self.config.durability.batch_max
            if self.config.durability.fsync is FsyncMode.BATCH
            else 1
        )
        in_flight: _InFlight | None = None  # a batch whose fsync is queued, Acks not yet sent
        try:
            while not self._stop.is_set():
                if self._link.connect_count != self._offers_sent_on:
                    self._send_offers()  # (re)connected: QoS 0 sent while down was dropped
                try:  # with a batch in flight, don't sit on its Acks waiting for more traffic
                    batch = [incoming.get(timeout=0.0 if in_flight else 0.1)]
                except queue.Empty:
                    batch = []
                while batch and len(batch) < batch_max:
                    try:
                        batch.append(incoming.get_nowait())
                    except queue.Empty:
                        break
                if in_flight is not None and not batch:
                    self._finish(in_flight)
                    in_flight = None
                    continue
                self.metrics.backlog.set(incoming.qsize())
                started = self._process(batch)
                if in_flight is not None:
                    self._finish(in_flight)
                in_flight = started
            if in_flight is not None:
                self._finish(in_flight)
        except BaseException as exc:  # the state on disk is consistent; stop and say why
            self.error = exc
            _log.critical("server worker failed; stopping (state is safe on disk)", exc_info=exc)
            with self._version_changed:
                self._version_changed.notify_all()

    def _process(self, batch: list[IncomingMessage]) -> _InFlight:
        """Submit a batch and queue its fsync; nothing leaves the process yet."""
        started = time.perf_counter()
        outcomes: list[Outcome] = []
        for message in batch:
            outcome = self._submit(message)
            if outcome is not None:
                outcomes.append(outcome)
        now = self._clock()
        for route in self._inbox.sweep(now):
            self._clear_retained(route.topic, route.why)
        self.core.tick(now)
        finished = self._secagg_apply(now)
        return _InFlight(self.core.commit_start(), outcomes, finished, now, started)

    def _finish(self, done: _InFlight) -> None:
        """Once its fsync is done: the batch's Acks, metrics, offer and checkpoint."""
        done.commit.wait()  # durable from here on: Acks and offers may leave
        self._secagg_send(done.secagg_out)
        for outcome in done.outcomes:
            ack = outcome.ack
            if self._refusal_acks.allow(ack, done.now):  # a refusal is advice: QoS 0, bounded
                topic = ack_topic(self.config.fleet, outcome.device_id)
                self._send(topic, encode_ack(ack), qos=1 if ack.accepted else 0)
            else:
                self._withheld(outcome.device_id)
            if outcome.ack.accepted:
                self.metrics.count_accepted(outcome.staleness, schema_1=outcome.schema_1)
            else:
                self.metrics.count_rejected(outcome.ack.reason)
            self._observer.update_outcome(
                outcome.device_id, outcome.ack.reason.value, outcome.staleness
            )
        if done.outcomes:
            elapsed = time.perf_counter() - done.started
            for _ in done.outcomes:
                self.metrics.ingest.observe(elapsed)
        version = done.commit.version
        with self._version_changed:
            self._committed_version = version
            self._version_changed.notify_all()
        self.metrics.version.set(version)
        self.metrics.set_privacy(self._privacy_status())
        self._maybe_publish(done.commit, done.now)
        self.core.maybe_checkpoint()

    def _submit(self, message: IncomingMessage) -> Outcome | None:
        now = self._clock()
        self._observer.device_message(message.topic, message.payload, now)
        route = self._inbox.route(message, now)  # retained, size and rate rules per topic
        if route.action is Action.UPDATE:
            return self.core.submit(route.device_id, message.payload, now=now)
        if route.action is Action.SECAGG and self.secagg is not None:
            published = self._published[0] if self._published else self.core.version
            self._secagg_send(self.secagg.handle(route.device_id, message.payload, now, published))
        elif route.action is Action.CLEAR:
            self._clear_retained(route.topic, route.why)
        elif route.reason is not None:
            self.metrics.count_rejected(route.reason)
            self._observer.update_outcome(route.device_id, route.reason.value, None)
        return None

    def _clear_retained(self, topic: str, why: str) -> None:
        """Replace whatever a device left retained on `topic` with nothing (issue 15)."""
        _log.warning("%s on %s: clearing it", why, topic[:120])
        self.metrics.count_rejected(Reason.FIELD)
        self._send(topic, b"", qos=1, retain=True)

    def _withheld(self, device_id: str) -> None:
        """A refusal not answered: the device sends far beyond its limits. Name it, now and
        then, so an operator can revoke it (the server's MQTT connection still carries it)."""
        self.metrics.refusals_withheld.inc()
        now = time.monotonic()
        if now - self._flood_logged_at >= _FAILURE_LOG_INTERVAL:
            self._flood_logged_at = now
            _log.warning(
                "device %s is sending far beyond its rate limit (refusals no longer answered); "
                "if it goes on, revoke it: fleetlearn broker revoke-device %s",
                device_id,
                device_id,
            )

    def _send(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> bool:
        """Publish; a refusal by the link (paho out of message ids, oversize, ...) is counted
        and logged at most every few seconds, never raised: it must not stop the worker."""
        try:
            self._link.publish(topic, payload, qos=qos, retain=retain)
        except (FleetlearnError, OSError) as exc:
            self.metrics.count_publish_failure()
            now = time.monotonic()
            if now - self._failures_logged_at >= _FAILURE_LOG_INTERVAL:
                self._failures_logged_at = now
                total = self.metrics.publish_failures()
                _log.warning("publish failed (%d so far, not retried): %s", total, exc)
            return False
        return True

    # --- secure aggregation (server/secagg.py) ------------------------------------------------

    def _secagg_apply(self, now: float) -> list[tuple[str, bytes]]:
        """Deadlines, then each unmasked cohort sum enters the log and the strategy (not yet
        durable); returns the messages to send once committed."""
        if self.secagg is None:
            return []
        published = self._published[0] if self._published else self.core.version
        out = self.secagg.tick(now, published)
        for cohort, record in self.secagg.finished():
            if record is not None and cohort.result is not None:
                tau = self.core.version - cohort.result.base_version
                self.core.submit_cohort(record)
                out += self.secagg.results(cohort, self.core.version)
                for member in cohort.result.members:  # each counted member's update: accepted
                    self.metrics.count_accepted(tau)
                    self._observer.update_outcome(member, Reason.OK.value, tau)
            members = cohort.result.members if cohort.result is not None else cohort.members
            self._observer.cohort_finished(
                cohort.cohort_id.hex(), len(members), record is not None, cohort.base_version
            )
        return out

    def _secagg_send(self, out: list[tuple[str, bytes]]) -> None:
        for device_id, payload in out:
            self._send(secagg_down_topic(self.config.fleet, device_id), payload, qos=1)

    # --- publishing ---------------------------------------------------------------------------

    def _maybe_publish(self, state: Commit, now: float) -> None:
        with self._lock:
            last = self._published[0] if self._published else -1
        pub = self.config.publish
        if offer_due(
            state.version,
            last,
            now,
            self._published_at,
            every_versions=pub.every_versions,
            every_seconds=pub.every_seconds,
            min_interval_seconds=pub.min_interval_seconds,
        ):
            self._publish(now, state)

    def _offer(self, model: np.ndarray, version: int) -> bytes:
        """A whole, signed offer of `model` (the training topic's is the published chain's)."""
        privacy = self._privacy_status()
        offer = ModelOffer(
            model_id=self.core.manifest.model_id,
            version=version,
            manifest_digest=self.core.manifest.digest,
            weights=encode_vector(model, {"name": self.config.publish.codec}),
            created_at=time.time(),
            fedprox_mu=float(self.core.strategy.fedprox_mu),
            privacy=privacy.offer_fields() if privacy is not None else {},
        )
        return encode_offer(sign_offer(offer, self._key))

    def _publish(self, now: float, state: Commit | None = None) -> None:
        state = state or self.core.commit_start()  # None: at start-up, nothing in flight
        state.wait()  # an offer never carries an update that is not on disk
        version = state.version
        # Devices hold the published chains (server/downlink.py): what the whole offers and the
        # deltas carry, what is evaluated and what secure aggregation calls the base.
        published, offers = self._chain_offers(
            self._downlink, state.model, version, (self._topic, self._delta_topic)
        )
        model = published.weights.copy()
        serving, serving_published = state.serving_model.copy(), None
        if self.core.serving.enabled and self.config.serving.publish:
            # Devices' inference model: same signed offer formats, its own retained topics.
            serving_published, more = self._chain_offers(
                self._serving_downlink,
                serving,
                version,
                (self._serving_topic, self._serving_delta_topic),
            )
            serving = serving_published.weights.copy()
            offers += more
        self._offers = offers
        if not self._send_offers():
            return  # not published: the pacing rule offers it again on a later batch
        self._downlink.commit(published)
        if serving_published is not None:
            self._serving_downlink.commit(serving_published)
        with self._lock:
            self._published = (version, model)
        self._published_at = now
        self.offers_published += 1
        self._observer.model_published(version, self._privacy_status())
        _log.info("published model version %d", version)
        if self._evaluator is not None:
            self._evaluate(self._evaluator, model, serving, version)

    def _chain_offers(
        self, chain: DownlinkChain, model: np.ndarray, version: int, topics: tuple[str, str]
    ) -> tuple[PublishedModel, list[tuple[str, bytes]]]:
        """The model devices will hold for `version`: its whole offer and, when the chain has
        a base, the signed delta to it."""
        published, delta = chain.propose(model, version)
        offers = [(topics[0], self._offer(published.weights, version))]
        if delta is not None:
            privacy = self._privacy_status()
            signed = signed_delta_bytes(
                delta,
                self._key,
                fedprox_mu=float(self.core.strategy.fedprox_mu),
                privacy=privacy.offer_fields() if privacy is not None else {},
            )
            offers.append((topics[1], signed))
        return published, offers

    def _send_offers(self) -> bool:
        """(Re)send the latest offers; False when the link refused one (counted, not raised)."""
        self._offers_sent_on = self._link.connect_count
        sent = [
            self._send(topic, payload, qos=OFFER_QOS, retain=True)
            for topic, payload in self._offers
        ]
        return all(sent)

    def _evaluate(
        self, evaluator: Evaluator, model: np.ndarray, serving: np.ndarray, version: int
    ) -> None:
        result = evaluator.evaluate(model, version)
        served = evaluator.evaluate(serving, version) if self.core.serving.enabled else result
        with self._lock:
            self._last_eval, self._last_serving_eval = result, served
        self._observer.model_evaluated(result, served)
        m = self.metrics
        m.eval_accuracy.set(result.accuracy)
        m.eval_f1.set(result.macro_f1)
        m.eval_loss.set(result.loss)
        m.eval_version.set(version)
        m.serving_accuracy.set(served.accuracy)
        m.serving_f1.set(served.macro_f1)
        _log.info(
            "eval v%d: accuracy %.4f macro-F1 %.4f loss %.4f; serving accuracy %.4f",
            version,
            result.accuracy,
            result.macro_f1,
            result.loss,
            served.accuracy,
        )


def _trust(settings: SecAggSettings, fleet: str) -> Trust | None:
    """The enrolment key cohorts check joins and U3 signatures against (None: devices only)."""
    path = settings.enrolment_key
    if path is None:
        _log.warning("secure_aggregation: no enrolment_key: member signatures are checked by the "
                     "devices only, so one unenrolled join can make a cohort fail")  # fmt: skip
        return None
    try:
        return Trust(fleet, load_public_key(path.read_bytes()))
    except (OSError, FleetlearnError) as exc:
        raise FleetlearnError(f"secure_aggregation.enrolment_key {path}: {exc}") from exc


def reason_counts(app: ServerApp) -> dict[Reason, int]:
    """Rejections by Reason (a typed view of `status().counts`)."""
    counts = app.status().counts
    return {r: counts[r.value] for r in Reason if r.value in counts}
