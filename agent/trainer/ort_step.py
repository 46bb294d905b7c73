"""The default trainer: the exported training-step graph on stock ONNX Runtime (any platform).

`train_step.onnx` maps (parameters, frozen tensors, optimizer state, batch, labels, lr) to (new
parameters, new state, loss, logits) in the default ONNX domain only, so a plain
`onnxruntime.InferenceSession` runs it on x86_64, a Raspberry Pi or a Jetson, with the CPU or the
CUDA execution provider. No training API, no torch.

No per-step copies of the parameters: two banks of buffers (A and B) hold parameters and state;
one IO binding reads A and writes B, the other reads B and writes A, and each step flips. On the
CPU a bank is one flat float32 array whose per-tensor views are the bound OrtValues (ORT reads and
writes that memory directly), so `get_weights` is one copy of that array and nothing else is
copied. Frozen tensors are bound once. Only the batch is bound per step.

Per `train()` call the optimizer state starts at zero (momentum, AdamW moments and step count), so
a local round depends only on the weights set and the config, as FedAvg/FedProx assume.

FedProx is a proximal step on the flat parameters after each optimizer step
(`base.proximal_step`, the one implementation, run in place on the bank):

    w <- w0 + (w - w0) / (1 + lr * mu)        # (num_params,) float32

the exact proximal operator of (mu / 2) * ||w - w0||^2 at step size lr. Why here and not in the
loss: the same artifacts serve every mu (the offer carries mu); mu = 0 skips it entirely, so plain
training is bit-identical; it cannot overshoot w0 for any mu; and with an adaptive optimizer a
loss-side term would be rescaled per coordinate by AdamW's second moment, while this keeps mu a
plain pull strength.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.artifacts import Artifacts
from agent.trainer.banks import Bank, make_bank
from agent.trainer.base import (
    EvalResult,
    TrainConfig,
    TrainResult,
    check_arrays,
    check_weights,
    never_stop,
    proximal_step,
)
from agent.trainer.batching import cross_entropy, macro_f1, plan_batches
from protocol.artifacts import FORWARD_MODEL, TRAIN_STEP_MODEL
from protocol.errors import DataError
from protocol.manifest import Manifest

__all__ = ["OrtStepTrainer"]

_STATE, _NEW = "state.", "new."
_LABELS, _LR, _LOSS, _LOGITS = "labels", "lr", "loss", "logits"


class OrtStepTrainer:
    name = "onnxruntime"

    def __init__(
        self,
        artifacts: Artifacts,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        """`threads`: ORT intra-op threads (0 = every core). `providers`: ORT execution
        providers in order of preference, available ones only (agent/backend.py resolves them)."""
        import onnxruntime as ort

        self._ort: Any = ort
        self.manifest: Manifest = artifacts.manifest
        options = ort.SessionOptions()
        options.log_severity_level = 3  # ORT logs graph passes at INFO/WARNING
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._step = ort.InferenceSession(
            str(artifacts.path(TRAIN_STEP_MODEL)), options, providers=list(providers)
        )
        self._forward = ort.InferenceSession(
            str(artifacts.path(FORWARD_MODEL)), options, providers=list(providers)
        )
        self.providers: tuple[str, ...] = tuple(self._step.get_providers())
        device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        m = self.manifest
        param_shapes = {p.name: p.shape for p in m.params}
        state_shapes = self._check_contract(param_shapes)
        self._params = (make_bank(ort, param_shapes, device), make_bank(ort, param_shapes, device))
        self._state = (make_bank(ort, state_shapes, device), make_bank(ort, state_shapes, device))
        frozen_shapes = {p.name: p.shape for p in m.frozen}
        self._frozen = make_bank(ort, frozen_shapes, device)
        self._frozen.write(artifacts.frozen_weights)
        self._lr = np.array(m.learning_rate, dtype=np.float32)  # () float32
        self._loss = np.zeros((), dtype=np.float32)  # () float32, written by every step
        lr_value = ort.OrtValue.ortvalue_from_numpy(self._lr)
        loss_value = ort.OrtValue.ortvalue_from_numpy(self._loss)
        self._values = (lr_value, loss_value)  # the bindings borrow them: keep them alive
        self._bindings = tuple(self._step_binding(i, lr_value, loss_value) for i in (0, 1))
        self._current = 0  # which bank holds the live parameters
        self.set_weights(artifacts.initial_weights)

    def _check_contract(
        self, param_shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, tuple[int, ...]]:
        """The step graph's inputs must be exactly what the manifest promises; returns the
        optimizer state slots (name -> shape) in graph order."""
        m = self.manifest
        inputs = {i.name: i.shape for i in self._step.get_inputs()}
        expected = [*param_shapes, *(p.name for p in m.frozen), m.input_name, _LABELS, _LR]
        state = {n: s for n, s in inputs.items() if n.startswith(_STATE)}
        missing = [n for n in expected if n not in inputs]
        unknown = [n for n in inputs if n not in expected and n not in state]
        if missing or unknown:
            raise DataError(
                f"{TRAIN_STEP_MODEL}: inputs do not match the manifest (missing {missing}, "
                f"unexpected {unknown})"
            )
        for p in (*m.params, *m.frozen):
            if tuple(inputs[p.name]) != p.shape:
                raise DataError(f"{TRAIN_STEP_MODEL}: input {p.name} has shape {inputs[p.name]}")
        if not all(isinstance(d, int) for s in state.values() for d in s):
            raise DataError(f"{TRAIN_STEP_MODEL}: optimizer state shapes must be static")
        return {n: tuple(s) for n, s in state.items()}

    def _step_binding(self, src: int, lr: Any, loss: Any) -> Any:
        """Reads bank `src`, writes bank 1 - src; the batch is bound per step."""
        binding = self._step.io_binding()
        dst = 1 - src
        for name, value in self._params[src].values.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in self._params[dst].values.items():
            binding.bind_ortvalue_output(_NEW + name, value)
        for name, value in self._state[src].values.items():  # "state.<slot>"
            binding.bind_ortvalue_input(name, value)
        for name, value in self._state[dst].values.items():
            binding.bind_ortvalue_output("new_" + name, value)  # "new_state.<slot>"
        for name, value in self._frozen.values.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_input(_LR, lr)
        binding.bind_ortvalue_output(_LOSS, loss)
        binding.bind_output(_LOGITS, "cpu")
        return binding

    @property
    def _live(self) -> Bank:
        return self._params[self._current]

    def set_weights(self, flat: np.ndarray) -> None:
        check_weights(self.manifest, flat)
        self._live.write(flat)

    def get_weights(self) -> np.ndarray:
        return self._live.read()  # (num_params,) float32, a copy

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = never_stop,
    ) -> TrainResult:
        check_arrays(self.manifest, x, y)
        start = time.perf_counter()
        self._state[self._current].zero()  # a fresh optimizer for every local round
        lr, mu = self.manifest.learning_rate, config.prox_mu
        initial = self.get_weights()  # (num_params,) the offer's weights
        steps = samples = 0
        loss_sum = 0.0
        stopped = False
        for idx in plan_batches(
            x.shape[0], config.batch_size, config.epochs, config.steps, config.seed
        ):
            if should_stop():
                stopped = True
                break
            binding = self._bindings[self._current]
            # the binding borrows these arrays' memory: hold them until the step has run
            xb, yb = x[idx], y[idx]  # (b, *input_shape), (b,)
            binding.bind_cpu_input(self.manifest.input_name, xb)
            binding.bind_cpu_input(_LABELS, yb)
            binding.bind_output(_LOGITS, "cpu")  # (b, classes): b varies, so ORT allocates
            self._step.run_with_iobinding(binding)
            loss = float(self._loss)
            if not math.isfinite(loss):  # diverged: never hand NaN weights onwards
                self.set_weights(initial)
                raise DataError(f"training diverged: loss {loss} at step {steps + 1}; restored")
            self._current = 1 - self._current
            if mu > 0:
                self._live.update(lambda w: proximal_step(w, initial, lr, mu, out=w))
            steps += 1
            samples += len(idx)
            loss_sum += loss
        return TrainResult(
            weights=self.get_weights(),
            steps=steps,
            samples=samples,
            mean_loss=loss_sum / steps if steps else math.nan,
            stopped_early=stopped,
            seconds=time.perf_counter() - start,
        )

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(n, classes) float32 logits of the current weights (the forward graph, eval mode)."""
        binding = self._forward.io_binding()
        for name, value in (*self._live.values.items(), *self._frozen.values.items()):
            binding.bind_ortvalue_input(name, value)
        parts = []
        for begin in range(0, x.shape[0], batch_size):
            xb = np.ascontiguousarray(x[begin : begin + batch_size])  # borrowed until run
            binding.bind_cpu_input(self.manifest.input_name, xb)
            binding.bind_output(_LOGITS, "cpu")  # fresh each batch: the last may be short
            self._forward.run_with_iobinding(binding)
            parts.append(binding.get_outputs()[0].numpy())  # (b, classes)
        return np.concatenate(parts)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        check_arrays(self.manifest, x, y)
        logits = self.logits(x, batch_size)  # (n, classes)
        preds = np.argmax(logits, axis=1)  # (n,)
        return EvalResult(
            loss=cross_entropy(logits, y),
            accuracy=float(np.mean(preds == y)),
            macro_f1=macro_f1(y, preds),
            samples=int(x.shape[0]),
        )
