"""The model zoo: small torch models an edge device can train with ONNX Runtime.

Layers: Linear, Conv1d/2d, ReLU, MaxPool, mean pooling, Flatten; each is traced into the
training-step graph (models/step_graph.py). No BatchNorm: its running statistics are state the
step graph does not carry yet.

    mlp    tabular rows / feature vectors; any input shape (flattened)
    cnn1d  sensor windows (channels, length), e.g. accelerometer or power traces
    cnn2d  small images (channels, height, width), e.g. 8x8 digits or 28x28
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MODEL_NAMES", "build_model"]


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class _MeanOverTime(nn.Module):
    """Global average pooling over the last axis: (b, c, t) -> (b, c). Any window length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


def _cnn1d(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> nn.Module:
    if len(input_shape) != 2:
        raise ValueError(f"cnn1d wants input shape (channels, length), got {input_shape}")
    channels, length = input_shape
    layers: list[nn.Module] = []
    for width in hidden:
        kernel = min(5, length) | 1  # odd, so padding keeps the length
        layers += [nn.Conv1d(channels, width, kernel, padding=kernel // 2), nn.ReLU()]
        if length >= 4:  # pool while the window is long enough to halve
            layers.append(nn.MaxPool1d(2))
            length //= 2
        channels = width
    layers += [_MeanOverTime(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def _cnn2d(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cnn2d wants input shape (channels, height, width), got {input_shape}")
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out in hidden:
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels * height * width, num_classes)]
    return nn.Sequential(*layers)


_Builder = Callable[[tuple[int, ...], int, tuple[int, ...]], nn.Module]
_ZOO: dict[str, tuple[_Builder, tuple[int, ...]]] = {
    # name -> (builder, default hidden widths); defaults sized for a Raspberry-Pi-class CPU
    "mlp": (_mlp, (128,)),
    "cnn1d": (_cnn1d, (16, 32)),
    "cnn2d": (_cnn2d, (16, 32)),
}
MODEL_NAMES: tuple[str, ...] = tuple(_ZOO)


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: tuple[int, ...] | None = None,
) -> nn.Module:
    """A freshly initialised zoo model (seed torch first for reproducible weights).

    Input: (batch, *input_shape) float32. Output: (batch, num_classes) logits.
    """
    if name not in _ZOO:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    if num_classes < 2 or not input_shape or any(d < 1 for d in input_shape):
        raise ValueError(f"bad input_shape {input_shape} or num_classes {num_classes}")
    builder, default_hidden = _ZOO[name]
    return builder(tuple(input_shape), num_classes, default_hidden if hidden is None else hidden)
