"""The local optimiser a zoo model is exported with unless told otherwise, and each one's rate.

Torch-free, so the demo can name the export it caches without importing torch.

SGD at lr 0.3 is the default for federated training. A device trains a few steps per session
(the simulator: 32 samples in batches of 8, 4 steps) and the step graph starts every session with
fresh optimiser state, so AdamW's first bias-corrected steps are m / sqrt(v) = g / |g|: every
parameter moves ~lr per step whatever the size of its gradient. On a label-skewed device that
turns a small pull toward its own classes into a full-size step in every coordinate. With SGD a
delta is proportional to the device's gradient; adaptivity belongs to the server's optimiser
(Reddi et al., ICLR 2021: SGD on clients, adaptive steps on the server).
Measured (benchmarks/parity.py, recommended strategy, default defence, 5 data sets x 4 fleets,
results/parity*.json; benchmarks/fleet.py's 1,000 devices, serving model's time to target against
the kept AdamW FedAvg baseline, results/fleet.json's levers; held-out seeds 3-5 scratch runs):
    local optimizer   parity seeds 0 / 1       parity seed 2 (held out)   fleet seeds 0-2 / 3-5
    AdamW lr 0.01     16/20, 17/20, 0.69x      13/20, 0.58x               5.40x / 4.31x
    SGD lr 0.1        19/20, 20/20, 0.94x      17/20 (scratch)            3.62x / -
    SGD lr 0.3        20/20, 20/20, 0.97x      18/20, 0.67x               6.34x / 5.44x
(rows meeting >= 0.95x central with swing < 2 points, worst ratio). The rate was chosen on seeds
0-1 (parity) and 0-2 (fleet) and checked on the held-out seeds; docs/performance.md, "The local
optimizer: SGD by default", has the rest. A cnn2d (no normalisation layers) on 8x8 digits trained
at 0.3 without diverging (scratch); LoRA adapters keep AdamW (models/minilm_export.py).
"""

from __future__ import annotations

__all__ = ["DEFAULT_OPTIMIZER", "LEARNING_RATES", "default_learning_rate"]

DEFAULT_OPTIMIZER = "sgd"
# sgd: measured above (0.3 beat 0.1 on every benchmark here; larger or normalised models may
# want less: `fleetlearn export --lr`); adamw: its usual default (LoRA: models/minilm_export.py)
LEARNING_RATES = {"sgd": 0.3, "adamw": 1e-3}


def default_learning_rate(optimizer: str) -> float:
    """The rate an export of `optimizer` gets when none is given; ValueError names the choices."""
    try:
        return LEARNING_RATES[optimizer]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {optimizer!r} (choose from {sorted(LEARNING_RATES)})"
        ) from None
