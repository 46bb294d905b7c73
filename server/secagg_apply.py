"""A secure-aggregation cohort is one FedBuff buffer: its unmasked mean enters the strategy once.

    record = {"k": "c", "v": version, "base": base_version, "n": num_samples, "m": members,
              "cohort": id, "mean": (n,) float32 bytes}
    strategy.apply(AdmittedUpdate(delta=mean, base_version=base)) then flush if it did not step

so the strategy's staleness weight s(version - base) multiplies the whole cohort's mean once, and
a buffered strategy steps at once (the cohort *is* its buffer). The record is what the update log
stores, so recovery replays the same step bit for bit without any masks or keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from protocol.errors import DataError
from protocol.manifest import Manifest
from server.admitted import AdmittedUpdate
from server.strategies.base import StepResult, Strategy

__all__ = ["apply_cohort", "cohort_record"]


def cohort_record(
    cohort_id: bytes, base_version: int, mean: np.ndarray, num_samples: int, members: int
) -> dict[str, object]:
    flat = np.ascontiguousarray(mean, dtype="<f4")  # (n,) float32
    return {"k": "c", "base": base_version, "n": num_samples, "m": members,
            "cohort": cohort_id, "mean": flat.tobytes()}  # fmt: skip


def apply_cohort(
    strategy: Strategy,
    model: np.ndarray,
    version: int,
    record: Mapping[str, object],
    manifest: Manifest,
) -> StepResult:
    try:
        base, samples, data = record["base"], record["n"], record["mean"]
        cohort = record["cohort"]
        assert isinstance(base, int) and isinstance(samples, int) and isinstance(data, bytes)
        assert isinstance(cohort, bytes)
    except (KeyError, AssertionError) as exc:
        raise DataError(f"cohort record malformed: {exc!r}") from exc
    mean = np.frombuffer(data, dtype="<f4").astype(np.float32)  # (n,) float32
    manifest.check_flat(mean)
    members = record.get("m", 1)
    if not isinstance(members, int) or members < 1:
        raise DataError(f"cohort record: members must be an integer >= 1, got {members!r}")
    label = f"cohort-{cohort.hex()[:12]}"
    update = AdmittedUpdate(label, 0, base, max(1, samples), mean, members)
    result = strategy.apply(model, version, update)
    return result if result.stepped else strategy.flush(model, version)
