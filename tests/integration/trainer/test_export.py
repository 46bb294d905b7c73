"""Export: deterministic bytes, flat order, IR version, inference model, CLI, artifact checks."""

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from agent.artifacts import load_artifacts
from models.export import export_artifacts
from models.zoo import build_model
from protocol.artifacts import ARTIFACT_FILES, INITIAL_WEIGHTS, MANIFEST_FILE
from protocol.errors import DataError
from protocol.manifest import decode_manifest, encode_manifest
from tests.support.artifacts import exported_artifacts

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def test_two_exports_are_byte_identical_and_seed_matters(tmp_path: Path) -> None:
    a = export_artifacts("cnn1d", (3, 16), 4, tmp_path / "a", seed=7)
    b = export_artifacts("cnn1d", (3, 16), 4, tmp_path / "b", seed=7)
    c = export_artifacts("cnn1d", (3, 16), 4, tmp_path / "c", seed=8)
    assert a.digest == b.digest
    for name in (*ARTIFACT_FILES, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert c.digest != a.digest
    wa = np.load(tmp_path / "a" / INITIAL_WEIGHTS, allow_pickle=False)
    wc = np.load(tmp_path / "c" / INITIAL_WEIGHTS, allow_pickle=False)
    assert wa.shape == wc.shape and not np.array_equal(wa, wc)


@pytest.mark.parametrize(
    ("model", "shape", "classes"), [("mlp", (64,), 10), ("cnn2d", (1, 8, 8), 10)]
)
def test_manifest_files_and_initial_weights(
    model: str, shape: tuple[int, ...], classes: int
) -> None:
    folder = exported_artifacts(model, shape, classes)
    art = load_artifacts(folder)
    m = art.manifest
    assert decode_manifest((folder / MANIFEST_FILE).read_bytes()) == m
    assert m.extra["trainable"] == "all" and m.frozen == () and art.frozen_weights.size == 0
    for name in ARTIFACT_FILES:
        assert m.files[name] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    for name in ARTIFACT_FILES:
        if name.endswith(".onnx"):
            onnx.checker.check_model(onnx.load(str(folder / name)), full_check=True)
    # initial weights = torch's freshly seeded parameters, in manifest order
    torch.manual_seed(0)
    net = build_model(model, shape, classes)
    named = {n: p.detach().numpy() for n, p in net.named_parameters()}
    np.testing.assert_array_equal(art.initial_weights, m.flatten(named))


def test_inference_model_matches_torch_and_keeps_parameter_names() -> None:
    import onnxruntime

    folder = exported_artifacts("cnn2d", (1, 8, 8), 10)
    m = load_artifacts(folder).manifest
    graph = onnx.load(str(folder / "inference.onnx")).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    for p in m.params:  # the server can override them by name (SessionOptions.add_initializer)
        assert shapes[p.name] == p.shape
    torch.manual_seed(0)
    net = build_model("cnn2d", (1, 8, 8), 10).eval()
    x = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(folder / "inference.onnx"))
    (logits,) = session.run(None, {m.input_name: x})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "art"
    shutil.copytree(exported_artifacts("mlp", (64,), 10), dst)
    return dst


def test_tampered_or_missing_files_are_named(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    data = bytearray((folder / "train_step.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "train_step.onnx").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"unknown_model: train_step\.onnx: sha256"):
        load_artifacts(folder)
    (folder / "train_step.onnx").unlink()
    with pytest.raises(DataError, match=r"train_step\.onnx: missing"):
        load_artifacts(folder)
    (folder / MANIFEST_FILE).write_bytes(b"{not json")
    with pytest.raises(DataError, match=r"manifest\.json: malformed"):
        load_artifacts(folder)


def test_pickled_initial_weights_are_refused_even_with_a_matching_hash(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    m = decode_manifest((folder / MANIFEST_FILE).read_bytes())
    buf = io.BytesIO()
    np.save(buf, np.zeros(m.num_params, dtype=object), allow_pickle=True)
    (folder / INITIAL_WEIGHTS).write_bytes(buf.getvalue())
    files = m.files | {INITIAL_WEIGHTS: hashlib.sha256(buf.getvalue()).hexdigest()}
    forged = type(m)(**{f: getattr(m, f) for f in m.__slots__ if f != "files"}, files=files)
    (folder / MANIFEST_FILE).write_bytes(encode_manifest(forged))
    with pytest.raises(DataError, match=r"initial_weights\.npy: not a plain \.npy"):
        load_artifacts(folder)


def test_the_default_local_optimizer_is_sgd_and_adamw_keeps_its_own_rate(tmp_path: Path) -> None:
    sgd = export_artifacts("mlp", (6,), 3, tmp_path / "sgd", hidden=(4,))
    adamw = export_artifacts("mlp", (6,), 3, tmp_path / "adamw", hidden=(4,), optimizer="adamw")
    assert (sgd.optimizer, sgd.learning_rate) == ("sgd", 0.3)
    assert (adamw.optimizer, adamw.learning_rate) == ("adamw", 1e-3)
    assert "momentum" not in sgd.extra["optimizer_state"]  # plain SGD: no state to carry


def test_cli_exports_and_refuses_bad_arguments(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "fleetlearn", "export", "--model", "cnn1d"]
    ok = subprocess.run(
        [
            *cmd,
            "--input-shape",
            "3,16",
            "--classes",
            "4",
            "--out",
            str(tmp_path / "o"),
            "--seed",
            "7",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # an export takes minutes on a loaded 2-core machine
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    m = decode_manifest((tmp_path / "o" / MANIFEST_FILE).read_bytes())
    assert f"model_id {m.model_id}" in ok.stdout
    assert m.input_shape == (3, 16) and m.num_classes == 4 and m.extra["seed"] == 7
    # a device export trains with SGD at 0.3 unless told otherwise (models/local_optimizer.py)
    assert (m.optimizer, m.learning_rate) == ("sgd", 0.3)
    bad = subprocess.run(
        [*cmd, "--input-shape", "3,x", "--classes", "4", "--out", str(tmp_path / "p")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # an export takes minutes on a loaded 2-core machine
        check=False,
    )
    assert bad.returncode == 2 and "--input-shape" in bad.stderr
