"""What each exportable model is, for every tool that must tell models apart (export, demo, CI).

Tools ask the registry how a model is fed and built, never its name:

    inputs          features: float32 samples of the shape `--input-shape` gives (the zoo);
                    tokens: int64 token ids of length `--max-length`, from the tokenizer the
                    export writes beside the model (its demo data is text)
    pretrained      its weights come from a package at export time, not from a seed
    own_optimizer   its exporter chooses the devices' local optimiser and rate (LoRA adapters
                    keep AdamW); the zoo takes models/local_optimizer.py's default

Pure data: importing it loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["MODELS", "InputKind", "ModelEntry", "model_entry"]


class InputKind(StrEnum):
    FEATURES = "features"
    TOKENS = "tokens"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    inputs: InputKind
    pretrained: bool = False
    own_optimizer: bool = False


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("mlp", InputKind.FEATURES),  # models/zoo.py
        ModelEntry("cnn1d", InputKind.FEATURES),
        ModelEntry("cnn2d", InputKind.FEATURES),
        # models/minilm_export.py: all-MiniLM-L6-v2 + LoRA adapters + a head
        ModelEntry("minilm-lora", InputKind.TOKENS, pretrained=True, own_optimizer=True),
    )
}


def model_entry(name: str) -> ModelEntry:
    """The entry for `name`; ValueError lists the choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (choose from {sorted(MODELS)})") from None
