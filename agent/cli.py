"""`fleetlearn agent --config agent.toml`: run the device agent until SIGTERM/SIGINT.

Options for tests and benchmarks: `--max-rounds N` exits once N updates were acknowledged;
`--report FILE` writes a JSON summary (backend, start-up seconds, round seconds, bytes published).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.backend import choose_backend
from agent.conditions import ConditionsSource, LinuxConditions
from agent.config import AgentConfig, load_config
from agent.personal import PersonalModels
from agent.runtime import AgentRuntime, offline_status
from agent.trainer import Trainer
from protocol.errors import ConfigError, DataError
from protocol.manifest import Manifest
from protocol.signing import load_public_key
from protocol.topics import status_topic

__all__ = ["add_arguments", "build_agent", "run"]

_log = logging.getLogger("agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the agent's TOML file")
    parser.add_argument(
        "--max-rounds", type=int, default=None, help="exit after N acknowledged updates"
    )
    parser.add_argument("--report", type=Path, default=None, help="write a JSON summary here")


@dataclass
class Agent:
    runtime: AgentRuntime
    link: Any  # transport.MqttLink
    backend: str


def _read_key(path: Path) -> Any:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"fleet_public_key: cannot read {path}: {exc.strerror}") from exc
    return load_public_key(pem)


def build_agent(
    config: AgentConfig,
    *,
    trainer: Trainer | None = None,
    conditions: ConditionsSource | None = None,
) -> Agent:
    """Everything `fleetlearn agent` runs, wired; `trainer`/`conditions` may be injected
    (the benchmark passes its torch baseline; the agent itself never imports torch)."""
    from agent.artifacts import load_artifacts
    from agent.data import load_device_data
    from transport import BrokerConfig, MqttLink

    artifacts = load_artifacts(config.artifacts_dir)
    manifest: Manifest = artifacts.manifest
    if manifest.model_id != config.model_id:
        raise ConfigError(
            f"model_id: config says {config.model_id[:16]}..., artifacts in "
            f"{config.artifacts_dir} are {manifest.model_id[:16]}..."
        )
    data = load_device_data(config.data_dir, manifest, config.artifacts_dir)
    key = _read_key(config.fleet_public_key)
    identity = None
    if config.secure_aggregation.enabled:
        from agent.secagg_identity import load_identity

        identity = load_identity(config.secure_aggregation, config.fleet, config.device_id)
    if trainer is None:
        from agent.trainer import load_trainer

        choice = choose_backend(config.trainer_backend, config.trainer_providers)
        _log.info("%s", choice.why)
        trainer = load_trainer(
            config.artifacts_dir,
            choice.name,
            threads=config.training.threads,
            providers=choice.providers,
        )
    else:
        _log.info("trainer backend '%s' (injected by the caller)", trainer.name)
    b = config.broker
    link = MqttLink(
        BrokerConfig(
            url=b.url,
            client_id=config.device_id,
            username=b.username,
            password=b.password,
            ca_file=b.ca_file,
            cert_file=b.cert_file,
            key_file=b.key_file,
            keepalive=b.keepalive,
            protocol=b.protocol,
            max_packet_size=b.max_packet_size,
        ),
        will=(status_topic(config.fleet, config.device_id), offline_status(config.device_id), True),
    )
    models = PersonalModels(config.state_dir / "models", artifacts.path("inference.onnx"), manifest)
    runtime = AgentRuntime(
        config,
        manifest,
        link=link,
        trainer=trainer,
        train_x=data.train_x,
        train_y=data.train_y,
        test_x=data.test_x,
        test_y=data.test_y,
        conditions=conditions or LinuxConditions(config.conditions),
        fleet_key=key,
        models=models,
        identity=identity,
    )
    return Agent(runtime, link, trainer.name)


def peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM, not ru_maxrss: ru_maxrss survives exec, so a
    child forked from a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(agent: Agent, max_rounds: int | None, started: float) -> dict[str, Any]:
    """Run until a signal (or `max_rounds` acks); returns the summary for --report."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rt = agent.runtime
    agent.link.start()
    if not agent.link.wait_connected(30.0):  # start-up time counts until the link is up
        _log.warning("broker not reachable yet; will keep trying (store and forward)")
    ready = time.time()
    try:
        rt.run(lambda: stop.is_set() or (max_rounds is not None and rt.acked >= max_rounds))
    finally:
        agent.link.stop()
    return {
        "backend": agent.backend,
        "startup_s": ready - started,
        "torch_loaded": "torch" in sys.modules,  # must stay False for the agent (FACTS.md)
        "round_s": rt.round_seconds,
        "rounds": rt.acked,
        "bytes_published": rt.bytes_published,
        "model_version": rt.offer.version if rt.offer is not None else None,
        "deltas_applied": rt.feed.deltas_applied,  # new versions taken as deltas, not whole
        "deltas_refused": rt.feed.deltas_refused,
        "peak_rss_mb": peak_rss_mb(),
    }


def _process_start() -> float:
    import psutil

    return float(psutil.Process().create_time())  # wall clock: interpreter start counts too


def run(args: argparse.Namespace) -> int:
    started = _process_start()
    config = load_config(args.config)
    try:
        agent = build_agent(config)
    except DataError as exc:
        raise ConfigError(f"cannot start: {exc}") from exc
    summary = serve(agent, args.max_rounds, started)
    if args.report is not None:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    return 0
