"""report.json: exact keys, hand-computed derived values, and a validator that can say no."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fleet.demo.report import (
    REQUIRED_KEYS,
    DeviceParticipation,
    EvalPoint,
    RunReport,
    validate_report,
    write_report,
)
from protocol.errors import DataError


def make_report(**changes: Any) -> RunReport:
    base: dict[str, Any] = dict(
        strategy="fedasync",
        codec="int8",
        model="mlp",
        num_params=1000,
        devices_count=2,
        target_accuracy=0.9,
        duration_s=42.0,
        stopped_by="target",
        timeline=(
            EvalPoint(1.0, 1, 0.30, 0.25, 2_000, downlink_bytes=5_000),
            EvalPoint(2.5, 3, 0.92, 0.90, 6_000, downlink_bytes=12_000),
            EvalPoint(4.0, 5, 0.91, 0.89, 9_000, downlink_bytes=20_000),
        ),
        updates_accepted=5,
        updates_rejected={"stale": 2},
        uplink_bytes=9_500,
        downlink_bytes=20_000,
        update_payload_bytes=7 * 1_100,
        updates_sent=7,
        devices=(
            DeviceParticipation("a", 1.0, 4, 3, 1, 5_000, 10_000, 0),
            DeviceParticipation("b", 7.5, 3, 2, 1, 4_500, 10_000, 1),
        ),
    )
    base.update(changes)
    return RunReport(**base)


def test_keys_and_hand_computed_values() -> None:
    doc = make_report().to_json()
    assert set(REQUIRED_KEYS) <= set(doc)
    assert doc["final_accuracy"] == 0.91
    assert doc["best_accuracy"] == 0.92
    assert doc["macro_f1"] == 0.89
    assert doc["time_to_target_s"] == 2.5  # first evaluation at or above 0.9
    assert (doc["uplink_bytes_to_target"], doc["downlink_bytes_to_target"]) == (6_000, 12_000)
    assert doc["versions"] == 5
    assert doc["bytes_per_update"] == 1_100  # 7700 bytes / 7 updates
    assert doc["float32_bytes_per_update"] == 4_000  # 1000 params * 4 bytes
    assert doc["updates_rejected"] == {"stale": 2}
    assert [d["device_id"] for d in doc["devices"]] == ["a", "b"]
    validate_report(doc)


def test_never_reaching_the_target_gives_null() -> None:
    doc = make_report(target_accuracy=0.95).to_json()
    assert doc["time_to_target_s"] is None
    assert doc["uplink_bytes_to_target"] is None and doc["downlink_bytes_to_target"] is None
    validate_report(doc)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("uplink_bytes"), "missing key 'uplink_bytes'"),
        (lambda d: d.update(final_accuracy=1.5), "final_accuracy"),
        (lambda d: d.update(best_accuracy=0.1), "best_accuracy below"),
        (lambda d: d.update(versions=-1), "versions"),
        (lambda d: d.update(versions=True), "versions"),
        (lambda d: d.update(updates_rejected={"stale": -1}), "updates_rejected"),
        (lambda d: d.update(devices=[]), "devices"),
        (lambda d: d["devices"][0].pop("updates_sent"), "devices[0]"),
        (lambda d: d.update(time_to_target_s="soon"), "time_to_target_s"),
        (lambda d: d.update(compare={"fedavg": {"versions": 1}}), "compare.fedavg"),
    ],
)
def test_validator_refuses(mutate: Any, needle: str) -> None:
    doc = copy.deepcopy(make_report().to_json())
    mutate(doc)
    with pytest.raises(DataError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        validate_report(doc)


def test_write_is_valid_json_with_compare(tmp_path: Path) -> None:
    report = make_report(compare={"fedavg": make_report(strategy="fedavg")})
    path = write_report(report, tmp_path)
    doc = json.loads(path.read_text())
    validate_report(doc)
    assert doc["compare"]["fedavg"]["strategy"] == "fedavg"
    assert not list(tmp_path.glob("*.tmp"))
