"""Export a zoo model once and keep it: later demos start without importing torch.

The cache folder is `$FLEETLEARN_CACHE` or `~/.cache/fleetlearn`, one sub-folder per (model,
input shape, classes, seed, local optimizer and rate: models/local_optimizer.py's default for zoo
models, so a cache made before that default changed is not reused). The export runs `fleetlearn
export` in a child process (torch stays out of the demo process, whose memory goes to twenty ONNX
Runtime trainers) into a temp folder that is renamed into place only when complete, so an
interrupted export leaves no half-written cache entry.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.artifacts import load_artifacts
from models.local_optimizer import DEFAULT_OPTIMIZER, default_learning_rate
from models.registry import MODELS, InputKind
from protocol.errors import DataError, FleetlearnError
from protocol.manifest import MANIFEST_SCHEMA

__all__ = ["cache_root", "cached_artifacts"]

log = logging.getLogger(__name__)
_COMPLETE = "manifest.json"  # written last by the exporter; its presence marks a finished export


def cache_root() -> Path:
    env = os.environ.get("FLEETLEARN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fleetlearn"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def cached_artifacts(
    model: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> tuple[Path, bool]:
    """(artifacts folder, True if it was exported just now)."""
    shape = "x".join(str(d) for d in input_shape)
    # the manifest schema names the artifacts layout: an older checkout's cache stays its own
    local = _local_optimizer(model)
    tag = "" if local is None else f"-{local[0]}{local[1]!r}"
    key = f"{model}-{shape}-c{num_classes}-s{seed}-m{MANIFEST_SCHEMA}{tag}"
    folder = cache_root() / "artifacts" / key
    if (folder / _COMPLETE).is_file():
        try:
            load_artifacts(folder)  # hashes and manifest checked: a damaged cache is re-made
        except FleetlearnError as exc:
            log.warning("cached artifacts %s unusable (%s): exporting again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
        else:
            return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    # a text model's one input dimension is its token count; zoo models take the sample shape
    entry = MODELS.get(model)
    shape_args = (
        ["--max-length", str(input_shape[0])]
        if entry is not None and entry.inputs is InputKind.TOKENS
        else ["--input-shape", ",".join(str(d) for d in input_shape)]
    )
    cmd = [
        sys.executable,
        "-m",
        "fleetlearn",
        "export",
        "--model",
        model,
        *shape_args,
        "--classes",
        str(num_classes),
        "--seed",
        str(seed),
        *(() if local is None else ("--optimizer", local[0], "--lr", repr(local[1]))),
        "--out",
        str(tmp),
    ]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_repo_root()), os.environ.get("PYTHONPATH")])
        )
    }
    try:
        # subprocess.run kills and reaps the child if we are interrupted (Ctrl-C) meanwhile.
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DataError(f"exporting {model} {input_shape} failed:\n{done.stderr[-2000:]}")
        try:
            os.replace(tmp, folder)
        except OSError:  # another demo finished the same export first: use theirs
            if not (folder / _COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, True


def _local_optimizer(model: str) -> tuple[str, float] | None:
    """Zoo models: the export's default local optimizer and rate, named in the cache key and
    passed to the export so the two agree; a model whose exporter picks its own keeps it
    (minilm-lora: AdamW on the adapters)."""
    entry = MODELS.get(model)
    if entry is not None and entry.own_optimizer:
        return None
    return DEFAULT_OPTIMIZER, default_learning_rate(DEFAULT_OPTIMIZER)
