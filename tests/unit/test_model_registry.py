"""The model registry: every tool tells models apart by their entry, and the entries match what
the exporters build."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import MODELS, InputKind, model_entry
from protocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_feature_models_are_the_zoo_and_the_text_model_is_pretrained() -> None:
    from models.minilm_export import MODEL_NAME  # torch
    from models.zoo import MODEL_NAMES

    features = {name for name, e in MODELS.items() if e.inputs is InputKind.FEATURES}
    assert features == set(MODEL_NAMES)
    text = model_entry(MODEL_NAME)
    assert text.inputs is InputKind.TOKENS and text.pretrained and text.own_optimizer
    assert not any(MODELS[name].own_optimizer for name in features)


def test_an_unknown_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*cnn1d"):
        model_entry("resnet")


def test_reading_the_registry_loads_no_torch() -> None:
    code = "import sys, models.registry; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_export_sends_a_token_model_to_its_exporter_and_the_zoo_its_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models import export_cli

    def text_exporter(args: argparse.Namespace) -> None:
        raise ValueError(f"text exporter called for {args.model}")

    monkeypatch.setattr(export_cli, "_run_minilm", text_exporter)
    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    text = parser.parse_args(["--model", "minilm-lora", "--classes", "3", "--out", "x"])
    with pytest.raises(ConfigError, match="text exporter called for minilm-lora"):
        export_cli.run(text)
    zoo = parser.parse_args(["--model", "mlp", "--classes", "3", "--out", "x"])
    with pytest.raises(ConfigError, match="--input-shape is required for --model mlp"):
        export_cli.run(zoo)
