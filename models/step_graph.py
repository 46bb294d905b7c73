"""Export any torch module's training step and forward pass as plain ONNX graphs.

The training step is one ONNX graph in the default domain only (no com.microsoft gradient or
optimizer ops), so any ONNX Runtime build runs it with a plain InferenceSession:

    inputs : <trainable name>...   trainable parameters, manifest order
             <frozen name>...      frozen parameters and buffers (values ship in the artifacts)
             state.<slot>...       optimizer state (models/optimizers.py), zeros at round start
             <input name>          the batch, (batch, *input_shape) float32
             labels                (batch,) int64
             lr                    () float32
    outputs: new.<trainable name>..., new_state.<slot>..., loss (), logits (batch, classes)

The forward graph takes the trainable and frozen tensors as inputs too (one session serves every
weight vector); `inference_graph` turns it into a self-contained model with initializers.

How (FACTS.md, "Portable training step"): a functional step (forward by `functional_call`,
backward by `torch.autograd.grad`, optimizer update) is traced to core ATen ops by `make_fx` with
symbolic shapes and `core_aten_decompositions()` plus our `convolution_backward` decomposition;
the traced graph then goes through the dynamo ONNX exporter with a dynamic batch axis.
`torch.func.grad` inside a dynamo export fails in torch 2.13, and frozen weights captured as
constants break the exporter: every tensor the graph reads is an explicit input.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from models.conv_backward import convolution_backward
from models.optimizers import OptimizerSpec, apply_update, state_slots

__all__ = [
    "LABELS",
    "LOGITS",
    "LOSS",
    "LR",
    "OPSET",
    "StepGraphs",
    "export_step_graphs",
    "inference_graph",
]

OPSET = 18  # the dynamo exporter's native opset; ORT 1.16+ runs it
LABELS, LR, LOSS, LOGITS = "labels", "lr", "loss", "logits"
_STATE, _NEW_STATE, _NEW = "state.", "new_state.", "new."


@dataclass(frozen=True)
class StepGraphs:
    train_step: bytes  # ONNX model: the training step (see module docstring)
    forward: bytes  # ONNX model: (trainable..., frozen..., input) -> logits
    state_shapes: dict[str, tuple[int, ...]]  # optimizer slot -> shape, graph order


def _decompositions() -> dict[Any, Callable[..., Any]]:
    table = dict(core_aten_decompositions())
    table[torch.ops.aten.convolution_backward.default] = convolution_backward
    return table


def _split(seq: Sequence[torch.Tensor], sizes: Sequence[int]) -> list[list[torch.Tensor]]:
    out, start = [], 0
    for n in sizes:
        out.append(list(seq[start : start + n]))
        start += n
    return out


def _onnx_export(
    fn: Callable[..., Any],
    example: list[torch.Tensor],
    input_names: list[str],
    output_names: list[str],
    batch_inputs: set[str],
) -> bytes:
    """make_fx-trace `fn` to core ATen, then the dynamo exporter; batch axis 0 of `batch_inputs`."""
    traced = make_fx(fn, decomposition_table=_decompositions(), tracing_mode="symbolic")(*example)
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} if name in batch_inputs else None for name in input_names)
    with warnings.catch_warnings():
        # the exporter's progress notes and torch.export's own deprecations; errors still raise
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            traced,
            tuple(example),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=input_names,
            output_names=output_names,
            opset_version=OPSET,
            optimize=False,  # onnxscript 0.7.2 folds x + 1e-8 into x (AdamW eps lost)
            verbose=False,
            report=False,
        )
    assert program is not None
    model = program.model_proto
    onnx.checker.check_model(model, full_check=True)
    buf = io.BytesIO()
    onnx.save_model(model, buf)
    return buf.getvalue()


def export_step_graphs(
    module: nn.Module,
    example_input: torch.Tensor,  # (batch, *input_shape) float32, batch >= 2
    trainable: Sequence[str],
    optimizer: OptimizerSpec,
    input_name: str = "input",
) -> StepGraphs:
    """Trace and export `module`'s training step and forward graph.

    `trainable`: parameter names that train, in flat order. Every other parameter, and every
    buffer, is frozen: an explicit graph input, in `frozen_tensors(module, trainable)` order.
    """
    params = dict(module.named_parameters())
    missing = [n for n in trainable if n not in params]
    if missing or not trainable:
        raise ValueError(f"trainable parameters {missing or '(none)'} are not in the module")
    frozen = frozen_tensors(module, trainable)
    train_values = [params[n].detach().clone() for n in trainable]
    frozen_values = [t.detach().clone() for t in frozen.values()]
    slots = state_slots(optimizer, {n: tuple(params[n].shape) for n in trainable})
    state_values = [torch.zeros(s.shape) for s in slots]
    labels = torch.zeros(example_input.shape[0], dtype=torch.int64)
    lr = torch.tensor(1e-3, dtype=torch.float32)
    names_t, names_f = list(trainable), list(frozen)
    sizes = (len(names_t), len(names_f), len(slots))

    def forward(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(module, tensors, (x,), strict=True)
        assert isinstance(out, torch.Tensor)
        return out

    def step(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        train_p, frozen_p, state = _split(flat, sizes)
        x, y, rate = flat[sum(sizes) :]
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in train_p]
            logits = forward(dict(zip(names_t + names_f, leaves + frozen_p, strict=True)), x)
            loss = nn.functional.cross_entropy(logits, y)
            grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            new_params, new_state = apply_update(optimizer, train_p, list(grads), state, rate)
        return (*new_params, *new_state, loss.detach(), logits.detach())

    def infer(*flat: torch.Tensor) -> torch.Tensor:
        train_p, frozen_p = _split(flat, sizes[:2])
        tensors = dict(zip(names_t + names_f, train_p + frozen_p, strict=True))
        return forward(tensors, flat[-1])

    state_in = [_STATE + s.name for s in slots]
    module.train(True)
    train_step = _onnx_export(
        step,
        [*train_values, *frozen_values, *state_values, example_input, labels, lr],
        [*names_t, *names_f, *state_in, input_name, LABELS, LR],
        [*(_NEW + n for n in names_t), *(_NEW_STATE + s.name for s in slots), LOSS, LOGITS],
        {input_name, LABELS},
    )
    module.train(False)
    forward_graph = _onnx_export(
        infer,
        [*train_values, *frozen_values, example_input],
        [*names_t, *names_f, input_name],
        [LOGITS],
        {input_name},
    )
    return StepGraphs(train_step, forward_graph, {s.name: s.shape for s in slots})


def frozen_tensors(module: nn.Module, trainable: Sequence[str]) -> dict[str, torch.Tensor]:
    """Every parameter not in `trainable`, then every buffer, in the module's own order."""
    keep = set(trainable)
    out = {n: p.detach() for n, p in module.named_parameters() if n not in keep}
    out.update({n: b.detach() for n, b in module.named_buffers()})
    return out


def inference_graph(forward: bytes, values: dict[str, np.ndarray]) -> bytes:
    """The forward graph with its weight inputs turned into initializers of the same names.

    The result is a self-contained model (input -> logits) any ONNX Runtime opens; initializers
    keep the parameter names, so a later weight vector can replace them by name.
    """
    model = onnx.load_from_string(forward)
    graph = model.graph
    kept = [i for i in graph.input if i.name not in values]
    if len(kept) != len(graph.input) - len(values):
        raise ValueError("inference_graph: some values do not name a graph input")
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(
        numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), name)
        for name, v in values.items()
    )
    onnx.checker.check_model(model, full_check=True)
    buf = io.BytesIO()
    onnx.save_model(model, buf)
    return buf.getvalue()
