"""The exported training step on stock ONNX Runtime equals torch.optim, step for step.

Same initial weights, same batches, 50 steps, for every zoo model and the frozen-backbone head,
with SGD (momentum 0.9) and AdamW (torch's defaults). This proves the step graph (forward,
backward, optimizer update), the frozen/trainable split and the manifest's flat order. The
numbers are printed (`pytest -s`) for the issue note.
"""

import numpy as np
import pytest
import torch

from agent.trainer import TrainConfig, load_trainer, plan_batches
from models.zoo import build_model
from tests.support.artifacts import digits_arrays, exported_artifacts, sensor_arrays

pytestmark = pytest.mark.integration
STEPS = 50
CASES = [  # (model, input shape, trainable)
    ("mlp", (64,), "all"),
    ("cnn1d", (3, 32), "all"),
    ("cnn2d", (1, 8, 8), "all"),
    ("cnn2d", (1, 8, 8), "head"),
]
OPTIMIZERS = {  # name -> (export arguments, torch optimizer factory)
    "sgd": (
        {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9},
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    ),
    "adamw": (
        {"optimizer": "adamw", "learning_rate": 1e-3},
        lambda ps: torch.optim.AdamW(ps, lr=1e-3),
    ),
}


def _data(model: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    if model == "cnn1d":
        x, y = sensor_arrays(n=400, channels=shape[0], length=shape[1], classes=10, seed=0)
        return x, y
    x, y, _, _ = digits_arrays(shape)
    return x, y


def _max_rel_diff(
    model: str, shape: tuple[int, ...], trainable: str, optimizer: str, steps: int
) -> float:
    """Max over parameters of max |ort - torch| / max |torch| after `steps` steps."""
    export_args, make_opt = OPTIMIZERS[optimizer]
    folder = exported_artifacts(model, shape, 10, trainable=trainable, **export_args)
    trainer = load_trainer(folder, threads=1)
    manifest = trainer.manifest
    x, y = _data(model, shape)
    config = TrainConfig(steps=steps, batch_size=32, seed=11)
    w0 = trainer.get_weights()
    ort_weights = trainer.train(x, y, config).weights

    torch.manual_seed(0)  # the export's seed: the frozen backbone gets the same values
    net = build_model(model, shape, 10)
    trained = {p.name for p in manifest.params}
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name in trained:
                param.copy_(torch.from_numpy(manifest.split(w0)[name].copy()))
            param.requires_grad_(name in trained)
    opt = make_opt([p for n, p in net.named_parameters() if n in trained])
    loss_fn = torch.nn.CrossEntropyLoss()
    for idx in plan_batches(len(y), config.batch_size, config.epochs, config.steps, config.seed):
        opt.zero_grad()
        loss_fn(net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
        opt.step()
    named = {n: p.detach().numpy() for n, p in net.named_parameters() if n in trained}
    torch_weights = manifest.flatten(named)
    assert np.abs(torch_weights - w0).max() > 1e-3  # training really moved the weights
    worst = 0.0
    for spec in manifest.params:
        a, b = manifest.split(ort_weights)[spec.name], manifest.split(torch_weights)[spec.name]
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    return worst


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize(("model", "shape", "trainable"), CASES)
def test_steps_match_torch_optim(
    model: str, shape: tuple[int, ...], trainable: str, optimizer: str
) -> None:
    """20 steps: float32 rounding only (< 1e-5; a missing weight decay alone would be 2e-4).
    50 steps: < 1e-3, because a ReLU or max-pool input that rounds across a decision boundary
    sends one step down another path, and AdamW's normalised update carries that at full size
    (seen on cnn1d between steps 30 and 35: 1.7e-6 -> 7.6e-5; FACTS.md saw it on mlp with SGD)."""
    short = _max_rel_diff(model, shape, trainable, optimizer, 20)
    full = _max_rel_diff(model, shape, trainable, optimizer, STEPS)
    print(
        f"\n{model} trainable={trainable} {optimizer}: max rel diff 20 steps {short:.2e}, "
        f"{STEPS} steps {full:.2e}"
    )
    assert short < 1e-5
    assert full < 1e-3
