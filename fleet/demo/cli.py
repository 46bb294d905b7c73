"""`fleetlearn demo`: a live fleet learning on a real broker, in one command.

fleetlearn demo                          20 devices, digits, auto strategy, int8, embedded broker
fleetlearn demo --compare                sync FedAvg first, then the async strategy, one plot
fleetlearn demo --broker mqtt://127.0.0.1:1883      an external broker (e.g. Mosquitto)
fleetlearn demo --data DIR               your own data: DIR/<device>/train.npz + DIR/test.npz
fleetlearn demo --attackers 0.2 --attack sign-flip [--defence none]   hostile devices
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet.privacy_args import add_privacy_arguments, privacy_table
from protocol.errors import ConfigError

__all__ = ["add_arguments", "run"]

STRATEGIES = ("auto", "fedasync", "fedbuff", "fedavg")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--devices", type=_positive_int, default=20, help="fleet size")
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto: the measured defaults for this fleet size (server/recommended.py: FedBuff,"
        " K from the device count, serving average)",
    )
    parser.add_argument(
        "--codec",
        default="int8",
        help="update codec: float32|float16|int8[:chunk]|int4|topk:F+int8",
    )
    parser.add_argument(
        "--downlink-codec",
        default="int4",
        help="new versions also as signed deltas in this codec to devices holding the last one;"
        " none = whole offers only",
    )
    parser.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="mqtt[s]://host:port of an external broker; "
        "without it an embedded broker on a free 127.0.0.1 port",
    )
    parser.add_argument("--broker-username", default=None, help="for --broker")
    parser.add_argument("--broker-password", default=None, help="for --broker")
    parser.add_argument("--broker-ca", type=Path, default=None, help="CA file for mqtts://")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="device folders with train.npz, plus DIR/test.npz; without it digits, split non-IID",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="zoo model (default follows the data: (F,)->mlp, (C,L)->cnn1d, (C,H,W)->cnn2d),"
        " or minilm-lora: the pretrained MiniLM with LoRA adapters on generated smart-home"
        " commands (use few --devices: each holds the 22.7M-parameter backbone)",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet non-IID alpha")
    parser.add_argument("--duration", type=float, default=180.0, help="time limit, seconds")
    parser.add_argument(
        "--target-accuracy", type=_fraction, default=0.9, help="stop early when reached"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder; without it a fresh runs/demo-*"
    )
    parser.add_argument("--seed", type=int, default=0, help="data split and device lives")
    parser.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="devices join cohorts and mask their updates; the server sees only cohort sums",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run sync FedAvg, then --strategy, on the same fleet; plot both",
    )
    parser.add_argument(
        "--console",
        nargs="?",
        const="127.0.0.1:8787",
        default=None,
        metavar="HOST:PORT",
        help="serve the server's web console (default address 127.0.0.1:8787)",
    )
    parser.add_argument(
        "--metrics",
        nargs="?",
        const="127.0.0.1:9100",
        default=None,
        metavar="HOST:PORT",
        help="serve the server's Prometheus metrics (default address 127.0.0.1:9100)",
    )
    add_privacy_arguments(parser)
    _add_attack_arguments(parser)


def _add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    from fleet.attacks import DEVICE_ATTACKS
    from server.robust import DEFENCES

    parser.add_argument(
        "--attackers", type=float, default=0.0, help="share of hostile devices, 0-1"
    )
    parser.add_argument(
        "--attack", choices=[k.value for k in DEVICE_ATTACKS], help="what hostile devices send"
    )
    parser.add_argument(
        "--defence",
        choices=sorted(DEFENCES),
        default="default",
        help="server robust aggregation (server/robust/presets.py)",
    )


def run(args: argparse.Namespace) -> int:
    from fleet.demo.run import DemoOptions, run_demo  # heavy imports only when the demo runs
    from fleet.demo.server_part import ServerTuning

    if args.duration <= 0:
        raise ConfigError(f"--duration: expected seconds > 0, got {args.duration}")
    if args.alpha <= 0:
        raise ConfigError(f"--alpha: expected > 0, got {args.alpha}")
    if args.data is not None and not args.data.is_dir():
        raise ConfigError(f"--data {args.data}: not a folder")
    if args.compare and args.strategy == "fedavg":
        raise ConfigError(
            "--compare runs FedAvg against an async --strategy (auto, fedasync or fedbuff)"
        )
    if not 0.0 <= args.attackers < 1.0:
        raise ConfigError(f"--attackers {args.attackers}: a share in [0, 1)")
    if (args.attackers > 0) != (args.attack is not None):
        raise ConfigError("--attackers FRACTION and --attack KIND go together")
    privacy = privacy_table(args, args.devices)
    if privacy is not None and args.strategy != "auto":
        from server.reducer import refuse_privacy_without_buffer  # the server's one rule
        from server.strategies import STRATEGIES as SERVER_STRATEGIES

        try:
            refuse_privacy_without_buffer(SERVER_STRATEGIES[args.strategy].buffered)
        except ValueError as exc:
            raise ConfigError(f"--dp-epsilon: {exc}") from exc
    options = DemoOptions(
        devices=args.devices,
        strategy=args.strategy,
        codec=args.codec,
        server_tuning=ServerTuning(publish_delta_codec=args.downlink_codec),
        broker=args.broker,
        broker_username=args.broker_username,
        broker_password=args.broker_password,
        broker_ca=args.broker_ca,
        data=args.data,
        model=args.model,
        alpha=args.alpha,
        duration_s=args.duration,
        target_accuracy=args.target_accuracy,
        out=args.out,
        seed=args.seed,
        compare=args.compare,
        attackers=args.attackers,
        attack=args.attack,
        defence=args.defence,
        secure_aggregation=args.secure_aggregation,
        privacy=privacy,
        console=args.console,
        metrics=args.metrics,
    )
    result = run_demo(options)
    return 130 if result.interrupted else 0
