"""Inference files built from flat weights load in a plain onnxruntime session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.personal import ModelKind, PersonalModels, patch_initializers
from protocol.errors import DataError
from protocol.manifest import Manifest, ParamSpec

MANIFEST = Manifest("lin", (ParamSpec("w", (4, 3)), ParamSpec("b", (3,))), "x", (4,), 3)


def template(path: Path, float_data: bool = False) -> Path:
    """x @ w + b with w, b as initializers (one stored as float_data, like some exporters)."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = (
        helper.make_tensor("b", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
        if float_data
        else (numpy_helper.from_array(np.zeros(3, np.float32), "b"))
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("float_data", [False, True])
def test_saved_model_runs_with_new_weights(tmp_path: Path, float_data: bool) -> None:
    models = PersonalModels(
        tmp_path / "models", template(tmp_path / "inf.onnx", float_data), MANIFEST
    )
    flat = np.arange(MANIFEST.num_params, dtype=np.float32) / 10  # (15,) float32
    path = models.save(ModelKind.PERSONAL, flat, version=4, accuracy=0.75, test_samples=20)
    x = np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float32)
    (y,) = ort.InferenceSession(str(path)).run(None, {"x": x})
    w, b = flat[:12].reshape(4, 3), flat[12:]
    # Hand check of row 0: w[0] + b = [0.0, 0.1, 0.2] + [1.2, 1.3, 1.4]
    np.testing.assert_allclose(y[0], [1.2, 1.4, 1.6], rtol=1e-6)
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-6)
    info = json.loads((tmp_path / "models" / "personal.json").read_text())
    assert (info["version"], info["accuracy"], info["file"]) == (4, 0.75, "personal.onnx")
    assert not list((tmp_path / "models").glob(".*"))  # no temp files left behind


def test_missing_or_misshaped_initializer_refused(tmp_path: Path) -> None:
    data = template(tmp_path / "inf.onnx").read_bytes()
    with pytest.raises(DataError, match="no float initializer named 'zzz'"):
        patch_initializers(data, {"zzz": np.zeros(3, np.float32)})
    with pytest.raises(DataError, match="initializer 'b'"):
        patch_initializers(data, {"b": np.zeros(4, np.float32)})
