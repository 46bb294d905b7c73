"""The agent's one TOML config file -> frozen dataclasses, validated on load.

Every error names the key (dotted, e.g. ``policy.min_battery_percent``) and the problem; unknown
keys are errors too, because a misspelt limit silently falling back to its default is exactly the
kind of mistake nobody notices on a device in a cupboard. Relative paths are resolved against the
config file's folder. See ``agent/agent.example.toml`` for every key with a comment.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.backend import provider_name
from agent.secagg import SecAggAgentSettings
from protocol.errors import ConfigError, FleetlearnError
from protocol.topics import validate_device_id, validate_fleet, validate_model_id

__all__ = [
    "AgentConfig",
    "BrokerSettings",
    "ConditionsSettings",
    "PartialWork",
    "PersonalSettings",
    "PolicyLimits",
    "TrainingSettings",
    "load_config",
    "parse_config",
]


class PartialWork(StrEnum):
    """What happens to a round stopped early because the device became ineligible."""

    SEND = "send"  # send it if at least `partial_min_fraction` of the planned steps ran
    DISCARD = "discard"  # always throw it away and retrain the same base later


@dataclass(frozen=True)
class BrokerSettings:
    url: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None
    keepalive: int = 30  # seconds; the broker declares us dead (last will) after 1.5x this
    protocol: str = "auto"  # "auto" | "v5" | "v311"
    max_packet_size: int | None = None  # the broker's limit; oversize updates are never sent


@dataclass(frozen=True)
class PolicyLimits:
    """Limits of the eligibility policy (agent/policy.py). Margins give hysteresis."""

    min_battery_percent: float = 50.0
    battery_margin: float = 5.0  # must climb to min + margin to become eligible again
    require_charging: bool = True
    no_battery_counts_as_charging: bool = True  # mains-powered hubs and gateways
    max_cpu_percent: float = 30.0  # other processes' CPU use, averaged over a window
    cpu_margin: float = 10.0
    max_temperature_c: float = 70.0
    temperature_margin: float = 5.0  # must cool below max - margin to become eligible again
    allow_metered: bool = False


@dataclass(frozen=True)
class ConditionsSettings:
    cpu_window_s: float = 5.0  # CPU use is averaged over this window
    metered: bool = False  # static flag, for a device that knows its link is metered
    metered_file: Path | None = None  # if set: metered while this file exists (NetworkManager hook)
    power_supply_dir: Path = Path("/sys/class/power_supply")
    thermal_dir: Path = Path("/sys/class/thermal")


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int | None = 1
    steps: int | None = None  # if set, overrides epochs
    batch_size: int = 32
    fedprox_mu: float = 0.0  # default; an offer's non-zero fedprox_mu overrides it
    partial_work: PartialWork = PartialWork.SEND
    partial_min_fraction: float = 0.25
    min_retrain_interval_s: float = 3600.0  # retrain the same global version at most this often
    codec: Mapping[str, Any] | None = None  # parsed codec spec; None = float32
    codec_text: str = "float32"
    check_interval_s: float = 5.0  # how often the idle loop re-reads device conditions
    ack_timeout_s: float = 60.0  # re-send a pending update if no Ack arrived within this
    status_interval_s: float = 300.0  # re-publish the retained status at least this often
    threads: int = 1  # ORT intra-op threads; 1 keeps a background job off the other cores


@dataclass(frozen=True)
class PersonalSettings:
    enabled: bool = False  # keep a locally fine-tuned personal model next to the global one


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    fleet: str
    model_id: str
    data_dir: Path
    artifacts_dir: Path
    state_dir: Path
    fleet_public_key: Path
    broker: BrokerSettings
    policy: PolicyLimits
    conditions: ConditionsSettings
    training: TrainingSettings
    personal: PersonalSettings
    trainer_backend: str = "onnxruntime"
    # ORT execution providers, most preferred first ([trainer] providers); CPU is the last resort
    trainer_providers: tuple[str, ...] = ("cpu",)
    secure_aggregation: SecAggAgentSettings = field(default_factory=SecAggAgentSettings)


class _Table:
    """Typed access to one TOML table that remembers which keys were read."""

    def __init__(self, doc: Mapping[str, Any], prefix: str, base: Path) -> None:
        self._doc = doc
        self._prefix = prefix
        self._base = base
        self._used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        self._used.add(key)
        value = self._doc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.name(key)}: expected {what}, got a boolean")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self.name(key)}: expected {what}, got {type(value).__name__}")
        return value

    def required(self, key: str) -> Any:
        if key not in self._doc:
            raise ConfigError(f"{self.name(key)}: required key is missing")
        return self._doc[key]

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if required:
            self.required(key)
        value = self._get(key, (str,), "a string")
        if value is not None and not value:
            raise ConfigError(f"{self.name(key)}: must not be empty")
        return default if value is None else str(value)

    def text_list(self, key: str, default: list[str]) -> list[str]:
        value = self._get(key, (list,), "a list of strings")
        if value is None:
            return list(default)
        if not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.name(key)}: expected a list of non-empty strings")
        return [str(v) for v in value]

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, (bool,), "true or false")
        return default if value is None else bool(value)

    def number(
        self, key: str, default: float, *, lo: float = -math.inf, hi: float = math.inf
    ) -> float:
        value = self._get(key, (int, float), "a number")
        out = default if value is None else float(value)
        if not (math.isfinite(out) and lo <= out <= hi):
            raise ConfigError(f"{self.name(key)}: {out} is outside [{lo}, {hi}]")
        return out

    def integer(self, key: str, default: int | None, *, lo: int = 0) -> int | None:
        value = self._get(key, (int,), "an integer")
        out = default if value is None else int(value)
        if out is not None and out < lo:
            raise ConfigError(f"{self.name(key)}: {out} must be >= {lo}")
        return out

    def path(self, key: str, *, required: bool = False) -> Path | None:
        text = self.text(key, required=required)
        if text is None:
            return None
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self._base / path)

    def table(self, key: str) -> _Table:
        self._used.add(key)
        value = self._doc.get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.name(key)}: expected a table, got {type(value).__name__}")
        return _Table(value, f"{self._prefix}{key}.", self._base)

    def finish(self) -> None:
        unknown = sorted(set(self._doc) - self._used)
        if unknown:
            raise ConfigError(f"{self.name(unknown[0])}: unknown key (typo?)")


def _checked(key: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except FleetlearnError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _broker(t: _Table) -> BrokerSettings:
    url = t.text("url", required=True)
    assert url is not None
    if not url.startswith(("mqtt://", "mqtts://")):
        raise ConfigError(f"{t.name('url')}: must start with mqtt:// or mqtts://, got {url!r}")
    protocol = t.text("protocol", "auto")
    if protocol not in ("auto", "v5", "v311"):
        raise ConfigError(f"{t.name('protocol')}: must be auto, v5 or v311, got {protocol!r}")
    out = BrokerSettings(
        url=url,
        ca_file=t.path("ca_file"),
        cert_file=t.path("cert_file"),
        key_file=t.path("key_file"),
        username=t.text("username"),
        password=t.text("password"),
        keepalive=t.integer("keepalive", 30, lo=5) or 30,
        protocol=protocol or "auto",
        max_packet_size=t.integer("max_packet_size", None, lo=1024),
    )
    if (out.cert_file is None) != (out.key_file is None):
        raise ConfigError(f"{t.name('cert_file')}: cert_file and key_file go together")
    if out.password is not None and out.username is None:
        raise ConfigError(f"{t.name('password')}: a password needs a username")
    t.finish()
    return out


def _policy(t: _Table) -> PolicyLimits:
    out = PolicyLimits(
        min_battery_percent=t.number("min_battery_percent", 50.0, lo=0, hi=100),
        battery_margin=t.number("battery_margin", 5.0, lo=0, hi=50),
        require_charging=t.flag("require_charging", True),
        no_battery_counts_as_charging=t.flag("no_battery_counts_as_charging", True),
        max_cpu_percent=t.number("max_cpu_percent", 30.0, lo=0, hi=100),
        cpu_margin=t.number("cpu_margin", 10.0, lo=0, hi=100),
        max_temperature_c=t.number("max_temperature_c", 70.0, lo=-50, hi=150),
        temperature_margin=t.number("temperature_margin", 5.0, lo=0, hi=50),
        allow_metered=t.flag("allow_metered", False),
    )
    t.finish()
    return out


def _conditions(t: _Table) -> ConditionsSettings:
    defaults = ConditionsSettings()
    out = ConditionsSettings(
        cpu_window_s=t.number("cpu_window_s", 5.0, lo=0.1, hi=3600),
        metered=t.flag("metered", False),
        metered_file=t.path("metered_file"),
        power_supply_dir=t.path("power_supply_dir") or defaults.power_supply_dir,
        thermal_dir=t.path("thermal_dir") or defaults.thermal_dir,
    )
    t.finish()
    return out


def _training(t: _Table) -> TrainingSettings:
    from protocol.codecs import parse_codec_arg  # the codecs engineer's parser owns the syntax

    codec_text = t.text("codec", "float32") or "float32"
    try:
        codec = parse_codec_arg(codec_text)
    except FleetlearnError as exc:
        raise ConfigError(f"{t.name('codec')}: {exc}") from exc
    epochs = t.integer("epochs", 1, lo=1)
    steps = t.integer("steps", None, lo=1)
    partial = t.text("partial_work", "send") or "send"
    try:
        partial_work = PartialWork(partial)
    except ValueError:
        raise ConfigError(
            f"{t.name('partial_work')}: must be 'send' or 'discard', got {partial!r}"
        ) from None
    out = TrainingSettings(
        epochs=None if steps is not None else epochs,
        steps=steps,
        batch_size=t.integer("batch_size", 32, lo=1) or 32,
        fedprox_mu=t.number("fedprox_mu", 0.0, lo=0, hi=1e3),
        partial_work=partial_work,
        partial_min_fraction=t.number("partial_min_fraction", 0.25, lo=0, hi=1),
        min_retrain_interval_s=t.number("min_retrain_interval_s", 3600.0, lo=0),
        codec=codec,
        codec_text=codec_text,
        check_interval_s=t.number("check_interval_s", 5.0, lo=0.01, hi=3600),
        ack_timeout_s=t.number("ack_timeout_s", 60.0, lo=0.1),
        status_interval_s=t.number("status_interval_s", 300.0, lo=1),
        threads=t.integer("threads", 1, lo=0) or 0,
    )
    t.finish()
    return out


def parse_config(doc: Mapping[str, Any], base_dir: Path) -> AgentConfig:
    """Validate a parsed TOML document. Raises ConfigError naming the key."""
    t = _Table(doc, "", base_dir)
    device_id = _checked("device_id", validate_device_id, t.text("device_id", required=True) or "")
    fleet = _checked("fleet", validate_fleet, t.text("fleet", required=True) or "")
    model_id = _checked("model_id", validate_model_id, t.text("model_id", required=True) or "")
    paths = {
        key: t.path(key, required=True)
        for key in ("data_dir", "artifacts_dir", "state_dir", "fleet_public_key")
    }
    backend = t.text("trainer_backend", "onnxruntime") or "onnxruntime"
    if backend not in ("onnxruntime", "fake"):
        raise ConfigError(f"trainer_backend: must be 'onnxruntime' (or 'fake'), got {backend!r}")
    trainer_t = t.table("trainer")
    providers = trainer_t.text_list("providers", ["cpu"])
    trainer_t.finish()
    if not providers:
        raise ConfigError('trainer.providers: list at least one provider, e.g. ["cpu"]')
    for p in providers:
        provider_name(p)  # ConfigError names a misspelt provider at load, not at start-up
    personal_t = t.table("personal")
    personal = PersonalSettings(enabled=personal_t.flag("enabled", False))
    personal_t.finish()
    sa_t = t.table("secure_aggregation")
    secure = SecAggAgentSettings(
        enabled=sa_t.flag("enabled", False),
        cohort_timeout_s=sa_t.number("cohort_timeout_s", 300.0, lo=1.0),
        min_size=sa_t.integer("min_size", 3, lo=3) or 3,
        min_threshold_fraction=sa_t.number("min_threshold_fraction", 2 / 3, lo=0.5, hi=1.0),
        # where `fleetlearn broker enrol-device` puts them: beside agent.toml
        identity_key=sa_t.path("identity_key") or base_dir / "identity.key",
        identity_cert=sa_t.path("identity_cert") or base_dir / "identity.cert",
        enrolment_key=sa_t.path("enrolment_key") or base_dir / "enrolment.pub",
    )
    sa_t.finish()
    cfg = AgentConfig(
        device_id=device_id,
        fleet=fleet,
        model_id=model_id,
        data_dir=_some(paths["data_dir"]),
        artifacts_dir=_some(paths["artifacts_dir"]),
        state_dir=_some(paths["state_dir"]),
        fleet_public_key=_some(paths["fleet_public_key"]),
        broker=_broker(t.table("broker")),
        policy=_policy(t.table("policy")),
        conditions=_conditions(t.table("conditions")),
        training=_training(t.table("training")),
        personal=personal,
        trainer_backend=backend,
        trainer_providers=tuple(providers),
        secure_aggregation=secure,
    )
    t.finish()
    return cfg


def _some(path: Path | None) -> Path:
    assert path is not None  # required=True already raised
    return path


def load_config(path: Path) -> AgentConfig:
    """Read and validate the agent's TOML file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(doc, path.resolve().parent)
