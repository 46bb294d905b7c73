"""Replay of the outside probe's poisoning case (issue 15, defect 2) through the real server core.

A trained model (softmax regression on scikit-learn's digits, ~0.96 accuracy); honest devices
send small local-SGD deltas (L2 ~0.006, as in the probe); one hostile device sends three updates
of random direction and L2 norm 99, inside the example config's fixed bound of 100. The probe saw
accuracy fall from 0.969 to 0.54. With the configuration in `server/example.toml` (the default
defence) accuracy must stay within 2 points; the control run without the defence shows the
attack is real (this test fails if robust aggregation is switched off).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol.manifest import Manifest, ParamSpec
from server.config import load_config
from server.core import ServerCore
from server.strategies import make_strategy
from tests.unit.server.factory import update_bytes

EXAMPLE = Path(__file__).resolve().parents[3] / "server" / "example.toml"
D, C = 64, 10
MANIFEST = Manifest(
    model_name="softmax",
    params=(ParamSpec("w", (D, C)), ParamSpec("b", (C,))),
    input_name="x",
    input_shape=(D,),
    num_classes=C,
)


def _split(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return flat[: D * C].reshape(D, C), flat[D * C :]


def _accuracy(flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    w, b = _split(flat)
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def _gradient(flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    w, b = _split(flat)
    logits = x @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return np.concatenate([(x.T @ p).ravel(), p.sum(axis=0)]).astype(np.float32)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:360], order[360:]
    model = np.zeros(D * C + C, np.float32)
    for _ in range(400):  # full-batch gradient descent: ~0.96 held-out accuracy
        model -= np.float32(1.0) * _gradient(model, x[train], y[train])
    return x[train], y[train], x[test], y[test], model


def _run(
    tmp: Path, digits: tuple[np.ndarray, ...], robust: dict[str, object] | None
) -> tuple[float, float, list[str]]:
    """(accuracy before, accuracy after, the hostile device's ack reasons)."""
    x, y, xt, yt, trained = digits
    cfg = load_config(EXAMPLE)  # the documented deployment: FedBuff K=10, max_norm 100, ...
    strategy = make_strategy(cfg.strategy, cfg.strategy_params, cfg.staleness or None, robust)
    core = ServerCore(MANIFEST, trained, strategy, tmp, cfg.admission)
    core.recover()
    rng = np.random.default_rng(7)
    slices = np.array_split(rng.permutation(len(y)), 40)  # 40 honest devices
    seqs = dict.fromkeys(range(40), 0)
    before = _accuracy(core.model, xt, yt)
    reasons, evil_seq = [], 0
    for step in range(60):
        if step in (0, 15, 30):  # the probe's three norm-99 updates, into different buffers
            evil_seq += 1
            v = rng.standard_normal(D * C + C)
            delta = (99.0 * v / np.linalg.norm(v)).astype(np.float32)
            payload = update_bytes(MANIFEST, delta, device="evil", seq=evil_seq, base=core.version)
            ack = core.handle("evil", payload).ack
            reasons.append(ack.reason.value if not ack.accepted else "accepted")
        dev = step % 40
        seqs[dev] += 1
        idx = slices[dev]
        delta = -np.float32(0.02) * _gradient(core.model, x[idx], y[idx])  # one local SGD step
        payload = update_bytes(
            MANIFEST, delta, device=f"dev-{dev}", seq=seqs[dev], base=core.version
        )
        assert core.handle(f"dev-{dev}", payload).ack.accepted
    after = _accuracy(core.model, xt, yt)
    core.close()
    return before, after, reasons


def test_honest_updates_are_as_small_as_the_probes(digits: tuple[np.ndarray, ...]) -> None:
    x, y, _, _, trained = digits
    norm = float(np.linalg.norm(0.02 * _gradient(trained, x[:40], y[:40])))
    assert 0.001 < norm < 0.05  # the probe measured ~0.006


def test_probe_poisoning_is_contained_by_the_default_defence(
    tmp_path: Path, digits: tuple[np.ndarray, ...]
) -> None:
    before, after, reasons = _run(tmp_path / "defended", digits, robust=load_config(EXAMPLE).robust)
    print(f"default defence: {before:.3f} -> {after:.3f}, hostile acks {reasons}")
    assert before > 0.94
    assert after >= before - 0.02, f"accuracy {before:.3f} -> {after:.3f} ({reasons})"


def test_probe_poisoning_without_the_defence_breaks_the_model(
    tmp_path: Path, digits: tuple[np.ndarray, ...]
) -> None:
    """The control: the same replay with robust aggregation off reproduces the probe's damage."""
    before, after, reasons = _run(tmp_path / "open", digits, robust=None)
    print(f"no defence: {before:.3f} -> {after:.3f}")
    assert reasons == ["accepted"] * 3
    assert after < before - 0.2, f"accuracy {before:.3f} -> {after:.3f}"
