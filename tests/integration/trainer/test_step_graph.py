"""The exported step graph: default ONNX domain only, dynamic batch, frozen backbone."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from agent.artifacts import load_artifacts
from agent.trainer import TrainConfig, load_trainer
from protocol.artifacts import FORWARD_MODEL, FROZEN_WEIGHTS, INFERENCE_MODEL, TRAIN_STEP_MODEL
from protocol.errors import DataError
from tests.support.artifacts import digits_arrays, exported_artifacts

pytestmark = pytest.mark.integration
ZOO = [("mlp", (64,)), ("cnn1d", (3, 32)), ("cnn2d", (1, 8, 8))]


@pytest.mark.parametrize(("model", "shape"), ZOO)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_step_graph_has_only_default_domain_ops(
    model: str, shape: tuple[int, ...], optimizer: str
) -> None:
    momentum = 0.9 if optimizer == "sgd" else 0.0
    folder = exported_artifacts(model, shape, 10, optimizer=optimizer, momentum=momentum)
    for name in (TRAIN_STEP_MODEL, FORWARD_MODEL, INFERENCE_MODEL):
        graph = onnx.load(str(folder / name))
        domains = {node.domain for node in graph.graph.node}
        assert domains == {""}, (name, domains)  # no com.microsoft gradient/optimizer ops
        assert [o.domain for o in graph.opset_import] == [""], name
        assert not graph.functions, name  # nothing hidden in local functions either
    step = onnx.load(str(folder / TRAIN_STEP_MODEL)).graph
    dims = {i.name: i.type.tensor_type.shape.dim for i in step.input}
    assert dims["input"][0].dim_param and dims["labels"][0].dim_param  # batch is dynamic
    assert len(dims["lr"]) == 0  # a scalar
    ops = {n.op_type for n in step.node}
    assert "Gemm" in ops or "MatMul" in ops
    if model != "mlp":
        assert "ConvTranspose" in ops  # convolution_backward, decomposed


def test_frozen_backbone_head_travels_alone_and_the_backbone_never_moves() -> None:
    full = load_artifacts(exported_artifacts("cnn2d", (1, 8, 8), 10))
    head = load_artifacts(exported_artifacts("cnn2d", (1, 8, 8), 10, trainable="head"))
    m = head.manifest
    assert [p.name for p in m.params] == ["7.weight", "7.bias"]  # the final Linear
    assert [p.name for p in m.frozen] == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert m.extra["trainable"] == "head"
    assert m.num_params + m.num_frozen == full.manifest.num_params
    assert m.num_params == 10 * 32 * 2 * 2 + 10  # 1,290 of 6,250 travel
    # the same seed gives the same model: frozen + trainable = the full export's weights
    full_named = full.manifest.split(full.initial_weights)
    frozen_named = dict(
        zip(
            [p.name for p in m.frozen],
            np.split(head.frozen_weights, np.cumsum([p.size for p in m.frozen])[:-1]),
            strict=True,
        )
    )
    for spec in m.frozen:
        np.testing.assert_array_equal(
            frozen_named[spec.name].reshape(spec.shape), full_named[spec.name]
        )

    x, y, x_test, y_test = digits_arrays((1, 8, 8))
    trainer = load_trainer(head.dir, threads=1)
    before = trainer.evaluate(x_test, y_test)
    result = trainer.train(x, y, TrainConfig(epochs=8, batch_size=32))
    after = trainer.evaluate(x_test, y_test)
    print(f"\ncnn2d head only: accuracy {before.accuracy:.3f} -> {after.accuracy:.3f}")
    assert result.weights.shape == (1290,)
    assert after.accuracy > before.accuracy + 0.3  # a random conv backbone still helps a head
    # the backbone never moved: the inference model with the trained head gives the same logits
    session = onnxruntime.InferenceSession(
        str(head.dir / INFERENCE_MODEL), providers=["CPUExecutionProvider"]
    )
    tensors = m.split(result.weights)
    names = [i.name for i in session.get_inputs()]
    assert names == ["input"]
    from agent.personal import patch_initializers  # the device-side patcher, no onnx package

    patched = patch_initializers((head.dir / INFERENCE_MODEL).read_bytes(), tensors)
    session = onnxruntime.InferenceSession(patched, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x_test})
    expected = trainer.logits(x_test)  # type: ignore[attr-defined]  # OrtStepTrainer
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_tampered_frozen_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "art"
    shutil.copytree(exported_artifacts("cnn2d", (1, 8, 8), 10, trainable="head"), folder)
    data = bytearray((folder / FROZEN_WEIGHTS).read_bytes())
    data[-1] ^= 1
    (folder / FROZEN_WEIGHTS).write_bytes(bytes(data))
    assert hashlib.sha256(bytes(data)).hexdigest() != load_manifest_hash(folder)
    with pytest.raises(DataError, match=r"frozen_weights\.npy: sha256"):
        load_artifacts(folder)


def load_manifest_hash(folder: Path) -> str:
    import json

    return str(json.loads((folder / "manifest.json").read_text())["files"][FROZEN_WEIGHTS])


def test_trainable_names_and_patterns(tmp_path: Path) -> None:
    from models.export import export_artifacts

    m = export_artifacts("cnn1d", (3, 16), 4, tmp_path / "a", trainable="3,*.bias")
    assert [p.name for p in m.params] == ["0.bias", "3.weight", "3.bias", "7.bias"]
    with pytest.raises(ValueError, match="'nope' names no parameter"):
        export_artifacts("cnn1d", (3, 16), 4, tmp_path / "b", trainable="nope")


def test_a_lora_transformer_block_exports_and_steps_like_torch() -> None:
    """The exporter is generic: LayerNorm, GELU, softmax attention, a buffer, LoRA adapters as the
    trainable subset (what a pretrained text encoder will need), one AdamW step vs torch."""
    import torch
    from torch import nn

    from models.optimizers import OptimizerSpec
    from models.step_graph import export_step_graphs

    class LoRALinear(nn.Module):
        def __init__(self, i: int, o: int, r: int = 4) -> None:
            super().__init__()
            self.base = nn.Linear(i, o)
            self.lora_A = nn.Parameter(torch.randn(r, i) * 0.1)
            self.lora_B = nn.Parameter(torch.randn(o, r) * 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_A.T) @ self.lora_B.T

    class Net(nn.Module):
        def __init__(self, d: int = 16, heads: int = 2) -> None:
            super().__init__()
            self.heads = heads
            self.inp = nn.Linear(8, d)
            self.register_buffer("pos", torch.randn(6, d) * 0.1)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v = LoRALinear(d, d), nn.Linear(d, d), LoRALinear(d, d)
            self.ff = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
            self.head = nn.Linear(d, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, 6, 8) -> (b, 3)
            h = self.inp(x) + self.pos
            b, t, d = h.shape
            y = self.ln1(h)

            def split(z: torch.Tensor) -> torch.Tensor:
                return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

            q, k, v = split(self.q(y)), split(self.k(y)), split(self.v(y))
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            h = h + (att @ v).transpose(1, 2).reshape(b, t, d)
            h = h + self.ff(self.ln2(h))
            out: torch.Tensor = self.head(h.mean(1))
            return out

    torch.manual_seed(0)
    net = Net()
    trainable = [n for n, _ in net.named_parameters() if "lora_" in n or n.startswith("head")]
    graphs = export_step_graphs(net, torch.zeros(2, 6, 8), trainable, OptimizerSpec("adamw"))
    model = onnx.load_from_string(graphs.train_step)
    assert {n.domain for n in model.graph.node} == {""}
    assert {"LayerNormalization", "Erf", "Softmax"} <= {n.op_type for n in model.graph.node}

    session = onnxruntime.InferenceSession(graphs.train_step, providers=["CPUExecutionProvider"])
    params = dict(net.named_parameters())
    feed = {n: t.detach().numpy().copy() for n, t in params.items()} | {"pos": net.pos.numpy()}
    for i in session.get_inputs():
        if i.name.startswith("state."):
            feed[i.name] = np.zeros(i.shape, np.float32)
    rng = np.random.default_rng(0)
    x = rng.random((5, 6, 8), dtype=np.float32)  # another batch size than the export's
    y = rng.integers(0, 3, 5).astype(np.int64)
    feed |= {"input": x, "labels": y, "lr": np.array(1e-2, np.float32)}
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    opt = torch.optim.AdamW([params[n] for n in trainable], lr=1e-2)
    loss = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    assert abs(float(out["loss"]) - loss.item()) < 1e-5
    for name in trainable:
        expected = params[name].detach().numpy()
        np.testing.assert_allclose(out["new." + name], expected, rtol=1e-5, atol=1e-6)
