"""`server.toml`: one TOML file (stdlib tomllib), validated on load; errors name the key.

    fleet = "demo"                      # topic namespace
    artifacts = "artifacts/mlp"         # folder from `fleetlearn export` (manifest, weights, onnx)
    signing_key = "keys/fleet.key"      # Ed25519 private key (PEM) that signs ModelOffers
    state_dir = "state/server"          # update log + checkpoints
    test_data = "data/test.npz"         # optional: x, y for evaluation after each publish

    [broker]   url = "mqtt://127.0.0.1:1883"  client_id = "fleetlearn-server"
               username = ...  password = ...  password_file = ...  ca_file/cert_file/key_file
               protocol = "auto" | "v5" | "v311"   shared_group = ""   (v5 shared subscription)
    [strategy] name = "fedasync" | "fedbuff" | "fedavg" | "fedprox", plus its parameters
    [strategy.staleness]  function = "constant" | "polynomial" | "hinge", a = ..., b = ...
    [strategy.robust]     enabled, aggregator = "mean" | "trimmed_mean" | "median",
                          trim_fraction, norm_multiplier (0 = off), norm_window, norm_warmup,
                          norm_action = "clip" | "reject", one_per_device   (absent: the default
                          defence, server/robust/defence.py RobustConfig)
    [admission]  max_message_bytes, max_samples, max_norm, norm_action = "clip"|"reject",
                 max_staleness (-1 = unbounded), rate_per_minute (0 = unlimited), rate_burst,
                 accept_schema_1 = true (the deprecated update header; false refuses it)
    [publish]    every_versions = 1, every_seconds = 5.0, min_interval_seconds = 1.0,
                 codec = "float32" | "float16",
                 delta_codec = "int4" (a codec name or table; "none" = whole offers only)
    [serving]    decay = 0.95 (average of recent versions; 0 = serve the iterate), publish = true
    [durability] fsync = "always" | "batch", batch_max = 64, checkpoint_every = 200,
                 checkpoint_log_ratio = 4.0 (0 = records alone decide)
    [metrics]    address = "127.0.0.1", port = 9100 (0 = a free port; omit the table = off)
    [secure_aggregation]  enabled = false, cohort_size, ... (server/secagg.py)
    [privacy]    epsilon, delta, noise_multiplier | planned_flushes, clip_norm, adaptive_clip, ...
                 (server/privacy/config.py; omit the table = no differential privacy)

Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from protocol import codecs
from protocol.errors import ConfigError, ProtocolError
from protocol.messages import DEFAULT_MAX_MESSAGE_BYTES
from protocol.topics import validate_fleet
from server.admission import AdmissionLimits, NormAction
from server.privacy import PrivacyConfig, parse_privacy
from server.secagg import SecAggSettings, parse_secagg_settings
from server.secagg_privacy import secagg_under_privacy
from transport import BrokerConfig

__all__ = [
    "DurabilityConfig",
    "FsyncMode",
    "MetricsConfig",
    "PublishConfig",
    "ServerConfig",
    "ServingConfig",
    "load_config",
    "parse_config",
]


class FsyncMode(StrEnum):
    ALWAYS = "always"  # one fsync per update before its Ack
    BATCH = "batch"  # group commit: one fsync for the updates queued together, then their Acks


@dataclass(frozen=True, slots=True)
class PublishConfig:
    every_versions: int = 1  # publish after this many new versions...
    every_seconds: float = 5.0  # ...or once this long has passed with any new version
    codec: str = "float32"  # weights on the wire: float32 or float16 (half the bytes)
    # ...but never sooner than this after the last offer: each offer is the whole model, sent to
    # every device (issue 15: one offer per tiny update). 0 = no minimum.
    min_interval_seconds: float = 1.0
    # Each new version also goes as a signed step from the last published one, in this codec
    # (protocol/downlink.py), to devices holding that one; None = whole offers only. int4: the
    # fleet benchmark's downlink to the target 6.1-6.4x below whole float32 offers at the same
    # time to target; int8 3.6-3.7x (benchmarks/fleet_downlink.py).
    delta_codec: dict[str, Any] | None = field(default_factory=lambda: {"name": "int4"})


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """The serving model (server/serving.py): evaluated, checkpointed, published for inference."""

    # EMA/Polyak horizon ~ 1 / (1 - decay) versions. 0.95 is the measured default
    # (benchmarks/parity.py): it cuts the version-to-version swing on small skewed fleets.
    decay: float = 0.95
    publish: bool = True  # retained offer on fl/<fleet>/model/<id>/serving


@dataclass(frozen=True, slots=True)
class DurabilityConfig:
    fsync: FsyncMode = FsyncMode.BATCH  # group commit: Acks still wait for the fsync (exactly-once)
    batch_max: int = 64  # most updates in one group commit
    checkpoint_every: int = 200  # log records between checkpoints (bounds recovery replay)
    # ...and the log since the last checkpoint must also hold this many times that checkpoint's
    # bytes (or 10 x checkpoint_every records): replay costs what the log holds, a checkpoint
    # what the state holds. 200 top-1% updates of a 1M model are 4 MB of log for 12+ MB of
    # checkpoint; checkpointing that often cost more than the updates (benchmarks/server.py)
    checkpoint_log_ratio: float = 4.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    address: str = "127.0.0.1"
    port: int = 9100


@dataclass(frozen=True)
class ServerConfig:
    fleet: str
    artifacts: Path
    signing_key: Path
    state_dir: Path
    broker: BrokerConfig
    strategy: str = "fedbuff"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    staleness: dict[str, Any] = field(default_factory=dict)
    robust: dict[str, Any] = field(default_factory=dict)  # {} = the default defence
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    publish: PublishConfig = field(default_factory=PublishConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    durability: DurabilityConfig = field(default_factory=DurabilityConfig)
    metrics: MetricsConfig | None = None
    test_data: Path | None = None
    shared_group: str = ""  # "" = plain subscription; else $share/<group>/... (MQTT v5)
    secure_aggregation: SecAggSettings = field(default_factory=SecAggSettings)
    privacy: PrivacyConfig | None = None  # user-level differential privacy; None = off


def _table(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table")
    return value


def _unknown(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise ConfigError(f"{where}{extra[0]}: unknown key (allowed: {sorted(allowed)})")


def _str(doc: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}{key}: required, a non-empty string")
    return value


def _int(doc: Mapping[str, Any], key: str, where: str, default: int, low: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}{key}: must be an integer >= {low}, got {value!r}")
    return value


def _float(doc: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}{key}: must be a finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{where}{key}: must be > 0, got {value!r}")
    return float(value)


def _ratio(doc: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{where}{key}: must be a finite number >= 0, got {value!r}")
    return float(value)


def _seconds(doc: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{where}{key}: must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _path(base: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: required, a path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _broker(doc: dict[str, Any], base: Path) -> tuple[BrokerConfig, str]:
    w = "broker."
    keys = {
        "url",
        "client_id",
        "username",
        "password",
        "password_file",
        "ca_file",
        "cert_file",
        "key_file",
        "protocol",
        "keepalive",
        "max_packet_size",
        "shared_group",
    }
    _unknown(doc, keys, w)
    password = doc.get("password")
    if "password_file" in doc:
        if password is not None:
            raise ConfigError("broker.password_file: set either password or password_file")
        pw_path = _path(base, doc["password_file"], "broker.password_file")
        try:
            password = pw_path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"broker.password_file: cannot read {pw_path}: {exc}") from exc
    files = {
        k: _path(base, doc[k], w + k) if k in doc else None
        for k in ("ca_file", "cert_file", "key_file")
    }
    for key in ("username", "protocol"):
        if key in doc and not isinstance(doc[key], str):
            raise ConfigError(f"broker.{key}: must be a string")
    max_packet = doc.get("max_packet_size")
    config = BrokerConfig(
        url=_str(doc, "url", w, "mqtt://127.0.0.1:1883"),
        client_id=_str(doc, "client_id", w, "fleetlearn-server"),
        username=doc.get("username"),
        password=password,
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        keepalive=_int(doc, "keepalive", w, 30, 5),
        max_packet_size=None if max_packet is None else _int(doc, "max_packet_size", w, 0, 1024),
        protocol=doc.get("protocol", "auto"),
    )
    group = doc.get("shared_group", "")
    if group:
        validate_fleet(group)
    return config, str(group)


def _admission(doc: dict[str, Any]) -> AdmissionLimits:
    w = "admission."
    _unknown(
        doc,
        {
            "max_message_bytes",
            "max_samples",
            "max_norm",
            "norm_action",
            "max_staleness",
            "rate_per_minute",
            "rate_burst",
            "accept_schema_1",
        },
        w,
    )
    legacy = doc.get("accept_schema_1", True)
    if not isinstance(legacy, bool):
        raise ConfigError(f"admission.accept_schema_1: true or false, got {legacy!r}")
    action = doc.get("norm_action", "clip")
    try:
        norm_action = NormAction(action)
    except ValueError:
        raise ConfigError(f"admission.norm_action: 'clip' or 'reject', got {action!r}") from None
    staleness = doc.get("max_staleness", 50)
    if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < -1:
        raise ConfigError(
            f"admission.max_staleness: integer >= 0 (or -1 = unbounded), got {staleness!r}"
        )
    return AdmissionLimits(
        max_message_bytes=_int(doc, "max_message_bytes", w, DEFAULT_MAX_MESSAGE_BYTES, 1024),
        max_samples=_int(doc, "max_samples", w, 1_000_000, 1),
        max_norm=_float(doc, "max_norm", w, 1.0) if "max_norm" in doc else None,
        norm_action=norm_action,
        max_staleness=None if staleness == -1 else staleness,
        rate_per_minute=_rate(doc),
        rate_burst=_int(doc, "rate_burst", w, 30, 1),
        accept_schema_1=legacy,
    )


def _rate(doc: dict[str, Any]) -> float | None:
    """admission.rate_per_minute: updates per device per minute; 0 = unlimited."""
    value = doc.get("rate_per_minute", 120.0)
    if value == 0 and not isinstance(value, bool):
        return None
    return _float(doc, "rate_per_minute", "admission.", 120.0)


def _delta_codec(raw: object) -> dict[str, Any] | None:
    """`publish.delta_codec`: a codec name ("int8"), a codec table, or "none" (whole offers)."""
    if raw == "none":
        return None
    spec = {"name": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict):
        raise ConfigError(f"publish.delta_codec: a codec name, a table or 'none', got {raw!r}")
    try:
        return codecs.validate_spec(spec)
    except ProtocolError as exc:
        raise ConfigError(f"publish.delta_codec: {exc.detail}") from exc


def _serving(doc: dict[str, Any]) -> ServingConfig:
    _unknown(doc, {"decay", "publish"}, "serving.")
    decay = doc.get("decay", ServingConfig().decay)
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay < 1:
        raise ConfigError(f"serving.decay: a number in [0, 1), got {decay!r}")
    publish = doc.get("publish", True)
    if not isinstance(publish, bool):
        raise ConfigError(f"serving.publish: true or false, got {publish!r}")
    return ServingConfig(float(decay), publish)


def parse_config(doc: Mapping[str, Any], base_dir: Path) -> ServerConfig:
    """Validate a parsed TOML document; relative paths resolve against `base_dir`."""
    from server.strategies import make_strategy  # validates strategy params early

    top = {
        "fleet",
        "artifacts",
        "signing_key",
        "state_dir",
        "test_data",
        "broker",
        "strategy",
        "admission",
        "publish",
        "serving",
        "durability",
        "metrics",
        "secure_aggregation",
        "privacy",
    }
    _unknown(doc, top, "")
    fleet = _str(doc, "fleet", "")
    try:
        validate_fleet(fleet)
    except Exception as exc:
        raise ConfigError(f"fleet: {exc}") from exc
    broker, group = _broker(_table(doc, "broker"), base_dir)

    strat = dict(_table(doc, "strategy"))
    name = _str(strat, "name", "strategy.", "fedbuff")
    strat.pop("name", None)
    staleness = strat.pop("staleness", {})
    if not isinstance(staleness, dict):
        raise ConfigError("strategy.staleness: must be a table")
    robust = strat.pop("robust", {})
    if not isinstance(robust, dict):
        raise ConfigError("strategy.robust: must be a table")
    privacy = parse_privacy(_table(doc, "privacy")) if "privacy" in doc else None
    make_strategy(name, strat, staleness or None, robust, privacy=privacy)

    pub = _table(doc, "publish")
    _unknown(
        pub,
        {"every_versions", "every_seconds", "min_interval_seconds", "codec", "delta_codec"},
        "publish.",
    )
    codec = pub.get("codec", "float32")
    if codec not in ("float32", "float16"):
        raise ConfigError(f"publish.codec: 'float32' or 'float16', got {codec!r}")
    publish = PublishConfig(
        _int(pub, "every_versions", "publish.", 1, 1),
        _float(pub, "every_seconds", "publish.", 5.0),
        codec,
        _seconds(pub, "min_interval_seconds", "publish.", 1.0),
        _delta_codec(pub.get("delta_codec", "int4")),
    )
    serving = _serving(_table(doc, "serving"))
    dur = _table(doc, "durability")
    _unknown(dur, {"fsync", "batch_max", "checkpoint_every", "checkpoint_log_ratio"}, "durability.")
    try:
        fsync = FsyncMode(dur.get("fsync", "batch"))
    except ValueError:
        raise ConfigError(
            f"durability.fsync: 'always' or 'batch', got {dur.get('fsync')!r}"
        ) from None
    durability = DurabilityConfig(
        fsync,
        _int(dur, "batch_max", "durability.", 64, 1),
        _int(dur, "checkpoint_every", "durability.", 200, 1),
        _ratio(dur, "checkpoint_log_ratio", "durability.", 4.0),
    )
    metrics = None
    if "metrics" in doc:
        m = _table(doc, "metrics")
        _unknown(m, {"address", "port"}, "metrics.")
        metrics = MetricsConfig(
            _str(m, "address", "metrics.", "127.0.0.1"), _int(m, "port", "metrics.", 9100, 0)
        )
    secure_table = _table(doc, "secure_aggregation")
    secure = secagg_under_privacy(parse_secagg_settings(secure_table), secure_table, privacy)
    if secure.enrolment_key is not None:
        key_path = _path(base_dir, str(secure.enrolment_key), "secure_aggregation.enrolment_key")
        secure = dataclasses.replace(secure, enrolment_key=key_path)
    if secure.enabled and group:
        raise ConfigError(
            "secure_aggregation.enabled: not with broker.shared_group (a cohort's state lives in "
            "one server instance; every instance would run every cohort)"
        )
    return ServerConfig(
        fleet=fleet,
        artifacts=_path(base_dir, doc.get("artifacts"), "artifacts"),
        signing_key=_path(base_dir, doc.get("signing_key"), "signing_key"),
        state_dir=_path(base_dir, doc.get("state_dir"), "state_dir"),
        broker=broker,
        strategy=name,
        strategy_params=strat,
        staleness=staleness,
        robust=robust,
        admission=_admission(_table(doc, "admission")),
        publish=publish,
        serving=serving,
        durability=durability,
        metrics=metrics,
        test_data=_path(base_dir, doc["test_data"], "test_data") if "test_data" in doc else None,
        shared_group=group,
        secure_aggregation=secure,
        privacy=privacy,
    )


def load_config(path: Path) -> ServerConfig:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    try:
        doc = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(doc, path.parent)
