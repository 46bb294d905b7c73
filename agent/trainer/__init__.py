"""On-device training behind one small interface; stock ONNX Runtime is the default backend.

Trainer (protocol)     set_weights / get_weights / train / evaluate on flat float32 vectors
OrtStepTrainer         runs the exported training-step graph on stock onnxruntime (ort_step.py)
FakeTrainer            deterministic, no ORT: for other components' unit tests
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.artifacts import load_artifacts
from agent.trainer.base import EvalResult, TrainConfig, Trainer, TrainResult, never_stop
from agent.trainer.batching import macro_f1, plan_batches
from agent.trainer.fake import FakeTrainer
from protocol.errors import ConfigError

__all__ = [
    "BACKENDS",
    "EvalResult",
    "FakeTrainer",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "load_trainer",
    "macro_f1",
    "never_stop",
    "plan_batches",
]

BACKENDS = ("onnxruntime", "fake")  # "torch" exists only in benchmarks/ (the agent never has it)


def load_trainer(
    artifacts_dir: Path,
    backend: str = "onnxruntime",
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Trainer:
    """Verify the artifacts folder and build a trainer holding its initial weights.

    `threads`: ORT intra-op threads (0 = ORT's default, every core). `providers`: ORT execution
    providers, most preferred first (agent.backend.choose_backend resolves the configured ones).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"trainer backend {backend!r} unknown; choose from {', '.join(BACKENDS)}")
    artifacts = load_artifacts(artifacts_dir)
    if backend == "fake":
        return FakeTrainer(artifacts.manifest, initial_weights=artifacts.initial_weights)
    from agent.trainer.ort_step import OrtStepTrainer  # loads ORT only when chosen

    return OrtStepTrainer(artifacts, threads=threads, providers=providers)
