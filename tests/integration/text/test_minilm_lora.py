"""The text model's step graph: attention, LayerNorm and erf-GELU train on stock ONNX Runtime.

A test-sized encoder of the MiniLM architecture (same tokenizer and vocabulary, two narrow
layers, random weights: seconds to export instead of minutes) with LoRA adapters on query and
value and a head. Only adapters and head are trainable; the backbone ships frozen.
"""

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from agent.artifacts import load_artifacts
from agent.data import load_device_data
from agent.trainer import TrainConfig, load_trainer, plan_batches
from fleet.smarthome import INTENTS, write_smarthome
from models.minilm import MiniLMClassifier
from models.minilm_export import TINY_CONFIG, export_minilm_lora
from protocol.artifacts import TRAIN_STEP_MODEL
from protocol.errors import DataError

pytestmark = pytest.mark.integration
CLASSES = len(INTENTS)
MAX_LENGTH = 16


@functools.cache
def _exported(optimizer: str, root: str) -> Path:
    out = Path(root) / f"minilm-{optimizer}"
    lr = 0.05 if optimizer == "sgd" else 1e-3
    export_minilm_lora(
        out,
        CLASSES,
        rank=4,
        alpha=8.0,
        max_length=MAX_LENGTH,
        optimizer=optimizer,
        learning_rate=lr,
        pretrained=False,
        seed=3,
    )
    return out


@pytest.fixture(scope="module")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_smarthome(tmp_path_factory.mktemp("homes"), 3, train_per_home=48, seed=5)


def test_step_graph_is_default_domain_and_holds_attention_layernorm_gelu(export_root: str) -> None:
    model = onnx.load(str(Path(_exported("adamw", export_root)) / TRAIN_STEP_MODEL))
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert {domain for domain, _ in ops} == {""}
    kinds = {op for _, op in ops}
    assert {"Softmax", "Erf", "MatMul"} <= kinds  # attention and exact GELU
    assert "LayerNormalization" in kinds or {"ReduceMean", "Sqrt"} <= kinds


def test_only_adapters_and_head_travel(export_root: str) -> None:
    manifest = load_artifacts(_exported("adamw", export_root)).manifest
    names = [p.name for p in manifest.params]
    assert names and all(".lora_" in n or n.startswith("head.") for n in names)
    assert manifest.num_frozen > 20 * manifest.num_params  # the backbone stays home
    assert manifest.input_dtype == "int64" and manifest.input_shape == (MAX_LENGTH,)
    assert manifest.tokenizer is not None and manifest.tokenizer in manifest.files


def test_device_reads_and_tokenises_its_jsonl(export_root: str, homes: list[Path]) -> None:
    artifacts = load_artifacts(_exported("adamw", export_root))
    data = load_device_data(homes[0], artifacts.manifest, artifacts.dir)
    assert data.train_x.dtype == np.int64 and data.train_x.shape == (48, MAX_LENGTH)
    assert data.test_x is not None and data.test_x.shape[1] == MAX_LENGTH
    assert (data.train_x[:, 0] == 101).all()  # [CLS] first, then words, then [PAD] = 0
    lines = (homes[0] / "train.jsonl").read_text().splitlines()
    assert data.train_y.tolist() == [json.loads(line)["label"] for line in lines]


def test_a_bad_line_is_named(export_root: str, tmp_path: Path) -> None:
    artifacts = load_artifacts(_exported("adamw", export_root))
    (tmp_path / "train.jsonl").write_text('{"text": "lights on", "label": 0}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: 'text' must be a non-empty string"):
        load_device_data(tmp_path, artifacts.manifest, artifacts.dir)
    (tmp_path / "train.jsonl").write_text(f'{{"text": "x", "label": {CLASSES}}}\n')
    with pytest.raises(DataError, match="outside"):
        load_device_data(tmp_path, artifacts.manifest, artifacts.dir)


@pytest.mark.parametrize(
    ("optimizer", "make_opt"),
    [
        ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.05)),
        ("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-3)),
    ],
)
def test_steps_match_torch_with_the_same_lora(
    optimizer: str, make_opt: object, export_root: str, homes: list[Path]
) -> None:
    folder = _exported(optimizer, export_root)
    trainer = load_trainer(folder, threads=1)
    manifest = trainer.manifest
    data = load_device_data(homes[1], manifest, folder)
    x, y = data.train_x, data.train_y
    config = TrainConfig(steps=10, batch_size=16, seed=2)
    w0 = trainer.get_weights()
    ort_weights = trainer.train(x, y, config).weights

    torch.manual_seed(3)  # the export's seed and construction order: same frozen backbone
    net = MiniLMClassifier(TINY_CONFIG, CLASSES)
    net.add_lora(4, 8.0, ("query", "value"))
    trained = {p.name for p in manifest.params}
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name in trained:
                param.copy_(torch.from_numpy(manifest.split(w0)[name].copy()))
            param.requires_grad_(name in trained)
    opt = make_opt([p for n, p in net.named_parameters() if n in trained])  # type: ignore[operator]
    for idx in plan_batches(len(y), config.batch_size, config.epochs, config.steps, config.seed):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        loss.backward()
        opt.step()
    torch_weights = manifest.flatten(
        {n: p.detach().numpy() for n, p in net.named_parameters() if n in trained}
    )
    assert np.abs(torch_weights - w0).max() > 1e-4  # training moved the adapters and head
    worst = max(
        float(
            np.abs(
                manifest.split(ort_weights)[s.name] - manifest.split(torch_weights)[s.name]
            ).max()
            / np.abs(manifest.split(torch_weights)[s.name]).max()
        )
        for s in manifest.params
    )
    print(f"\nminilm-lora (test-sized) {optimizer}: max rel diff after 10 steps {worst:.2e}")
    assert worst < 1e-4


def test_simulator_trains_the_text_model_on_smart_home_households(
    export_root: str, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    folder = _exported("adamw", export_root)
    env = {**os.environ, "PYTHONPATH": str(root)}
    data, out = tmp_path / "homes", tmp_path / "sim"
    prep = [sys.executable, "-m", "fleetlearn", "smarthome", "--out", str(data),
            "--households", "6", "--artifacts", str(folder)]  # fmt: skip
    done = subprocess.run(
        prep, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(data / "household-000" / "train.npz") as npz:
        assert npz["x"].dtype == np.int64 and npz["x"].shape == (40, MAX_LENGTH)
    sim = [sys.executable, "-m", "fleetlearn", "simulate", "--data", str(data),
           "--artifacts", str(folder), "--devices", "6", "--concurrency", "3",
           "--duration", "10m", "--strategy", "fedbuff:3", "--target", "0.5",
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(
        sim, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads((out / "report.json").read_text())["per_seed"]["0"]["runs"]
    (run,) = runs.values()
    print(f"\nsimulated text fleet: {run}")
    assert run["updates_accepted"] > 0 and run["rejected"] == {}  # int64 token ids train
