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
    batch_dim = {i.name: i.type.tensor_type.shape.dim[0] for i in step.input}
    assert batch_dim["input"].dim_param and batch_dim["labels"].dim_param  # batch is dynamic
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
