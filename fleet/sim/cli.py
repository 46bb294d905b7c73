"""`fleetlearn simulate`: compare server strategies and codecs on a simulated fleet (virtual time).

Every strategy runs on the same fleet, data partition and seed; training is real (the production
ONNX Runtime backend, one shared trainer), time is virtual. Writes OUT/report.json and plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from fleet.attacks import DEVICE_ATTACKS, Attack, AttackKind
from fleet.privacy_args import add_privacy_arguments, privacy_table
from fleet.sim.compare import compare
from fleet.sim.profiles import Availability, FleetConfig
from fleet.sim.runner import Experiment, specs_for
from fleet.sim.training import LocalBudget
from fleet.sim.world import Setup
from protocol import codecs
from protocol.errors import ConfigError
from server.optimizers import make_schedule
from server.privacy import parse_privacy
from server.robust import DEFENCES

__all__ = [
    "add_arguments",
    "downlink_codecs",
    "parse_duration",
    "parse_lr_schedule",
    "run",
    "server_optimizer",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '4h', '1.5d' -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"duration {text!r}: expected a positive number with s/m/h/d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    a(
        "--strategy",
        action="append",
        help="fedavg | fedasync[:constant|polynomial|hinge] | fedbuff[:K[:staleness]];"
        " repeat (default: fedavg, fedasync:polynomial, fedbuff:10:polynomial)",
    )
    a("--codec", action="append", help="e.g. float32, int8, topk:0.05+int8; repeat (an axis)")
    a(
        "--downlink-codec",
        action="append",
        help="new versions also as deltas to devices holding the last one: e.g. int8, int4;"
        " 'none' = whole float32 offers only (default); repeat (an axis)",
    )
    a("--alpha", type=float, default=0.3, help="Dirichlet non-IID alpha (default 0.3)")
    a("--seed", type=int, action="append", help="repeat for several seeds (default 0)")
    a("--data", type=Path, help="device folders with train.npz plus test.npz (else digits)")
    a("--trace", type=Path, help="availability CSV device,start,end (virtual seconds)")
    a("--artifacts", type=Path, help="exported model folder (default: export the digits MLP)")
    a("--duration", default="2h", help="virtual duration, e.g. 90m, 4h (default 2h)")
    a("--target", type=float, help="target accuracy (default: 95%% of best FedAvg final)")
    a("--out", type=Path, default=Path("sim-out"), help="output folder (default sim-out)")
    a("--concurrency", type=int, default=50, help="devices training at once / per round")
    a(
        "--async-concurrency",
        type=int,
        help="async runs only: devices training at once (over-commit; default: --concurrency,"
        " which FedAvg keeps selecting per round)",
    )
    a("--over-selection", type=float, default=0.3, help="FedAvg over-selection (default 0.3)")
    a("--deadline", default="120s", help="FedAvg round deadline (virtual, default 120s)")
    a("--eval-every", default="60s", help="evaluate every this much virtual time")
    a("--stragglers", type=float, default=0.15, help="straggler fraction (10x slower)")
    a("--dropout", type=float, default=0.05, help="chance a session dies mid-training")
    a("--availability", choices=[x.value for x in Availability], default="daily")
    a("--local-samples", type=int, default=32, help="samples per local session (default 32)")
    a("--batch-size", type=int, default=8)
    a(
        "--lr",
        type=float,
        default=0.01,
        help="local AdamW rate when exporting the built-in digits model (the benchmarks were"
        " measured with it; a device export defaults to SGD 0.3: pass --artifacts for that)",
    )
    a("--fedbuff-lr", type=float, default=1.0, help="FedBuff server learning rate")
    a("--fedbuff-momentum", type=float, default=0.0, help="FedBuff server momentum (0: none)")
    a(
        "--server-optimizer",
        choices=["sgd", "avgm", "adam", "yogi", "adagrad"],
        help="FedBuff server optimiser at --fedbuff-lr (server/optimizers.py; default: sgd,"
        " or avgm with --fedbuff-momentum)",
    )
    a(
        "--lr-schedule",
        help="FedBuff server lr schedule as a TOML inline table, e.g."
        " '{name = \"cosine\", total_steps = 300, min_factor = 0.1}' (server/optimizers.py)",
    )
    a("--serving-decay", type=float, default=0.0, help="serving average decay (0: off)")
    a(
        "--session-timeout",
        type=float,
        default=0.0,
        help="async: abort sessions longer than this multiple of the median session time"
        " (0: never, the default)",
    )
    a("--fedasync-alpha", type=float, default=0.6, help="FedAsync mixing rate")
    a("--max-staleness", type=int, help="reject updates staler than this (default: none)")
    a(
        "--secure-aggregation",
        action="store_true",
        help="async runs: cohorts of K mask their updates; the server applies only cohort sums",
    )
    add_privacy_arguments(p)
    a("--attackers", type=float, default=0.0, help="share of hostile devices, 0-1 (default 0)")
    a("--attack", choices=[k.value for k in DEVICE_ATTACKS], help="what hostile devices send")
    a(
        "--defence",
        choices=sorted(DEFENCES),
        default="none",
        help="server robust aggregation preset (server/robust/presets.py; default none)",
    )


def parse_lr_schedule(text: str) -> dict[str, Any]:
    """`--lr-schedule` (a TOML inline table) -> the `[strategy.lr_schedule]` table, validated."""
    try:
        table = tomllib.loads(f"schedule = {text}")["schedule"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--lr-schedule {text!r}: not a TOML inline table ({exc})") from exc
    if not isinstance(table, dict):
        raise ConfigError(f'--lr-schedule {text!r}: expected a table like {{name = "cosine"}}')
    try:
        make_schedule(table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--lr-schedule: {exc}") from exc
    return table


def server_optimizer(args: argparse.Namespace) -> dict[str, Any] | None:
    """FedBuff's server optimiser from --server-optimizer/--fedbuff-lr/--fedbuff-momentum/
    --lr-schedule (None: the strategy's own step at --fedbuff-lr)."""
    if not args.server_optimizer and not args.lr_schedule:
        return None
    name = args.server_optimizer or ("avgm" if args.fedbuff_momentum else "sgd")
    opt: dict[str, Any] = {"name": name, "lr": args.fedbuff_lr}
    if args.fedbuff_momentum:
        opt["beta1"] = args.fedbuff_momentum
    if args.lr_schedule:
        opt["lr_schedule"] = parse_lr_schedule(args.lr_schedule)
    return opt


def _attack(args: argparse.Namespace) -> Attack | None:
    if not 0.0 <= args.attackers < 1.0:
        raise ConfigError(f"--attackers {args.attackers}: a share in [0, 1)")
    if (args.attackers > 0) != (args.attack is not None):
        raise ConfigError("--attackers FRACTION and --attack KIND go together")
    return None if args.attack is None else Attack(AttackKind(args.attack))


def downlink_codecs(args: argparse.Namespace) -> list[dict[str, Any] | None]:
    """The --downlink-codec axis: codec specs, None for whole offers only ('none', default)."""
    names = args.downlink_codec or ["none"]
    return [None if c == "none" else codecs.parse_codec_arg(c) for c in names]


def run(args: argparse.Namespace) -> int:
    codec_specs = [codecs.parse_codec_arg(c) for c in (args.codec or ["float32"])]
    table = privacy_table(args, args.devices)
    privacy = None if table is None else parse_privacy(table, allow_seed=True)
    default = ["fedavg", "fedasync:polynomial", "fedbuff:10:polynomial"]
    if privacy is not None:  # FedAsync with DP is refused (a noised release per update)
        default = ["fedavg", "fedbuff:100:polynomial"]
    strategies = args.strategy or default
    specs = specs_for(strategies, codec_specs, downlink_codecs(args))
    opt = server_optimizer(args)
    if opt is not None:
        specs = [dataclasses.replace(s, optimizer=opt) if s.name == "fedbuff" else s for s in specs]
    if args.async_concurrency is not None and args.async_concurrency < 1:
        raise ConfigError("--async-concurrency must be >= 1")
    try:
        fleet = FleetConfig(
            straggler_fraction=args.stragglers,
            dropout_p=args.dropout,
            availability=Availability(args.availability),
        )
        budget = LocalBudget(max_samples=args.local_samples, batch_size=args.batch_size)
        exp = Experiment(
            concurrency=args.concurrency,
            async_concurrency=args.async_concurrency,
            over_selection=args.over_selection,
            deadline_s=parse_duration(args.deadline),
            fedasync_alpha=args.fedasync_alpha,
            fedbuff_lr=args.fedbuff_lr,
            fedbuff_momentum=args.fedbuff_momentum,
            async_session_timeout=args.session_timeout or None,
            max_staleness=args.max_staleness,
            duration_s=parse_duration(args.duration),
            eval_every_s=parse_duration(args.eval_every),
            budget=budget,
            robust=DEFENCES[args.defence],
            attack=_attack(args),
            attacker_fraction=args.attackers,
            secure_aggregation=args.secure_aggregation,
            privacy=privacy,
            serving_decay=args.serving_decay,
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc
    if args.concurrency < 1 or args.devices < 1:
        raise ConfigError("--devices and --concurrency must be >= 1")
    setup = Setup(
        devices=args.devices,
        alpha=args.alpha,
        data_dir=args.data,
        trace=args.trace,
        fleet=fleet,
        artifacts=args.artifacts,
        learning_rate=args.lr,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = compare(specs, exp, setup, args.seed or [0], args.out, args.target, progress=print)
    print(json.dumps(report["aggregate"], indent=1))
    print(f"wrote {args.out / 'report.json'} and plots under {args.out}/seed*/")
    return 0
