"""Benchmark: ONNX Runtime on-device training vs a plain torch loop, same model/data/batches.

Each (model, backend, repeat) runs in its own fresh Python process, so peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, the whole process) counts what that backend loads;
the ORT child asserts torch was never imported. Both use 1 intra-op thread, AdamW with the
manifest's learning rate (weight decay 0, eps 1e-6, as ORT's AdamW), batch 32, identical seeded
batches over identical generated data. Reported: median over repeats; the repeats of the two
backends are interleaved, and the load average is recorded (the machine may be shared).

    /work/main/.venv/bin/python benchmarks/trainer.py [--repeats 3] [--quick]

Writes benchmarks/results/trainer.json:
    {"config": {...}, "models": {"mlp": {"onnxruntime": {"samples_per_s", "peak_rss_mb"},
     "torch": {...}, "ort_speedup_vs_torch", "ort_rss_ratio_vs_torch"}, "cnn2d": {...}}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "trainer.json"
# name -> (zoo model, input shape, classes, timed steps); mlp is FACTS.md's 784-128-10 reference
MODELS: dict[str, tuple[str, tuple[int, ...], int, int]] = {
    "mlp": ("mlp", (784,), 10, 3000),
    "cnn2d": ("cnn2d", (1, 28, 28), 10, 300),
}
BATCH = 32
WARMUP_STEPS = 20
THREADS = 1
N_SAMPLES = 4096


def _data(shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable generated data: labels from a fixed random linear map of the inputs, so both
    loops' mean losses fall and double as a check that each really trains."""
    rng = np.random.default_rng(0)
    x = rng.random((N_SAMPLES, *shape), dtype=np.float32)  # (n, *shape)
    proj = rng.normal(size=(x[0].size, classes)).astype(np.float32)  # (d, classes)
    flat = x.reshape(N_SAMPLES, -1)  # (n, d) view
    y = np.concatenate(  # in chunks: no full-size temporaries to inflate peak RSS
        [np.argmax((flat[i : i + 256] - 0.5) @ proj, axis=1) for i in range(0, N_SAMPLES, 256)]
    ).astype(np.int64)  # (n,)
    return x, y


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child_ort(folder: Path, steps: int) -> dict[str, Any]:
    from agent.trainer import TrainConfig, load_trainer

    trainer = load_trainer(folder, threads=THREADS)
    m = trainer.manifest
    x, y = _data(m.input_shape, m.num_classes)
    trainer.train(x, y, TrainConfig(steps=WARMUP_STEPS, batch_size=BATCH))
    result = trainer.train(x, y, TrainConfig(steps=steps, batch_size=BATCH, seed=1))
    assert "torch" not in sys.modules, "the ORT backend imported torch"
    return {"samples": result.samples, "seconds": result.seconds, "loss": result.mean_loss}


def _child_torch(folder: Path, steps: int) -> dict[str, Any]:
    import torch

    from agent.artifacts import load_artifacts
    from agent.trainer import plan_batches
    from models.zoo import build_model

    torch.set_num_threads(THREADS)
    art = load_artifacts(folder)
    m = art.manifest
    hidden = m.extra.get("hidden")
    net = build_model(m.model_name, m.input_shape, m.num_classes, tuple(hidden) if hidden else None)
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(torch.from_numpy(m.split(art.initial_weights)[name].copy()))
    x, y = _data(m.input_shape, m.num_classes)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n_steps: int, seed: int) -> tuple[int, float, float]:
        opt = torch.optim.AdamW(net.parameters(), lr=m.learning_rate, eps=1e-6, weight_decay=0.0)
        samples, loss_sum, start = 0, 0.0, time.perf_counter()
        for idx in plan_batches(len(y), BATCH, None, n_steps, seed):
            ti = torch.from_numpy(idx)
            opt.zero_grad()
            loss = loss_fn(net(xt[ti]), yt[ti])
            loss.backward()
            opt.step()
            samples += len(idx)
            loss_sum += float(loss)
        return samples, time.perf_counter() - start, loss_sum / n_steps

    run(WARMUP_STEPS, 0)
    samples, seconds, mean_loss = run(steps, 1)
    return {"samples": samples, "seconds": seconds, "loss": mean_loss}


def _child(backend: str, folder: Path, steps: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    out = _child_ort(folder, steps) if backend == "onnxruntime" else _child_torch(folder, steps)
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


def _spawn(backend: str, folder: Path, steps: int) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(THREADS)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", backend, "--artifacts", str(folder),
         "--steps", str(steps)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _export(tmp: Path, name: str) -> Path:
    """Export in a child too, so this parent never loads torch either (keeps runs comparable)."""
    model, shape, classes, _ = MODELS[name]
    folder = tmp / name
    subprocess.run(
        [sys.executable, "-m", "fleetlearn", "export", "--model", model, "--input-shape",
         ",".join(map(str, shape)), "--classes", str(classes), "--out", str(folder)],
        cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, check=True, capture_output=True,
    )  # fmt: skip
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("onnxruntime", "torch"))
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps, 1 repeat")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.artifacts, args.steps)
        return 0

    repeats = 1 if args.quick else args.repeats
    report: dict[str, Any] = {
        "config": {
            "batch_size": BATCH, "threads": THREADS, "repeats": repeats, "optimizer": "adamw",
            "statistic": "median over repeats, each a fresh process",
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1m_start": round(os.getloadavg()[0], 2),  # other work on the machine
        },
        "models": {},
    }  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleetlearn-bench-") as tmp_name:
        for name, (_, shape, _, full_steps) in MODELS.items():
            steps = max(full_steps // 10, 10) if args.quick else full_steps
            folder = _export(Path(tmp_name), name)
            entry: dict[str, Any] = {"input_shape": list(shape), "steps": steps}
            by_backend: dict[str, list[dict[str, Any]]] = {"onnxruntime": [], "torch": []}
            for _ in range(repeats):  # interleaved, so load from other work hits both alike
                for backend, runs in by_backend.items():
                    runs.append(_spawn(backend, folder, steps))
            for backend, runs in by_backend.items():
                entry[backend] = {
                    "samples_per_s": round(
                        statistics.median(r["samples"] / r["seconds"] for r in runs), 1
                    ),
                    "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
                    "mean_loss": round(statistics.median(r["loss"] for r in runs), 4),
                }
            ort, ref = entry["onnxruntime"], entry["torch"]
            entry["ort_speedup_vs_torch"] = round(ort["samples_per_s"] / ref["samples_per_s"], 2)
            entry["ort_rss_ratio_vs_torch"] = round(ort["peak_rss_mb"] / ref["peak_rss_mb"], 2)
            report["models"][name] = entry
            rows.append((name, ort, ref, entry))
    report["config"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)

    header = (
        f"{'model':<7} {'ORT samples/s':>14} {'torch samples/s':>16} {'speedup':>8}"
        f" {'ORT RSS MB':>11} {'torch RSS MB':>13} {'RSS ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, ort, ref, entry in rows:
        print(
            f"{name:<7} {ort['samples_per_s']:>14,.0f} {ref['samples_per_s']:>16,.0f}"
            f" {entry['ort_speedup_vs_torch']:>7.2f}x {ort['peak_rss_mb']:>11.1f}"
            f" {ref['peak_rss_mb']:>13.1f} {entry['ort_rss_ratio_vs_torch']:>10.2f}"
        )
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
