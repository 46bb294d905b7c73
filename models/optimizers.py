"""Optimizer updates as pure tensor functions, traced into the training-step graph.

Each mirrors `torch.optim`'s single-tensor CPU path operation for operation (same formulas, same
order), so 50 exported steps match torch to float32 rounding. State is explicit: one tensor per
slot (the step graph takes it as inputs and returns the new values), all slots start at zero, so
a device starts a local round from `zeros` without knowing the optimizer.

    sgd    state: momentum buffer per parameter (none when momentum == 0)
    adamw  state: step count (one scalar), exp_avg and exp_avg_sq per parameter

Hyperparameters other than the learning rate are constants of the graph (recorded in the
manifest); the learning rate is a graph input so a server may change it without a re-export.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["OPTIMIZERS", "OptimizerSpec", "StateSlot", "apply_update", "state_slots"]

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adamw"
    momentum: float = 0.0  # sgd only; torch's default
    betas: tuple[float, float] = (0.9, 0.999)  # adamw; torch's defaults
    eps: float = 1e-8  # adamw; torch's default
    weight_decay: float = -1.0  # -1: the optimizer's torch default (sgd 0, adamw 0.01)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.name!r}; choose from {', '.join(OPTIMIZERS)}"
            )
        if self.weight_decay == -1.0:
            object.__setattr__(self, "weight_decay", 0.01 if self.name == "adamw" else 0.0)
        if not (0 <= self.momentum < 1 and self.weight_decay >= 0 and self.eps > 0):
            raise ValueError(f"bad optimizer hyperparameters: {self}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"adamw betas must be in [0, 1), got {self.betas}")

    def describe(self) -> dict[str, Any]:
        """For the manifest: only the hyperparameters this optimizer uses."""
        out = asdict(self)
        if self.name == "sgd":
            del out["betas"], out["eps"]
        else:
            del out["momentum"]
        out["betas"] = list(out["betas"]) if "betas" in out else None
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class StateSlot:
    name: str  # graph input "state.<name>", output "new_state.<name>"
    shape: tuple[int, ...]


def state_slots(spec: OptimizerSpec, params: dict[str, tuple[int, ...]]) -> list[StateSlot]:
    """The optimizer state, in graph order, for trainable parameters `params` (name -> shape)."""
    if spec.name == "sgd":
        if spec.momentum == 0:
            return []
        return [StateSlot(f"momentum.{n}", s) for n, s in params.items()]
    return [
        StateSlot("step", ()),
        *(StateSlot(f"exp_avg.{n}", s) for n, s in params.items()),
        *(StateSlot(f"exp_avg_sq.{n}", s) for n, s in params.items()),
    ]


def _sgd(
    spec: OptimizerSpec, params: list[torch.Tensor], grads: list[torch.Tensor],
    state: list[torch.Tensor], lr: torch.Tensor,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
    new_params, new_state = [], []
    for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
        d_p = grad + spec.weight_decay * p if spec.weight_decay else grad
        if spec.momentum:
            d_p = state[i] * spec.momentum + d_p  # zero start = torch's clone(grad) on step 1
            new_state.append(d_p)
        new_params.append(p - lr * d_p)
    return new_params, new_state


def _adamw(
    spec: OptimizerSpec, params: list[torch.Tensor], grads: list[torch.Tensor],
    state: list[torch.Tensor], lr: torch.Tensor,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
    beta1, beta2 = spec.betas
    n = len(params)
    step = state[0] + 1.0  # () float32
    exp_avgs, exp_avg_sqs = state[1 : 1 + n], state[1 + n :]
    bias_correction1 = 1.0 - torch.pow(beta1, step)
    bias_correction2_sqrt = torch.sqrt(1.0 - torch.pow(beta2, step))
    step_size = lr / bias_correction1
    new_params, new_m, new_v = [], [], []
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        decayed = p * (1.0 - lr * spec.weight_decay)  # decoupled weight decay, as torch
        m_new = torch.lerp(m, g, 1.0 - beta1)
        v_new = v * beta2 + (1.0 - beta2) * (g * g)
        denom = torch.sqrt(v_new) / bias_correction2_sqrt + spec.eps
        new_params.append(decayed - step_size * (m_new / denom))
        new_m.append(m_new)
        new_v.append(v_new)
    return new_params, [step, *new_m, *new_v]


def apply_update(
    spec: OptimizerSpec,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: list[torch.Tensor],
    lr: torch.Tensor,  # () float32
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(new parameters, new state), state in `state_slots` order."""
    if spec.name == "sgd":
        return _sgd(spec, params, grads, state, lr)
    return _adamw(spec, params, grads, state, lr)
