"""The exported training step on aarch64 (emulated) vs x86_64: same artifacts, data and batches.

    python ci/aarch64/step_parity.py DIR [--json OUT]     # on the x86_64 host, torch installed

exports each CASE with `models.export` into DIR, trains it natively with the agent's trainer
(1 thread), then once per emulated CPU in CPUS runs `ci/aarch64/python ci/aarch64/step_parity.py
train DIR TAG` (the agent's trainer on emulated aarch64 CPython, no torch installed, torch imports
refused) and compares the weights. ONNX Runtime picks kernels by the CPU's features, so the Pi 4
and Pi 5 cores are emulated separately. Exit status 1 if a case differs by more than float32
rounding can explain (TOLERANCE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CASES", "CPUS", "TOLERANCE", "compare", "train_case"]

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8  # a few steps: the cnn2d step takes ~2 s under emulation
BATCH = 16
SAMPLES = 64
# (name, model, input shape, classes, optimizer, trainable): every zoo model, both optimizers,
# and a frozen conv backbone with only the head trained.
CASES: tuple[tuple[str, str, tuple[int, ...], int, str, str], ...] = (
    ("mlp-adamw", "mlp", (64,), 10, "adamw", "all"),
    ("cnn1d-sgd", "cnn1d", (3, 32), 4, "sgd", "all"),
    ("cnn2d-adamw", "cnn2d", (1, 8, 8), 10, "adamw", "all"),
    ("cnn2d-head-sgd", "cnn2d", (1, 8, 8), 10, "sgd", "head"),
    # attention, LayerNorm and erf-GELU with LoRA adapters (a test-sized MiniLM: same tokenizer
    # and vocabulary, two narrow layers); input = token ids, only adapters and head train
    ("minilm-lora-adamw", "minilm-lora", (16,), 12, "adamw", "adapters"),
)
# qemu CPU models (QEMU_CPU) -> the boards that use them
CPUS = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5"}
# Max |w_arm - w_x86| relative to max |w_x86|: 1e-5 is ~84 float32 ulps of the largest weight,
# room for rounding differences (summation order, FMA in the NEON vs AVX kernels) to accumulate
# over a few steps; a kernel computing something else would be off by far more.
TOLERANCE = 1e-5


def _arch() -> str:
    return platform.machine()


def train_case(case: Path, tag: str) -> dict[str, Any]:
    """Train one exported case with the agent's own trainer; save the weights as `tag`."""
    from agent.trainer import TrainConfig, load_trainer

    trainer = load_trainer(case / "artifacts", threads=1)
    x = np.load(case / "x.npy", allow_pickle=False)  # never unpickle (STYLE.md)
    y = np.load(case / "y.npy", allow_pickle=False)
    initial = trainer.get_weights()
    start = time.perf_counter()
    result = trainer.train(x, y, TrainConfig(steps=STEPS, batch_size=BATCH, seed=0))
    seconds = time.perf_counter() - start
    np.save(case / f"weights-{tag}.npy", result.weights)
    np.save(case / "weights-initial.npy", initial)
    return {
        "steps": result.steps,
        "step_ms": 1000 * seconds / max(result.steps, 1),
        "mean_loss": result.mean_loss,
    }


def _train_all(directory: Path, tag: str) -> dict[str, Any]:
    report: dict[str, Any] = {name: train_case(directory / name, tag) for name, *_ in CASES}
    report["torch_loaded"] = "torch" in sys.modules  # the agent's trainer must never load it
    report["python"] = f"{_arch()} CPython {platform.python_version()}"
    return report


def _export_all(directory: Path) -> None:
    from models.export import export_artifacts  # torch: host side only
    from models.registry import InputKind, model_entry

    rng = np.random.default_rng(0)
    for name, model, shape, classes, optimizer, trainable in CASES:
        case = directory / name
        if model_entry(model).inputs is InputKind.TOKENS:  # the text model: token-id samples
            from models.minilm_export import export_minilm_lora

            export_minilm_lora(
                case / "artifacts", classes, rank=4, max_length=shape[0], pretrained=False
            )
            ids = rng.integers(1000, 30000, (SAMPLES, *shape))  # (n, length) token ids
            ids[:, shape[0] // 2 :] *= rng.random((SAMPLES, 1)) < 0.5  # half the rows padded
            np.save(case / "x.npy", ids.astype(np.int64))
            np.save(case / "y.npy", rng.integers(0, classes, SAMPLES).astype(np.int64))
            continue
        export_artifacts(
            model, shape, classes, case / "artifacts", optimizer=optimizer, trainable=trainable
        )
        np.save(case / "x.npy", rng.standard_normal((SAMPLES, *shape)).astype(np.float32))
        np.save(case / "y.npy", rng.integers(0, classes, SAMPLES).astype(np.int64))


def compare(case: Path, tag: str, reference: str = "x86_64") -> dict[str, float]:
    """Max differences of the weights trained as `tag` vs `reference`, for one case."""
    here = np.load(case / f"weights-{reference}.npy", allow_pickle=False)
    there = np.load(case / f"weights-{tag}.npy", allow_pickle=False)
    initial = np.load(case / "weights-initial.npy", allow_pickle=False)
    diff = np.abs(there.astype(np.float64) - here)  # (n_params,)
    largest = float(np.abs(here).max())
    update = float(np.abs(here.astype(np.float64) - initial).max())
    return {
        "max_abs_diff": float(diff.max()),
        "max_diff_vs_max_weight": float(diff.max()) / largest,  # what TOLERANCE bounds
        "max_rel_diff": float((diff / np.maximum(np.abs(here), 1e-6)).max()),  # elementwise
        "max_diff_vs_update": float(diff.max()) / update if update else float("inf"),
        "max_update": update,
    }


def _emulated(directory: Path, cpu: str) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    done = subprocess.run(
        [str(ROOT / "ci/aarch64/python"), __file__, "train", str(directory), f"aarch64-{cpu}"],
        cwd=ROOT,
        env={**os.environ, "QEMU_CPU": cpu},  # qemu-user reads its -cpu from here
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"step_parity: emulated training failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def _print_table(
    rows: dict[str, dict[str, Any]], emulated: dict[str, dict[str, Any]], ok: bool
) -> None:
    print(
        f"{'case':<15} {'qemu cpu':<11} {'max|diff|':>10} {'/max|w|':>9} {'rel':>9} "
        f"{'/update':>9} {'x86 ms/step':>11} {'arm ms/step':>11}"
    )
    for name, row in rows.items():
        for cpu in CPUS:
            r = row[cpu]
            print(
                f"{name:<15} {cpu:<11} {r['max_abs_diff']:>10.2e} "
                f"{r['max_diff_vs_max_weight']:>9.2e} {r['max_rel_diff']:>9.2e} "
                f"{r['max_diff_vs_update']:>9.2e} {row['x86_64_step_ms']:>11.2f} "
                f"{r['aarch64_step_ms']:>11.1f}"
            )
    for cpu, e in emulated.items():
        print(
            f"step_parity: {e['python']} as {cpu} ({CPUS[cpu]}): torch loaded {e['torch_loaded']}, "
            f"forbidden imports tried: {e['forbidden_imports'] or 'none'}"
        )
    print(f"step_parity: {'PASS' if ok else 'FAIL'} (tolerance {TOLERANCE:g} of max|w|)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("role", nargs="?", choices=["run", "train"], default="run")
    parser.add_argument("directory", type=Path)
    parser.add_argument("tag", nargs="?", default="x86_64", help="train: name of the weights")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.role == "train":  # the emulated side: one JSON line on stdout
        from check_imports import Tripwire  # this folder is sys.path[0]

        tripwire = Tripwire()  # refuses (and records) any torch/onnx/models import
        sys.meta_path.insert(0, tripwire)
        report = _train_all(args.directory, args.tag)
        report["forbidden_imports"] = tripwire.attempts
        print(json.dumps(report))
        return 0
    _export_all(args.directory)
    native = _train_all(args.directory, "x86_64")
    rows: dict[str, dict[str, Any]] = {name: {} for name, *_ in CASES}
    emulated: dict[str, dict[str, Any]] = {}
    ok = True
    for cpu in CPUS:
        report, wall = _emulated(args.directory, cpu)
        emulated[cpu] = {
            "wall_s": wall,
            "python": report["python"],
            "torch_loaded": report["torch_loaded"],
            "forbidden_imports": report["forbidden_imports"],
        }
        ok = ok and not (report["torch_loaded"] or report["forbidden_imports"])
        for name, *_ in CASES:
            diffs = compare(args.directory / name, f"aarch64-{cpu}")
            ok = ok and diffs["max_diff_vs_max_weight"] <= TOLERANCE
            rows[name][cpu] = {
                **diffs,
                "aarch64_step_ms": report[name]["step_ms"],
                "aarch64_mean_loss": report[name]["mean_loss"],
            }
    for name, *_ in CASES:
        rows[name]["x86_64_step_ms"] = native[name]["step_ms"]
        rows[name]["x86_64_mean_loss"] = native[name]["mean_loss"]
    summary = {
        "cases": rows,
        "steps": STEPS,
        "batch_size": BATCH,
        "emulated": emulated,
        "tolerance_vs_max_weight": TOLERANCE,
        "passed": ok,
    }
    _print_table(rows, emulated, ok)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
