"""`fleetlearn export --model minilm-lora`: the pretrained MiniLM with LoRA adapters and a head.

Only the adapters and the head train (`trainable="adapters"`, the default); the 22.7M backbone
weights are frozen: they ship once in `frozen_weights.npy` (hashed like every artifact) and never
travel in offers or updates. The tokenizer (`tokenizer.json` from the same package) is an
artifact too, so a device tokenises exactly as the model was trained, with `tokenizers` only.

    input   (max_length,) int64 token ids per sample, [PAD] = 0
    output  (num_classes,) logits

`pretrained=False` builds a small randomly initialised encoder of the same architecture (same
tokenizer and vocabulary): what the tests export, in seconds instead of minutes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.export import export_module
from models.minilm import (
    LORA_TARGETS,
    MiniLMClassifier,
    MiniLMConfig,
    load_pretrained,
    read_package_file,
)
from models.optimizers import OptimizerSpec
from models.trainable import resolve_trainable
from protocol.manifest import Manifest

__all__ = [
    "ADAPTER_LEARNING_RATE",
    "MODEL_NAME",
    "TINY_CONFIG",
    "TOKENIZER_FILE",
    "export_minilm_lora",
]

MODEL_NAME = "minilm-lora"
TOKENIZER_FILE = "tokenizer.json"
# A test-sized encoder: the real vocabulary and tokenizer, two narrow layers.
TINY_CONFIG = MiniLMConfig(hidden=32, layers=2, heads=2, intermediate=64, max_positions=128)
_ADAPTERS = "*.lora_*,head"
# AdamW on the adapters and a fresh head: 3e-3 reached 0.72 on unseen households in 6 federated
# rounds where 1e-3 reached 0.45 in 8 (benchmarks/large_model.py; the backbone never moves)
ADAPTER_LEARNING_RATE = 3e-3


def export_minilm_lora(
    out_dir: Path,
    num_classes: int,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    targets: tuple[str, ...] = ("query", "value"),
    max_length: int = 24,
    trainable: str = "adapters",
    seed: int = 0,
    learning_rate: float = ADAPTER_LEARNING_RATE,
    optimizer: str = "adamw",
    pretrained: bool = True,
) -> Manifest:
    """Build and export the adapted encoder; `trainable`: adapters | head | all | names."""
    if unknown := set(targets) - set(LORA_TARGETS):
        raise ValueError(f"--lora-targets {sorted(unknown)}: choose from {', '.join(LORA_TARGETS)}")
    if not 2 <= max_length <= 512:
        raise ValueError(f"--max-length must be in [2, 512], got {max_length}")
    torch.manual_seed(seed)
    model = (
        load_pretrained(num_classes) if pretrained else MiniLMClassifier(TINY_CONFIG, num_classes)
    )
    if max_length > model.cfg.max_positions:
        raise ValueError(f"--max-length {max_length} > {model.cfg.max_positions} positions")
    if trainable != "head":  # head-only needs no adapters (they would stay zero and frozen)
        model.add_lora(rank, alpha, targets)
    names = resolve_trainable(model, _ADAPTERS if trainable == "adapters" else trainable)
    return export_module(
        model,
        out_dir,
        model_name=MODEL_NAME,
        input_shape=(max_length,),
        num_classes=num_classes,
        trainable=names,
        optimizer=OptimizerSpec(optimizer),
        learning_rate=learning_rate,
        input_dtype="int64",
        tokenizer=(TOKENIZER_FILE, read_package_file(TOKENIZER_FILE)),
        extra={
            "seed": seed,
            "trainable": trainable,
            "lora": {"rank": rank, "alpha": alpha, "targets": list(targets)},
            "pretrained": "all-MiniLM-L6-v2" if pretrained else "random (test-sized)",
        },
    )
