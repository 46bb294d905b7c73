"""The local optimiser a zoo model is exported with unless told otherwise, and each one's rate.

Torch-free, so the demo can name the export it caches without importing torch.

SGD is the default for federated training. A device trains a few steps per session (the
simulator: 32 samples in batches of 8, 4 steps) and the step graph starts every session with
fresh optimiser state, so AdamW's first bias-corrected steps are m / sqrt(v) = g / |g|: every
parameter moves ~lr per step whatever the size of its gradient. On a label-skewed device that
turns a small pull toward its own classes into a full-size one in every coordinate.
Measured (benchmarks/parity.py, recommended strategy, default defence, the six Dirichlet 0.1
rows of sensor, digits and iris, seeds 0 and 1; results/parity.json, parity_seed1.json): SGD lr
0.1 met 11 of 12 (worst 0.94x central, swing <= 1.3 points) against AdamW lr 0.01's 5 of 12
(worst 0.69x, swings up to 9.9); central accuracy with either optimiser was within 0.01 on those
rows. The server's optimiser (FedBuff's server lr, FedAdam, ...) is where adaptivity belongs
(Reddi et al., ICLR 2021: SGD on clients, adaptive steps on the server).
"""

from __future__ import annotations

__all__ = ["DEFAULT_OPTIMIZER", "LEARNING_RATES", "default_learning_rate"]

DEFAULT_OPTIMIZER = "sgd"
# sgd: the usual starting rate for small MLPs and CNNs without normalisation layers;
# adamw: its usual default (a LoRA adapter export has its own, models/minilm_export.py)
LEARNING_RATES = {"sgd": 0.1, "adamw": 1e-3}


def default_learning_rate(optimizer: str) -> float:
    """The rate an export of `optimizer` gets when none is given; ValueError names the choices."""
    try:
        return LEARNING_RATES[optimizer]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {optimizer!r} (choose from {sorted(LEARNING_RATES)})"
        ) from None
