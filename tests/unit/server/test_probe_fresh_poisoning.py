"""A fresh server is defended from its first update (outside probe, 2nd: "poisoning a fresh
server"). The adaptive norm bound needs `norm_warmup` accepted updates before it exists; ten
updates of norm 1e4 sent first were accepted unclipped and the model froze (accuracy 0.878, loss
15,035 for 400+ versions). Until the fleet has taught it how long an honest update is, the bound
is derived from the initial model (server/robust/norm_bound.py `initial_bound`).

Softmax regression on scikit-learn's digits from a small random start; ten coordinated hostile
devices send one update of norm 1e4 each (all the same direction), then honest devices train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.config import load_config
from server.core import ServerCore
from server.robust.norm_bound import initial_bound
from server.strategies import make_strategy
from tests.unit.server.factory import update_bytes
from tests.unit.server.test_probe_poisoning import (
    EXAMPLE,
    MANIFEST,
    _accuracy,
    _gradient,
)

D, C = 64, 10


def _loss(flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    w, b = flat[: D * C].reshape(D, C).astype(np.float64), flat[D * C :].astype(np.float64)
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    return x[order[360:]], y[order[360:]], x[order[:360]], y[order[:360]]


def _strategy(name: str) -> tuple[str, dict[str, object], dict[str, object] | None]:
    cfg = load_config(EXAMPLE)
    if name == "example":  # the documented deployment: FedBuff K=10, cosine, norm bound
        return cfg.strategy, dict(cfg.strategy_params), cfg.staleness or None
    return "fedasync", {"alpha": 0.5}, None


@pytest.mark.parametrize("name", ["example", "fedasync"])
def test_ten_huge_updates_first_cannot_poison_a_fresh_server(
    tmp_path: Path, digits: tuple[np.ndarray, ...], name: str
) -> None:
    x, y, xt, yt = digits
    cfg = load_config(EXAMPLE)
    strategy_name, params, staleness = _strategy(name)
    strategy = make_strategy(strategy_name, params, staleness, cfg.robust)  # the default defence
    rng = np.random.default_rng(3)
    initial = (0.01 * rng.standard_normal(D * C + C)).astype(np.float32)  # a fresh model
    core = ServerCore(MANIFEST, initial, strategy, tmp_path, cfg.admission)
    core.recover()
    bound = initial_bound(initial)
    direction = rng.standard_normal(D * C + C)
    hostile = (1e4 * direction / np.linalg.norm(direction)).astype(np.float32)
    steps: list[float] = []
    for i in range(10):
        before = core.model.copy()
        payload = update_bytes(MANIFEST, hostile, device=f"evil-{i}", seq=1, base=core.version)
        assert core.handle(f"evil-{i}", payload).ack.accepted  # clipped, not refused
        steps.append(float(np.linalg.norm((core.model - before).astype(np.float64))))
    # no single step, and not the ten together, moves the model more than the warm-up bound
    # allows: ten clipped updates, aggregated, at most 10 x bound
    assert max(steps) <= 10 * bound * (1 + 1e-5), (steps, bound)
    moved = float(np.linalg.norm((core.model - initial).astype(np.float64)))
    assert moved <= 10 * bound * (1 + 1e-5), (moved, bound)
    poisoned_loss = _loss(core.model, xt, yt)
    slices = np.array_split(rng.permutation(len(y)), 40)
    seqs = dict.fromkeys(range(40), 0)
    for step in range(400):  # honest devices: a few local SGD steps each
        dev = step % 40
        seqs[dev] += 1
        local = core.model.copy()
        for _ in range(5):
            local -= np.float32(0.5) * _gradient(local, x[slices[dev]], y[slices[dev]])
        payload = update_bytes(
            MANIFEST, local - core.model, device=f"dev-{dev}", seq=seqs[dev], base=core.version
        )
        core.handle(f"dev-{dev}", payload)
    loss, accuracy = _loss(core.model, xt, yt), _accuracy(core.model, xt, yt)
    core.close()
    print(f"{name}: bound {bound:.3f}, steps {max(steps):.3f}, poisoned loss {poisoned_loss:.2f}")
    print(f"{name}: after honest training loss {loss:.3f}, accuracy {accuracy:.3f}")
    assert np.isfinite(poisoned_loss) and poisoned_loss < 10.0  # the probe: 15,035
    assert accuracy > 0.9 and loss < 0.5  # the fleet recovers (the probe: frozen at 0.878)
