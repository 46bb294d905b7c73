"""Buffers that ONNX Runtime reads and writes in place: one bank = a set of named tensors.

    CpuBank     one flat float32 array; each tensor is a view of it, wrapped as an OrtValue that
                shares the memory (ORT reads inputs from and writes bound outputs into it)
    DeviceBank  one OrtValue per tensor on an accelerator (CUDA); read/write copy to/from host

The flat order is the order of `shapes` (the manifest's order for parameters), so `read()` and
`write()` speak the same flat vectors as offers and updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = ["Bank", "CpuBank", "DeviceBank", "make_bank"]


class Bank(Protocol):
    values: dict[str, Any]  # name -> OrtValue, in flat order

    def read(self) -> np.ndarray: ...  # (size,) float32, a copy

    def write(self, flat: np.ndarray) -> None: ...

    def zero(self) -> None: ...

    def update(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace the contents with fn(contents); fn may work in place on its argument."""
        ...


class CpuBank:
    def __init__(self, ort: Any, shapes: dict[str, tuple[int, ...]]) -> None:
        size = sum(math.prod(s) for s in shapes.values())
        self.flat = np.zeros(size, dtype=np.float32)  # (size,) the memory ORT works in
        self.values: dict[str, Any] = {}
        offset = 0
        for name, shape in shapes.items():
            view = self.flat[offset : offset + math.prod(shape)].reshape(shape)
            self.values[name] = ort.OrtValue.ortvalue_from_numpy(view)  # shares the memory
            offset += view.size

    def read(self) -> np.ndarray:
        return self.flat.copy()

    def write(self, flat: np.ndarray) -> None:
        self.flat[...] = flat  # in place: the OrtValues keep pointing here

    def zero(self) -> None:
        self.flat.fill(0.0)

    def update(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        out = fn(self.flat)
        if out is not self.flat:
            self.flat[...] = out


class DeviceBank:
    """Untested on real hardware in this project (no GPU machine); the CPU bank is the default."""

    def __init__(self, ort: Any, shapes: dict[str, tuple[int, ...]], device: str) -> None:
        self._shapes = shapes
        self.values: dict[str, Any] = {
            name: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, device, 0)
            for name, shape in shapes.items()
        }
        self.zero()

    def read(self) -> np.ndarray:
        parts = [np.asarray(v.numpy(), dtype=np.float32).ravel() for v in self.values.values()]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def write(self, flat: np.ndarray) -> None:
        offset = 0
        for name, shape in self._shapes.items():
            size = math.prod(shape)
            part = np.ascontiguousarray(flat[offset : offset + size].reshape(shape))
            self.values[name].update_inplace(part)
            offset += size

    def zero(self) -> None:
        size = sum(math.prod(s) for s in self._shapes.values())
        self.write(np.zeros(size, dtype=np.float32))

    def update(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.write(fn(self.read()))


def make_bank(ort: Any, shapes: dict[str, tuple[int, ...]], device: str) -> Bank:
    return CpuBank(ort, shapes) if device == "cpu" else DeviceBank(ort, shapes, device)
