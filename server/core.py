"""The durable aggregation core: admit -> log -> apply -> (sync) -> ack. No MQTT, no clock reads.

`ServerCore` owns the global model, its version, the strategy, the per-device sequence table and
the update log. The service loop (`server/app.py`) feeds it payloads from MQTT; the crash-test
driver and the benchmark feed it directly.

Write path for a batch of updates (a batch of one when fsync is per update):

    for each payload:  admit (reads state) -> append log record (written by the log's thread)
                       -> apply -> record seq
    commit():          fsync the log            <- only now may Acks be sent and the model published
    commit_start():    the same fsync, queued: the caller submits the next batch meanwhile and
                       waits on the returned Commit before sending this batch's Acks or
                       publishing Commit.model (the service loop's pipelined group commit)

Applying before the fsync is safe because nothing leaves the process until `commit` returns: a
crash before it loses exactly the records that were never acknowledged. A tick that takes a step
(FedAvg's deadline) is logged as its own record so replay reproduces it.

Recovery: load the checkpoint (or start from the initial weights at version 0), replay every log
record after its position through the same strategy code, truncate a torn tail (reported, never
applied). Replays are idempotent: a record's (device, seq) lands in the sequence table with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from protocol.bounded_msgpack import unpack_bounded
from protocol.errors import DataError, FleetlearnError, ProtocolError, Reason, RejectedUpdate
from protocol.manifest import Manifest
from protocol.messages import Ack
from protocol.update_header import decode_any_update, is_legacy_update
from server.admission import Admission, AdmissionLimits, DuplicateUpdate, decode_admitted
from server.durability import (
    CHECKPOINT_NAME,
    Checkpoint,
    LogPosition,
    LogRecord,
    TailReport,
    UpdateLog,
    load_checkpoint,
    read_from,
    save_checkpoint,
)
from server.faults import fault_point
from server.rate_limit import DeviceRateLimiter
from server.secagg_apply import apply_cohort
from server.serving import ServingAverage
from server.strategies.base import StepResult, Strategy

__all__ = ["Commit", "Outcome", "RecoveryReport", "ServerCore", "checkpoint_due"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one incoming update; `ack` goes to `device_id`'s ack topic after commit."""

    device_id: str
    ack: Ack
    staleness: int | None = None  # tau of an accepted update
    stepped: bool = False  # the model version advanced
    schema_1: bool = False  # an accepted update sent with the deprecated header


@dataclass(frozen=True, slots=True)
class Commit:
    """The state as of a `commit_start`: durable once `wait()` returns. Strategies build a new
    model array at every step (never in place), so these references stay as they were."""

    version: int
    model: np.ndarray  # (n,) float32, the iterate
    serving_model: np.ndarray  # (n,) float32, server/serving.py's average (or the iterate)
    wait: Callable[[], None]  # blocks until durable; raises OSError if the log failed


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    from_checkpoint: bool
    checkpoint_version: int
    replayed: int  # log records applied after the checkpoint
    version: int
    tail: TailReport | None


@dataclass
class _Counters:
    since_checkpoint: int = 0  # log records
    bytes_since_checkpoint: int = 0  # log bytes (meta + body)
    checkpoint_bytes: int = 0  # the last checkpoint's size
    applied: int = 0


def checkpoint_due(
    records: int, log_bytes: int, checkpoint_bytes: int, every: int, log_ratio: float
) -> bool:
    """The checkpoint rule: `every` records logged since the last checkpoint and, with a log
    ratio, log bytes >= log_ratio x that checkpoint's bytes (or 10 x `every` records)."""
    return records >= every and (log_bytes >= log_ratio * checkpoint_bytes or records >= 10 * every)


class ServerCore:
    def __init__(
        self,
        manifest: Manifest,
        initial_weights: np.ndarray,
        strategy: Strategy,
        state_dir: Path,
        limits: AdmissionLimits | None = None,
        *,
        checkpoint_every: int = 200,  # log records between checkpoints (bounds replay time)
        checkpoint_log_ratio: float = 0.0,  # ...and log bytes >= this x the checkpoint's size
        keep_log: bool = False,  # keep checkpointed segments (tests inspect the full history)
        serving: ServingAverage | None = None,  # average of recent versions (None: the iterate)
    ) -> None:
        manifest.check_flat(initial_weights)
        self.manifest = manifest
        self.strategy = strategy
        strategy.start_from(initial_weights)  # a fresh fleet is defended from its first update
        self.state_dir = state_dir
        self.admission = Admission(manifest, limits or AdmissionLimits())
        lim = self.admission.limits
        self._rate = (
            None
            if lim.rate_per_minute is None
            else DeviceRateLimiter(lim.rate_per_minute, lim.rate_burst)
        )
        self.checkpoint_every = checkpoint_every
        self.checkpoint_log_ratio = checkpoint_log_ratio
        self.keep_log = keep_log
        self._model = initial_weights.copy()  # (n,) float32
        self._version = 0
        self._sequences: dict[str, tuple[int, str]] = {}
        self._log: UpdateLog | None = None
        self._counters = _Counters()
        self.serving = serving or ServingAverage()

    # --- state ------------------------------------------------------------------------------

    @property
    def model(self) -> np.ndarray:
        """The global model including uncommitted updates; publish only after `commit`."""
        return self._model

    @property
    def version(self) -> int:
        return self._version

    @property
    def serving_model(self) -> np.ndarray:
        """The serving average of recent versions (server/serving.py); the iterate if disabled."""
        return self.serving.model(self._model)

    @property
    def sequences(self) -> dict[str, tuple[int, str]]:
        return dict(self._sequences)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    # --- recovery ---------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ckpt = load_checkpoint(self.state_dir)
        start = LogPosition(1, 0)
        if ckpt is not None:
            if ckpt.model_id != self.manifest.model_id:
                raise DataError(
                    f"{self.state_dir}: state belongs to model {ckpt.model_id[:16]}…, "
                    f"not {self.manifest.model_id[:16]}… (use a fresh state folder)"
                )
            if ckpt.strategy_name != self.strategy.name:
                raise DataError(
                    f"{self.state_dir}: state was written by strategy {ckpt.strategy_name!r}, "
                    f"configured {self.strategy.name!r} (use a fresh state folder)"
                )
            self.manifest.check_flat(ckpt.model)
            self._model, self._version = ckpt.model.copy(), ckpt.version
            self.strategy.load_state_dict(ckpt.strategy_state)
            self.serving.load_state_dict(ckpt.serving_state)
            self._sequences = dict(ckpt.sequences)
            start = ckpt.log_position
        records, _end, tail = read_from(self.log_dir, start)
        for raw in records:
            self._replay(raw)
        self._log = UpdateLog(self.log_dir)
        report = RecoveryReport(
            ckpt is not None, ckpt.version if ckpt else 0, len(records), self._version, tail
        )
        _log.info(
            "recovered: checkpoint version %d + %d log records -> version %d%s",
            report.checkpoint_version,
            report.replayed,
            report.version,
            f" (dropped torn tail: {tail.why})" if tail else "",
        )
        if ckpt is None or records:
            self.checkpoint()
        else:
            self._counters.checkpoint_bytes = (self.state_dir / CHECKPOINT_NAME).stat().st_size
        return report

    def _replay(self, record: LogRecord) -> None:
        raw = record.meta
        try:
            rec = unpack_bounded(
                raw,
                "log record",
                max_containers=16,
                max_array_len=16,
                max_map_len=16,
                max_bytes=len(raw),
            )  # bounded (issue 15); the update itself is decoded by decode_any_update
            kind, version = rec["k"], rec["v"]
        except (ProtocolError, KeyError, TypeError) as exc:
            raise DataError(f"{self.log_dir}: undecodable log record: {exc}") from exc
        if version != self._version:
            raise DataError(
                f"{self.log_dir}: record for version {version} met state at {self._version}"
            )
        if kind == "t":
            result = self.strategy.flush(self._model, self._version)
        elif kind == "u":
            try:
                # the update is the record's body (FLR1 records carried it inside the meta)
                msg = decode_any_update(rec.get("payload", record.body))
                update = decode_admitted(msg, self.manifest, float(rec["scale"]))
            except (ProtocolError, KeyError) as exc:
                raise DataError(f"{self.log_dir}: logged update no longer decodes: {exc}") from exc
            result = self.strategy.apply_contribution(self._model, self._version, update)
            self._sequences[msg.device_id] = (msg.seq, str(rec["digest"]))
            self._note_applied(msg.device_id, msg.seq)
        elif kind == "c":  # a secure-aggregation cohort's unmasked mean (server/secagg.py)
            result = apply_cohort(self.strategy, self._model, self._version, rec, self.manifest)
        else:
            raise DataError(f"{self.log_dir}: unknown log record kind {kind!r}")
        self._take(result)

    # --- write path -------------------------------------------------------------------------

    def submit(self, device_id: str, payload: bytes, *, now: float | None = None) -> Outcome:
        """Admit, log (not yet synced) and apply one update. Ack only after `commit()`.

        `now` (monotonic seconds) enables the per-device rate limit; None skips it (replay
        tools and benchmarks that feed the core directly)."""
        log = self._require_log()
        version = self._version
        if now is not None and self._rate is not None:
            decision = self._rate.take(device_id, now)
            if not decision.allowed:  # before decoding: a flood costs one dict lookup each
                wait = decision.retry_after
                detail = f"over {self._rate.rate * 60:g} updates/min; retry in {wait:.1f} s"
                ack = Ack(device_id, 0, False, Reason.RATE_LIMITED, version, detail)
                return Outcome(device_id, ack)
        try:
            msg = self.admission.decode(payload)
        except ProtocolError as exc:  # undecodable: the device's seq is unknown, Ack with 0
            return Outcome(
                device_id, Ack(device_id, 0, False, exc.reason, version, exc.detail[:500])
            )
        try:
            admitted = self.admission.check(
                device_id,
                msg,
                payload,
                version=version,
                sequences=self._sequences,
                strategy=self.strategy,
            )
        except DuplicateUpdate as dup:
            ack = Ack(device_id, dup.seq, True, Reason.OK, version, dup.detail)
            return Outcome(device_id, ack)
        except (ProtocolError, RejectedUpdate) as exc:
            ack = Ack(device_id, msg.seq, False, exc.reason, version, exc.detail[:500])
            return Outcome(device_id, ack)
        msg = admitted.message
        record = {
            "k": "u",
            "v": version,
            "dev": msg.device_id,
            "seq": msg.seq,
            "scale": admitted.scale,
            "digest": admitted.digest,
        }
        meta = msgpack.packb(record, use_bin_type=True)
        log.append(meta, payload)  # the update as the body
        self._counters.bytes_since_checkpoint += len(meta) + len(payload)
        result = self.strategy.apply_contribution(self._model, version, admitted.fused)
        self._take(result)
        self._sequences[msg.device_id] = (msg.seq, admitted.digest)
        self._note_applied(msg.device_id, msg.seq)
        fault_point("core.applied")
        ack = Ack(device_id, msg.seq, True, Reason.OK, self._version)
        return Outcome(
            device_id,
            ack,
            staleness=admitted.staleness,
            stepped=result.stepped,
            schema_1=is_legacy_update(payload),
        )

    def submit_cohort(self, record: dict[str, object]) -> bool:
        """Log and apply one cohort's unmasked mean as one buffer (`cohort_record`); commit."""
        log = self._require_log()
        record = {**record, "v": self._version}
        meta = msgpack.packb(record, use_bin_type=True)
        log.append(meta)
        self._counters.bytes_since_checkpoint += len(meta)
        result = apply_cohort(self.strategy, self._model, self._version, record, self.manifest)
        self._take(result)  # the serving average follows cohort steps like any other
        self._counters.since_checkpoint += 1
        return result.stepped

    def tick(self, now: float) -> bool:
        """Let time-driven strategies step (FedAvg deadline); a step is logged. Commit after."""
        log = self._require_log()
        version = self._version
        # Deterministic, and a step is logged before anything can observe it (replayed via flush).
        result = self.strategy.tick(self._model, version, now)
        if result.stepped:
            log.append(msgpack.packb({"k": "t", "v": version}, use_bin_type=True))
            self._take(result)
        return result.stepped

    def commit(self) -> None:
        """Make everything submitted durable. After this, Acks may go out."""
        self.commit_start().wait()

    def commit_start(self) -> Commit:
        """Start making everything submitted so far durable, without waiting: the caller may
        submit the next batch while the disk works, and sends this batch's Acks (and publishes
        `Commit.model`, the state they built) only after `Commit.wait()` returns."""
        log = self._require_log()
        return Commit(self._version, self._model, self.serving_model, log.sync_start())

    def handle(self, device_id: str, payload: bytes) -> Outcome:
        """submit + commit: the fsync-per-update path."""
        outcome = self.submit(device_id, payload)
        self.commit()
        return outcome

    def maybe_checkpoint(self) -> bool:
        """Checkpoint once `checkpoint_every` records are logged and, with a log ratio, the log
        holds that many times the last checkpoint's bytes (or 10 x checkpoint_every records)."""
        c = self._counters
        due = checkpoint_due(
            c.since_checkpoint,
            c.bytes_since_checkpoint,
            c.checkpoint_bytes,
            self.checkpoint_every,
            self.checkpoint_log_ratio,
        )
        if due:
            self.checkpoint()
        return due

    def checkpoint(self) -> None:
        """Sync the log, start a new segment, atomically save the state, drop old segments."""
        log = self._require_log()
        position = log.rotate()
        path = save_checkpoint(
            self.state_dir,
            Checkpoint(
                model_id=self.manifest.model_id,
                version=self._version,
                model=self._model,
                strategy_name=self.strategy.name,
                strategy_state=self.strategy.state_dict(),
                sequences=dict(self._sequences),
                log_position=position,
                serving_state=self.serving.state_dict(),
            ),
        )
        if not self.keep_log:
            log.remove_before(position.segment)
        self._counters.since_checkpoint = self._counters.bytes_since_checkpoint = 0
        self._counters.checkpoint_bytes = path.stat().st_size

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _take(self, result: StepResult) -> None:
        self._model, self._version = result.model, result.version
        if result.stepped:
            self.serving.observe(self._model)

    def _note_applied(self, device_id: str, seq: int) -> None:
        self._counters.applied += 1
        self._counters.since_checkpoint += 1
        del device_id, seq

    def _require_log(self) -> UpdateLog:
        if self._log is None:
            raise FleetlearnError("ServerCore: call recover() before submitting updates")
        return self._log
