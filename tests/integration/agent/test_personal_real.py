"""The app-facing model files built from real ORT-trained weights predict like the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from agent.artifacts import load_artifacts
from agent.personal import ModelKind, PersonalModels
from agent.trainer import TrainConfig, load_trainer
from tests.support.artifacts import digits_arrays, exported_artifacts

pytestmark = pytest.mark.integration


def test_personal_model_matches_trainer_accuracy(tmp_path: Path) -> None:
    folder = exported_artifacts()
    artifacts = load_artifacts(folder)
    trainer = load_trainer(folder)
    x, y, xt, yt = digits_arrays()
    weights = trainer.train(x, y, TrainConfig(epochs=2, seed=1)).weights
    trainer.set_weights(weights)
    expected = trainer.evaluate(xt, yt)
    models = PersonalModels(tmp_path, artifacts.path("inference.onnx"), artifacts.manifest)
    path = models.save(ModelKind.PERSONAL, weights, version=3, accuracy=expected.accuracy)
    session = ort.InferenceSession(str(path))  # a plain session, as a local app would open it
    (logits,) = session.run(None, {session.get_inputs()[0].name: xt})
    accuracy = float((np.asarray(logits).argmax(1) == yt).mean())
    assert accuracy == pytest.approx(expected.accuracy, abs=1e-9)
    assert accuracy > 0.8  # it did learn digits: the weights really are the trained ones
    info = json.loads((tmp_path / "personal.json").read_text())
    assert info["version"] == 3 and info["model_id"] == artifacts.manifest.model_id
