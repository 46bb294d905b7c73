"""The durable aggregation core: the aggregation pipeline plus the update log. No MQTT, no clock.

`ServerCore` wraps the pipeline (server/pipeline.py: admission, buffer, reduce, optimiser step,
serving average; it owns the model, its version, the strategy and the sequence table) with the
update log, checkpoints and recovery. The service loop (`server/app.py`) feeds it payloads from
MQTT; the crash-test driver and the benchmark feed it directly.

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
from protocol.errors import DataError, FleetlearnError, ProtocolError
from protocol.manifest import Manifest
from protocol.messages import Ack
from protocol.update_header import decode_any_update, is_legacy_update
from server.admission import Admission, AdmissionLimits, Admitted, decode_admitted
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
from server.pipeline import AggregationPipeline, PipelineState
from server.serving import ServingAverage
from server.strategies.base import Strategy

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


class ServerCore(PipelineState):
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
        self.manifest = manifest
        admission = Admission(manifest, limits or AdmissionLimits())
        super().__init__(AggregationPipeline(admission, initial_weights, strategy, serving))
        self.state_dir = state_dir
        self.checkpoint_every = checkpoint_every
        self.checkpoint_log_ratio = checkpoint_log_ratio
        self.keep_log = keep_log
        self._log: UpdateLog | None = None
        self._counters = _Counters()

    # --- state (the pipeline's: PipelineState) -------------------------------------------------

    @property
    def sequences(self) -> dict[str, tuple[int, str]]:
        return dict(self.pipeline.sequences)

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
            p = self.pipeline
            p.model, p.version = ckpt.model.copy(), ckpt.version
            self.strategy.load_state_dict(ckpt.strategy_state)
            self.serving.load_state_dict(ckpt.serving_state)
            p.sequences = dict(ckpt.sequences)
            start = ckpt.log_position
        records, _end, tail = read_from(self.log_dir, start)
        for raw in records:
            self._replay(raw)
        self._log = UpdateLog(self.log_dir)
        report = RecoveryReport(
            ckpt is not None, ckpt.version if ckpt else 0, len(records), self.version, tail
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
        if version != self.version:
            raise DataError(
                f"{self.log_dir}: record for version {version} met state at {self.version}"
            )
        p = self.pipeline
        if kind == "t":
            p.flush()
        elif kind == "u":
            try:
                # the update is the record's body (FLR1 records carried it inside the meta)
                msg = decode_any_update(rec.get("payload", record.body))
                update = decode_admitted(msg, self.manifest, float(rec["scale"]))
            except (ProtocolError, KeyError) as exc:
                raise DataError(f"{self.log_dir}: logged update no longer decodes: {exc}") from exc
            p.apply(update)
            p.sequences[msg.device_id] = (msg.seq, str(rec["digest"]))
            self._note_applied(msg.device_id, msg.seq)
        elif kind == "c":  # a secure-aggregation cohort's unmasked mean (server/secagg.py)
            p.apply_cohort(rec)
        else:
            raise DataError(f"{self.log_dir}: unknown log record kind {kind!r}")

    # --- write path -------------------------------------------------------------------------

    def submit(self, device_id: str, payload: bytes, *, now: float | None = None) -> Outcome:
        """Admit, log (not yet synced) and apply one update. Ack only after `commit()`.

        `now` (monotonic seconds) enables the per-device rate limit; None skips it (replay
        tools and benchmarks that feed the core directly)."""
        self._require_log()
        received = self.pipeline.receive(device_id, payload, now=now, log=self._log_update)
        if received.admitted is None:  # refused, or a redelivery acked again
            return Outcome(device_id, received.ack)
        msg = received.admitted.message
        self._note_applied(msg.device_id, msg.seq)
        fault_point("core.applied")
        return Outcome(
            device_id,
            received.ack,
            staleness=received.admitted.staleness,
            stepped=received.stepped,
            schema_1=is_legacy_update(payload),
        )

    def _log_update(self, admitted: Admitted, payload: bytes) -> None:
        """The pipeline's log stage: the record before the update changes anything."""
        msg = admitted.message
        record = {
            "k": "u",
            "v": self.version,
            "dev": msg.device_id,
            "seq": msg.seq,
            "scale": admitted.scale,
            "digest": admitted.digest,
        }
        meta = msgpack.packb(record, use_bin_type=True)
        self._require_log().append(meta, payload)  # the update as the body
        self._counters.bytes_since_checkpoint += len(meta) + len(payload)

    def submit_cohort(self, record: dict[str, object]) -> bool:
        """Log and apply one cohort's unmasked mean as one buffer (`cohort_record`); commit."""
        log = self._require_log()
        record = {**record, "v": self.version}
        meta = msgpack.packb(record, use_bin_type=True)
        log.append(meta)
        self._counters.bytes_since_checkpoint += len(meta)
        stepped = self.pipeline.apply_cohort(record)  # the serving average follows it too
        self._counters.since_checkpoint += 1
        return stepped

    def tick(self, now: float) -> bool:
        """Let time-driven strategies step (FedAvg deadline); a step is logged. Commit after."""
        log = self._require_log()
        # Deterministic, and a step is logged before anything can observe it (replayed via flush).
        return self.pipeline.tick(
            now,
            lambda version: log.append(msgpack.packb({"k": "t", "v": version}, use_bin_type=True)),
        )

    def commit(self) -> None:
        """Make everything submitted durable. After this, Acks may go out."""
        self.commit_start().wait()

    def commit_start(self) -> Commit:
        """Start making everything submitted so far durable, without waiting: the caller may
        submit the next batch while the disk works, and sends this batch's Acks (and publishes
        `Commit.model`, the state they built) only after `Commit.wait()` returns."""
        log = self._require_log()
        return Commit(self.version, self.model, self.serving_model, log.sync_start())

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
                version=self.version,
                model=self.model,
                strategy_name=self.strategy.name,
                strategy_state=self.strategy.state_dict(),
                sequences=self.sequences,
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

    def _note_applied(self, device_id: str, seq: int) -> None:
        self._counters.applied += 1
        self._counters.since_checkpoint += 1
        del device_id, seq

    def _require_log(self) -> UpdateLog:
        if self._log is None:
            raise FleetlearnError("ServerCore: call recover() before submitting updates")
        return self._log
