"""`fleetlearn export`: build a zoo model and write its artifacts folder (training-step graph)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from protocol.errors import ConfigError

__all__ = ["add_arguments", "parse_shape", "run"]


def parse_shape(text: str) -> tuple[int, ...]:
    """'64' -> (64,); '1,8,8' or '1x8x8' -> (1, 8, 8)."""
    parts = re.split(r"[,x]", text.strip())
    if not re.fullmatch(r"\d+([,x]\d+)*", text.strip()) or any(int(p) == 0 for p in parts):
        raise ConfigError(f"--input-shape: expected positive sizes like 64 or 1,8,8, got {text!r}")
    return tuple(int(p) for p in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo model: mlp, cnn1d or cnn2d")
    parser.add_argument(
        "--input-shape", required=True, help="one sample's shape, e.g. 64 | 3,128 | 1,28,28"
    )
    parser.add_argument("--classes", type=int, required=True, help="number of classes")
    parser.add_argument("--out", type=Path, required=True, help="artifacts folder to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for initial weights")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    parser.add_argument("--momentum", type=float, default=0.0, help="sgd momentum (default 0)")
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="decoupled (adamw, default 0.01) or L2 (sgd, default 0) weight decay",
    )
    parser.add_argument(
        "--trainable",
        default="all",
        help="all | head | module names or patterns (e.g. 3 or '*.lora_*'); the rest is frozen",
    )
    parser.add_argument("--hidden", default=None, help="hidden widths, e.g. 128 or 16,32")


def run(args: argparse.Namespace) -> int:
    from models.export import DEFAULT_LEARNING_RATE, export_artifacts  # torch: only when run

    shape = parse_shape(args.input_shape)
    hidden = parse_shape(args.hidden) if args.hidden else None
    try:
        manifest = export_artifacts(
            args.model,
            shape,
            args.classes,
            args.out,
            seed=args.seed,
            learning_rate=DEFAULT_LEARNING_RATE if args.lr is None else args.lr,
            optimizer=args.optimizer,
            hidden=hidden,
            trainable=args.trainable,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"model_id {manifest.model_id}")
    print(
        f"{manifest.model_name} {manifest.num_params} trainable + {manifest.num_frozen} frozen"
        f" parameters -> {args.out}"
    )
    return 0
