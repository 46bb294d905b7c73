"""`fleetlearn export`: build a zoo model and write its artifacts folder (training-step graph)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from models.local_optimizer import DEFAULT_OPTIMIZER
from models.registry import MODELS, InputKind
from protocol.errors import ConfigError
from protocol.manifest import Manifest

__all__ = ["add_arguments", "parse_shape", "run"]


def parse_shape(text: str) -> tuple[int, ...]:
    """'64' -> (64,); '1,8,8' or '1x8x8' -> (1, 8, 8)."""
    parts = re.split(r"[,x]", text.strip())
    if not re.fullmatch(r"\d+([,x]\d+)*", text.strip()) or any(int(p) == 0 for p in parts):
        raise ConfigError(f"--input-shape: expected positive sizes like 64 or 1,8,8, got {text!r}")
    return tuple(int(p) for p in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="zoo model: mlp, cnn1d, cnn2d, or minilm-lora (text)"
    )
    parser.add_argument(
        "--input-shape", help="one sample's shape, e.g. 64 | 3,128 | 1,28,28 (zoo models)"
    )
    parser.add_argument("--classes", type=int, required=True, help="number of classes")
    parser.add_argument("--out", type=Path, required=True, help="artifacts folder to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for initial weights")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="local learning rate (default: sgd 0.3, adamw 1e-3; minilm-lora adapters 3e-3)",
    )
    parser.add_argument(
        "--optimizer",
        default=None,
        choices=("adamw", "sgd"),
        help="local optimizer baked into the step graph (default: sgd for zoo models, adamw for"
        " minilm-lora; see models/local_optimizer.py for why)",
    )
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
    text = parser.add_argument_group("minilm-lora (pretrained all-MiniLM-L6-v2 + LoRA + head)")
    text.add_argument("--lora-rank", type=int, default=8, help="adapter rank r (default 8)")
    text.add_argument("--lora-alpha", type=float, default=16.0, help="scale alpha (default 16)")
    text.add_argument(
        "--lora-targets",
        default="query,value",
        help="attention linears to adapt: query,key,value,dense",
    )
    text.add_argument("--max-length", type=int, default=24, help="tokens per text (default 24)")


def _run_minilm(args: argparse.Namespace) -> Manifest:
    from models.minilm_export import ADAPTER_LEARNING_RATE, export_minilm_lora  # torch

    return export_minilm_lora(
        args.out,
        args.classes,
        rank=args.lora_rank,
        alpha=args.lora_alpha,
        targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
        max_length=args.max_length,
        trainable="adapters" if args.trainable == "all" else args.trainable,
        seed=args.seed,
        learning_rate=ADAPTER_LEARNING_RATE if args.lr is None else args.lr,
        **({} if args.optimizer is None else {"optimizer": args.optimizer}),  # else its own
    )


def run(args: argparse.Namespace) -> int:
    from models.export import export_artifacts  # torch: only when run

    entry = MODELS.get(args.model)  # unknown names: the zoo refuses them with its choices
    if entry is not None and entry.inputs is InputKind.TOKENS:  # the text model's exporter
        try:
            manifest = _run_minilm(args)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return _report(manifest, args.out)
    if args.input_shape is None:
        raise ConfigError(f"--input-shape is required for --model {args.model}")
    shape = parse_shape(args.input_shape)
    hidden = parse_shape(args.hidden) if args.hidden else None
    try:
        manifest = export_artifacts(
            args.model,
            shape,
            args.classes,
            args.out,
            seed=args.seed,
            learning_rate=args.lr,  # None: the optimizer's default
            optimizer=args.optimizer or DEFAULT_OPTIMIZER,
            hidden=hidden,
            trainable=args.trainable,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return _report(manifest, args.out)


def _report(manifest: Manifest, out: Path) -> int:
    print(f"model_id {manifest.model_id}")
    print(
        f"{manifest.model_name} {manifest.num_params} trainable + {manifest.num_frozen} frozen"
        f" parameters -> {out}"
    )
    return 0
