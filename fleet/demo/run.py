"""The whole demo: data, model, keys, one or two fleet runs, report.json, accuracy.png, summary."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.artifacts import load_artifacts
from fleet.attacks import Attack, AttackKind, choose_attackers
from fleet.demo.artifacts_cache import cached_artifacts
from fleet.demo.data import (
    DemoData,
    model_for_shape,
    prepare_digits,
    prepare_smarthome,
    scan_data_dir,
    tokenize_server_test,
)
from fleet.demo.display import Progress, format_bytes
from fleet.demo.life import draw_fleet_life
from fleet.demo.orchestrator import RunSpec, run_fleet
from fleet.demo.parts import AgentHandle, BrokerHandle, FleetSetup, ServerHandle
from fleet.demo.plot import PLOT_NAME, plot_accuracy
from fleet.demo.real_parts import AgentTuning, RealAgents, start_broker
from fleet.demo.report import RunReport, write_report
from fleet.demo.server_part import ServerTuning, start_server
from fleet.privacy_args import privacy_tradeoff
from fleetlearn.provision_identity import enrolment
from models.registry import MODELS, InputKind
from protocol.codecs import parse_codec_arg
from protocol.errors import ConfigError, FleetlearnError
from protocol.signing import generate_keypair, private_key_to_pem, public_key_to_pem

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

FLEET = "demo"


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 20
    strategy: str = "auto"  # server.recommended's measured defaults for the fleet size
    codec: str = "int8"
    broker: str | None = None
    broker_username: str | None = None
    broker_password: str | None = None
    broker_ca: Path | None = None
    data: Path | None = None
    model: str | None = None
    alpha: float = 0.5
    duration_s: float = 180.0
    target_accuracy: float = 0.9
    out: Path | None = None
    seed: int = 0
    compare: bool = False
    attackers: float = 0.0  # share of hostile devices (fleet/attacks.py)
    attack: str | None = None  # sign-flip | scale | noise | label-flip | backdoor
    defence: str = "default"  # server robust-aggregation preset (server/robust/presets.py)
    secure_aggregation: bool = False  # cohorts + masked updates (server/secagg.py)
    agent_tuning: AgentTuning = field(default_factory=AgentTuning)
    server_tuning: ServerTuning = field(default_factory=ServerTuning)
    privacy: dict[str, Any] | None = None  # the [privacy] table for the server; None = no DP
    quiet_logs: bool = True  # agents log every round; the live display is the demo's voice
    console: str | None = None  # HOST:PORT of the server's web console; None: no console
    metrics: str | None = None  # HOST:PORT of the server's Prometheus endpoint; None: none


@dataclass(frozen=True)
class DemoResult:
    report: RunReport
    out_dir: Path
    report_path: Path
    plot_path: Path
    interrupted: bool


class _Parts:
    def __init__(self, options: DemoOptions, strategy: str) -> None:
        extra: dict[str, Any] = {}
        if options.broker_username:
            extra["username"] = options.broker_username
            extra["password"] = options.broker_password
        if options.broker_ca:
            extra["ca_file"] = options.broker_ca
        self._agents = RealAgents(
            options.agent_tuning, options.broker is None, extra, options.secure_aggregation
        )
        self._options = options
        self._strategy = strategy
        self._extra = extra

    def start_broker(self, url: str | None) -> BrokerHandle:
        return start_broker(url)

    def start_server(self, setup: FleetSetup, broker_url: str) -> ServerHandle:
        return start_server(
            setup,
            broker_url,
            self._options.server_tuning,
            self._options.broker is None,
            self._extra,
            self._options.privacy,
            secure=self._options.secure_aggregation,
            console=self._options.console,
            metrics=self._options.metrics,
        )

    def start_agent(self, setup: FleetSetup, index: int, broker_url: str) -> AgentHandle:
        return self._agents.start_agent(setup, index, broker_url)


def _fresh_out() -> Path:
    return Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")


def _write_keys(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key, public = generate_keypair()
    fd = os.open(folder / "fleet.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_to_pem(key))
    (folder / "fleet.pub").write_bytes(public_key_to_pem(public))
    enrolment(folder, FLEET)  # enrolment.key/.pub: certifies the devices' secagg identities


def _summary(console: Console, report: RunReport, report_path: Path, plot_path: Path) -> None:
    doc = report.to_json()
    table = Table(title="fleetlearn demo: summary", show_header=True, header_style="bold")
    table.add_column("")
    runs = {**{k: v.to_json() for k, v in report.compare.items()}, report.strategy: doc}
    for name in runs:
        table.add_column(name, justify="right")

    def row(label: str, fmt: Any) -> None:
        table.add_row(label, *(fmt(r) for r in runs.values()))

    # The published (serving) model is what devices run; the training iterate is shown beside it.
    row("final accuracy (serving)", lambda r: f"{r['final_accuracy']:.3f}")
    row(
        "iterate accuracy",
        lambda r: (
            "-" if r.get("iterate_final_accuracy") is None else f"{r['iterate_final_accuracy']:.3f}"
        ),
    )
    row("best serving accuracy", lambda r: f"{r['best_accuracy']:.3f}")
    row("macro-F1", lambda r: f"{r['macro_f1']:.3f}")
    row(
        f"time to {report.target_accuracy:.0%} (serving)",
        lambda r: "not reached" if r["time_to_target_s"] is None else f"{r['time_to_target_s']} s",
    )
    row("model versions", lambda r: str(r["versions"]))
    row("updates accepted", lambda r: str(r["updates_accepted"]))
    row(
        "updates rejected",
        lambda r: ", ".join(f"{k} {v}" for k, v in r["updates_rejected"].items()) or "0",
    )
    row(
        "bytes / update",
        lambda r: (
            f"{format_bytes(r['bytes_per_update'])} "
            f"(float32 {format_bytes(r['float32_bytes_per_update'])}, "
            f"{r['float32_bytes_per_update'] / max(r['bytes_per_update'], 1):.1f}x smaller)"
        ),
    )
    row(
        "uplink / downlink",
        lambda r: f"{format_bytes(r['uplink_bytes'])} / {format_bytes(r['downlink_bytes'])}",
    )
    row("up / down to target", _to_target_cell)
    row("stopped by", lambda r: f"{r['stopped_by']} after {r['duration_s']:.0f} s")
    if any("privacy" in r for r in runs.values()):
        row("epsilon spent", _epsilon_cell)
    console.print(table)
    console.print(f"report: {report_path}\nplot:   {plot_path}")


def _to_target_cell(r: dict[str, Any]) -> str:
    up, down = r.get("uplink_bytes_to_target"), r.get("downlink_bytes_to_target")
    if up is None or down is None:
        return "target not reached"
    return f"{format_bytes(up)} / {format_bytes(down)}"


def _epsilon_cell(r: dict[str, Any]) -> str:
    p = r.get("privacy")
    if p is None:
        return "no DP"
    return (
        f"{p['epsilon']:.3g} of {p['epsilon_budget']:.3g} at delta {p['delta']:.2g} "
        f"({int(p['flushes'])} noised steps, sigma {p['noise_multiplier']:.3g})"
    )


_QUIET = ("agent", "server", "transport", "amqtt", "transitions", "fleet.embedded_broker")


def _takes_text(model: str | None) -> bool:
    """A model fed token ids (models/registry.py): the demo generates text data for it."""
    entry = None if model is None else MODELS.get(model)
    return entry is not None and entry.inputs is InputKind.TOKENS


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    # quiet_logs silences the packages' loggers for the run only: left at ERROR, they would
    # swallow the warnings of everything else in the process after the demo (tests' caplog)
    saved = {name: logging.getLogger(name).level for name in _QUIET}
    if options.quiet_logs:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return _run_demo(options, console or Console(highlight=False))
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _run_demo(options: DemoOptions, console: Console) -> DemoResult:
    try:
        parse_codec_arg(options.codec)
    except FleetlearnError as exc:
        raise ConfigError(f"--codec {options.codec!r}: {exc}") from exc
    out = (options.out or _fresh_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)

    data: DemoData
    if options.data is not None:
        data = scan_data_dir(options.data)
        source = f"data {options.data}"
    elif _takes_text(options.model):  # its demo data is the smart-home set
        shutil.rmtree(out / "data", ignore_errors=True)  # ours: a re-used --out starts clean
        data = prepare_smarthome(out / "data", options.devices, options.alpha, options.seed)
        source = f"smart-home commands, one household each (intent skew alpha {options.alpha})"
    else:
        shutil.rmtree(out / "data", ignore_errors=True)  # ours: a re-used --out starts clean
        data = prepare_digits(out / "data", options.devices, options.alpha, options.seed)
        source = f"digits split non-IID (Dirichlet alpha {options.alpha})"
    model = options.model or model_for_shape(data.input_shape)
    with console.status(f"exporting {model} for input {data.input_shape} (cached after once)"):
        # Initial weights are fixed (seed 0): --seed varies the fleet, not the model.
        artifacts_dir, exported = cached_artifacts(model, data.input_shape, data.num_classes)
    if _takes_text(model) and options.data is None:
        tokenize_server_test(data, artifacts_dir)
    manifest = load_artifacts(artifacts_dir).manifest
    console.print(
        f"[bold]fleetlearn demo[/]: {len(data.device_folders)} devices, {source}\n"
        f"model {model} {data.input_shape} -> {data.num_classes} classes, "
        f"{manifest.num_params:,} parameters ({'exported' if exported else 'cached'})\n"
        f"broker {options.broker or 'embedded amqtt (MQTT 3.1.1)'}, "
        f"{'secure aggregation (cohort sums only)' if options.secure_aggregation else ''} "
        f"codec {options.codec}, "
        f"stop at {options.target_accuracy:.0%} or {options.duration_s:.0f} s"
    )
    if options.attack is not None:
        console.print(
            f"[bold red]hostile[/]: {round(options.attackers * len(data.device_folders))} devices"
            f" send {options.attack} updates; server defence: {options.defence}"
        )
    if options.console is not None:
        console.print(f"[bold]console[/]: http://{options.console}/fleet (while the demo runs)")
    if options.privacy is not None:
        per_step = options.server_tuning.fedbuff_k
        for line in privacy_tradeoff(options.privacy, len(data.device_folders), per_step):
            console.print(f"[bold]privacy[/]: {line}")
    ids = [f"dev-{i:03d}" for i in range(len(data.device_folders))]
    # "auto": the recommended settings for this many devices (all may train at once).
    tuning = replace(options.server_tuning, recommended_concurrency=len(ids))
    options = replace(options, server_tuning=tuning)
    lives = tuple(draw_fleet_life(ids, options.seed))
    strategies = ["fedavg", options.strategy] if options.compare else [options.strategy]
    reports: list[RunReport] = []
    interrupted = False
    for strategy in strategies:
        run_dir = out / f"run-{strategy}"
        shutil.rmtree(run_dir, ignore_errors=True)  # server state of an earlier run: not ours now
        _write_keys(run_dir / "keys")
        setup = FleetSetup(
            run_dir=run_dir,
            artifacts_dir=artifacts_dir,
            test_file=data.test_file,
            device_folders=data.device_folders,
            lives=lives,
            fleet=FLEET,
            strategy=strategy,
            codec=options.codec,
            seed=options.seed,
            start=0.0,
            attack=None if options.attack is None else Attack(AttackKind(options.attack)),
            attackers=choose_attackers(len(ids), options.attackers, options.seed),
            defence=options.defence,
        )
        spec = RunSpec(
            strategy=strategy,
            codec=options.codec,
            model=model,
            num_params=manifest.num_params,
            duration_s=options.duration_s,
            target_accuracy=options.target_accuracy,
            broker_url=options.broker,
        )
        progress = Progress(f"fleetlearn demo - {strategy}", file=console.file)
        report = run_fleet(spec, setup, _Parts(options, strategy), progress)
        reports.append(report)
        if report.stopped_by == "interrupted":
            interrupted = True
            break
    primary = reports[-1]
    if len(reports) > 1:
        primary = replace(primary, compare={r.strategy: r for r in reports[:-1]})
    report_path = write_report(primary, out)
    plot_path = plot_accuracy(
        {f"{r.strategy} ({r.codec})": r.timeline for r in reports},
        out / PLOT_NAME,
        target=options.target_accuracy,
        title=f"fleetlearn demo: {len(ids)} devices, {model}",
    )
    _summary(console, primary, report_path, plot_path)
    return DemoResult(primary, out, report_path, plot_path, interrupted)
