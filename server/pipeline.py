"""The aggregation pipeline: one update from bytes to a new model, with its stages in order.

`AggregationPipeline.receive` is the whole path, read top to bottom:

    1. admission        per-device rate limit, then size, schema, device, model, sequence,
                        staleness, codec, finiteness, norm (server/admission.py): cheapest first,
                        every refusal a reason code in the Ack
    2. log              the caller's durable log takes the accepted update before anything
                        changes (ServerCore; the simulator runs the same pipeline without one)
    3. buffer           the strategy's policy puts it into the open buffer (server/buffer.py)
    4. reduce           a closing buffer becomes the mean, the rows' robust aggregate or the
                        DP-noised mean (server/reducer.py)
    5. optimiser step   the server optimiser's (fused) step: a new model and version + 1
    6. serving average  the model local apps run follows every step (server/serving.py)
    7. offer            `Received.stepped`: the caller publishes once its log is durable

Stages 3-5 run inside `Strategy.apply_contribution`, always with the delta in codec form (the
fused path). Sans-I/O: bytes and the time in, an Ack and the new state out; the clock is the
caller's (monotonic seconds on the server, virtual time in the simulator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from protocol.errors import ProtocolError, Reason, RejectedUpdate
from protocol.messages import Ack
from server.admission import Admission, Admitted, DuplicateUpdate
from server.admitted import Contribution
from server.rate_limit import DeviceRateLimiter
from server.secagg_apply import apply_cohort
from server.serving import ServingAverage
from server.strategies.base import StepResult, Strategy

__all__ = ["AggregationPipeline", "PipelineState", "Received", "UpdateLogger"]

UpdateLogger = Callable[[Admitted, bytes], None]  # (the admitted update, its payload) -> None


@dataclass(frozen=True, slots=True)
class Received:
    """What one incoming update did: `ack` goes back to the device once the log is durable."""

    ack: Ack
    admitted: Admitted | None = None  # None: refused, or a redelivery of the last update
    stepped: bool = False  # the model version advanced: an offer is due


class AggregationPipeline:
    def __init__(
        self,
        admission: Admission,
        initial: np.ndarray,
        strategy: Strategy,
        serving: ServingAverage | None = None,
    ) -> None:
        admission.manifest.check_flat(initial)
        self.admission = admission
        self.strategy = strategy
        strategy.start_from(initial)  # a fresh fleet is defended from its first update
        lim = admission.limits
        self.rate = (
            None
            if lim.rate_per_minute is None
            else DeviceRateLimiter(lim.rate_per_minute, lim.rate_burst)
        )
        self.model = np.asarray(initial, np.float32).copy()  # (n,) float32, never mutated
        self.version = 0
        self.sequences: dict[str, tuple[int, str]] = {}  # device -> (last seq, its digest)
        self.serving = serving or ServingAverage()

    def receive(
        self, device_id: str, payload: bytes, *, now: float | None, log: UpdateLogger | None
    ) -> Received:
        """One update through every stage (the module doc). `now` None skips the rate limit
        (tools and benchmarks that feed the core directly); `log` None keeps no log."""
        version = self.version
        # 1. admission: the rate limit before decoding (a flood costs one dict lookup each)
        limited = self._rate_limited(device_id, now)
        if limited is not None:
            return Received(limited)
        try:
            msg = self.admission.decode(payload)
        except ProtocolError as exc:  # undecodable: the device's seq is unknown, Ack with 0
            return Received(Ack(device_id, 0, False, exc.reason, version, exc.detail[:500]))
        try:
            admitted = self.admission.check(
                device_id,
                msg,
                payload,
                version=version,
                sequences=self.sequences,
                strategy=self.strategy,
            )
        except DuplicateUpdate as dup:
            return Received(Ack(device_id, dup.seq, True, Reason.OK, version, dup.detail))
        except (ProtocolError, RejectedUpdate) as exc:
            return Received(Ack(device_id, msg.seq, False, exc.reason, version, exc.detail[:500]))
        # 2. log: written before the model changes (durable at the caller's commit)
        if log is not None:
            log(admitted, payload)
        # 3-6. buffer, reduce, optimiser step, serving average
        stepped = self.apply(admitted.fused)
        self.sequences[admitted.message.device_id] = (admitted.message.seq, admitted.digest)
        # 7. offer: the caller's, once the log is durable
        ack = Ack(device_id, admitted.message.seq, True, Reason.OK, self.version)
        return Received(ack, admitted, stepped)

    def apply(self, update: Contribution) -> bool:
        """Stages 3-6 for an admitted update (live, or replayed from the log)."""
        return self.take(self.strategy.apply_contribution(self.model, self.version, update))

    def apply_cohort(self, record: dict[str, object]) -> bool:
        """A secure-aggregation cohort's unmasked mean, as one buffer (server/secagg_apply.py)."""
        manifest = self.admission.manifest
        return self.take(apply_cohort(self.strategy, self.model, self.version, record, manifest))

    def tick(self, now: float, log: Callable[[int], object] | None = None) -> bool:
        """Time passes (FedAvg's round deadline). A step is logged (`log(version)`) before it
        is taken, so replay reproduces it (as a `flush`)."""
        result = self.strategy.tick(self.model, self.version, now)
        if result.stepped and log is not None:
            log(self.version)
        return self.take(result)

    def flush(self) -> bool:
        """The pending step now (replay of a logged tick)."""
        return self.take(self.strategy.flush(self.model, self.version))

    def take(self, result: StepResult) -> bool:
        """The new model and version; the serving average follows every step (stage 6)."""
        self.model, self.version = result.model, result.version
        if result.stepped:
            self.serving.observe(self.model)
        return result.stepped

    def _rate_limited(self, device_id: str, now: float | None) -> Ack | None:
        if now is None or self.rate is None:
            return None
        decision = self.rate.take(device_id, now)
        if decision.allowed:
            return None
        wait = decision.retry_after
        detail = f"over {self.rate.rate * 60:g} updates/min; retry in {wait:.1f} s"
        return Ack(device_id, 0, False, Reason.RATE_LIMITED, self.version, detail)


class PipelineState:
    """Read access to a pipeline's state for what wraps it (ServerCore, the simulator's server)."""

    def __init__(self, pipeline: AggregationPipeline) -> None:
        self.pipeline = pipeline
        # the same objects for the pipeline's life
        self.strategy: Strategy = pipeline.strategy
        self.admission: Admission = pipeline.admission
        self.serving: ServingAverage = pipeline.serving

    @property
    def model(self) -> np.ndarray:
        """The global model (on the server: including uncommitted updates, publish after commit)."""
        return self.pipeline.model

    @property
    def version(self) -> int:
        return self.pipeline.version

    @property
    def serving_model(self) -> np.ndarray:
        """The serving average of recent versions (server/serving.py); the iterate if disabled."""
        return self.pipeline.serving.model(self.pipeline.model)
