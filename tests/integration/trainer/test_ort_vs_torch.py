"""ORT training equals torch training: same initial weights, same batches, plain SGD, 50 steps.

This proves the exported graphs, the loss and the manifest's flat order are right.
"""

import numpy as np
import pytest
import torch

from agent.trainer import TrainConfig, load_trainer, plan_batches
from models.zoo import build_model
from tests.support.artifacts import digits_arrays, exported_artifacts

pytestmark = pytest.mark.integration
LR = 0.05


@pytest.mark.parametrize(("model", "shape"), [("mlp", (64,)), ("cnn2d", (1, 8, 8))])
def test_fifty_sgd_steps_match_torch(model: str, shape: tuple[int, ...]) -> None:
    folder = exported_artifacts(model, shape, 10, optimizer="sgd", learning_rate=LR)
    trainer = load_trainer(folder)
    manifest = trainer.manifest
    assert manifest.optimizer == "sgd"
    x, y, _, _ = digits_arrays(shape)
    config = TrainConfig(steps=50, batch_size=32, seed=11)
    w0 = trainer.get_weights()
    ort_weights = trainer.train(x, y, config).weights

    net = build_model(model, shape, 10)  # any init: weights come from the flat vector
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(torch.from_numpy(manifest.split(w0)[name].copy()))
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = 0
    for idx in plan_batches(len(y), config.batch_size, config.epochs, config.steps, config.seed):
        opt.zero_grad()
        loss_fn(net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
        opt.step()
        steps += 1
    assert steps == 50
    torch_weights = manifest.flatten({n: p.detach().numpy() for n, p in net.named_parameters()})

    moved = np.abs(torch_weights - w0).max()
    assert moved > 1e-2  # training really moved the weights
    # per parameter: max |ort - torch| relative to that parameter's largest magnitude
    for spec in manifest.params:
        a, b = manifest.split(ort_weights)[spec.name], manifest.split(torch_weights)[spec.name]
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        print(f"{model} {spec.name}: max rel diff {rel:.2e}")
        assert rel < 1e-4, spec.name
