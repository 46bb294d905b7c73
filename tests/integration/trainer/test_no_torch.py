"""The agent's training path never imports torch (checked in a fresh interpreter)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.artifacts import exported_artifacts

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys
import numpy as np
from pathlib import Path
from agent.trainer import TrainConfig, load_trainer
trainer = load_trainer(Path(sys.argv[1]))
rng = np.random.default_rng(0)
x = rng.random((64, 64), dtype=np.float32)
y = rng.integers(0, 10, 64).astype(np.int64)
result = trainer.train(x, y, TrainConfig(epochs=2, batch_size=16, prox_mu=0.5))
trainer.evaluate(x, y)
banned = ("torch.", "onnxruntime.training")
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(banned))
print("steps", result.steps, "backend", trainer.name)
print("loaded", loaded)
assert not loaded, loaded
"""


def test_training_in_a_fresh_process_never_imports_torch() -> None:
    folder = exported_artifacts()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # an export takes minutes on a loaded 2-core machine
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "steps 8 backend onnxruntime" in proc.stdout
    assert "loaded []" in proc.stdout


def test_export_still_works_after_the_agent_loaded_onnxruntime(tmp_path: Path) -> None:
    """Test processes may load the agent's trainer first and export afterwards: same bytes."""
    folder = exported_artifacts()
    script = (
        "import sys; from pathlib import Path\n"
        "from agent.trainer import load_trainer\n"
        "load_trainer(Path(sys.argv[1]))\n"
        "from models.export import export_artifacts\n"
        # exported_artifacts()'s arguments (it pins AdamW at its default rate)
        "print(export_artifacts('mlp', (64,), 10, Path(sys.argv[2]), optimizer='adamw').digest)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, str(folder), str(tmp_path / "again")],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,  # an export takes minutes on a loaded 2-core machine
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    expected = (folder / "manifest.json").read_bytes()
    assert (tmp_path / "again" / "manifest.json").read_bytes() == expected
