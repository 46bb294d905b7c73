"""Config loading: the example file loads; mistakes are named by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import PartialWork, load_config, parse_config
from protocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def base() -> dict[str, Any]:
    return {
        "device_id": "dev-1",
        "fleet": "home",
        "model_id": "abc123",
        "data_dir": "data",
        "artifacts_dir": "/abs/artifacts",
        "state_dir": "state",
        "fleet_public_key": "keys/fleet.pub",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    }


def test_example_file_loads() -> None:
    cfg = load_config(ROOT / "agent" / "agent.example.toml")
    assert cfg.device_id == "kitchen-hub-01" and cfg.training.batch_size == 32
    assert cfg.policy.min_battery_percent == 50 and cfg.personal.enabled
    assert cfg.training.codec is not None and cfg.training.codec["name"] == "int8"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = parse_config(base(), tmp_path)
    assert cfg.data_dir == tmp_path / "data" and cfg.artifacts_dir == Path("/abs/artifacts")
    assert cfg.fleet_public_key == tmp_path / "keys/fleet.pub"
    assert cfg.training.epochs == 1 and cfg.training.steps is None
    assert cfg.training.partial_work is PartialWork.SEND
    assert cfg.policy.no_battery_counts_as_charging
    assert cfg.trainer_providers == ("cpu",)


def test_trainer_providers_in_order(tmp_path: Path) -> None:
    cfg = parse_config(base() | {"trainer": {"providers": ["cuda", "cpu"]}}, tmp_path)
    assert cfg.trainer_providers == ("cuda", "cpu")


def test_steps_override_epochs(tmp_path: Path) -> None:
    cfg = parse_config(base() | {"training": {"steps": 50, "epochs": 3}}, tmp_path)
    assert (cfg.training.steps, cfg.training.epochs) == (50, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device_id": None}, "device_id: required key is missing"),
        ({"device_id": "bad/id"}, "device_id: "),
        ({"fleet": 3}, "fleet: expected a string, got int"),
        ({"broker": {"url": "http://x"}}, "broker.url: must start with mqtt:// or mqtts://"),
        ({"broker": {}}, "broker.url: required key is missing"),
        (
            {"broker": {"url": "mqtt://h:1", "password": "p"}},
            "broker.password: a password needs a username",
        ),
        (
            {"broker": {"url": "mqtt://h:1", "cert_file": "c"}},
            "broker.cert_file: cert_file and key_file go together",
        ),
        (
            {"policy": {"min_battery_percent": 150}},
            "policy.min_battery_percent: 150.0 is outside [0, 100]",
        ),
        (
            {"policy": {"require_charging": "yes"}},
            "policy.require_charging: expected true or false, got str",
        ),
        ({"policy": {"max_cpu": 10}}, "policy.max_cpu: unknown key (typo?)"),
        ({"training": {"batch_size": 0}}, "training.batch_size: 0 must be >= 1"),
        ({"training": {"epochs": True}}, "training.epochs: expected an integer, got a boolean"),
        (
            {"training": {"partial_work": "maybe"}},
            "training.partial_work: must be 'send' or 'discard'",
        ),
        ({"training": {"codec": "nope"}}, "training.codec: "),
        ({"trainer_backend": "torch"}, "trainer_backend: must be 'onnxruntime'"),
        ({"trainer": {"providers": ["gpu"]}}, "trainer.providers: 'gpu' is not an execution"),
        ({"trainer": {"providers": "cpu"}}, "trainer.providers: expected a list of strings"),
        ({"trainer": {"providers": []}}, "trainer.providers: list at least one provider"),
        ({"personal": {"enabled": 1}}, "personal.enabled: expected true or false, got int"),
        ({"extra": 1}, "extra: unknown key (typo?)"),
    ],
)
def test_errors_name_key_and_problem(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    doc = base()
    for k, v in change.items():
        if v is None:
            del doc[k]
        else:
            doc[k] = v
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    assert str(info.value).startswith(message)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "a.toml"
    bad.write_text("device_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_secure_aggregation_table(tmp_path: Path) -> None:
    assert not parse_config(base(), tmp_path).secure_aggregation.enabled
    doc = base() | {"secure_aggregation": {"enabled": True, "cohort_timeout_s": 45}}
    sa = parse_config(doc, tmp_path).secure_aggregation
    assert sa.enabled and sa.cohort_timeout_s == 45.0
    assert sa.min_size == 3 and sa.min_threshold_fraction == pytest.approx(2 / 3)
    doc["secure_aggregation"] |= {"min_size": 5, "min_threshold_fraction": 0.75}
    sa = parse_config(doc, tmp_path).secure_aggregation
    assert sa.min_size == 5 and sa.min_threshold_fraction == 0.75
    for bad, key in (
        ({"min_size": 2}, "secure_aggregation.min_size"),
        ({"min_threshold_fraction": 0.4}, "secure_aggregation.min_threshold_fraction"),
        ({"enabled": "yes"}, "secure_aggregation.enabled"),
        ({"cohort_timeout_s": 0}, "secure_aggregation.cohort_timeout_s"),
        ({"cohort_size": 5}, "secure_aggregation.cohort_size"),
    ):
        with pytest.raises(ConfigError, match=key):
            parse_config(base() | {"secure_aggregation": bad}, tmp_path)
