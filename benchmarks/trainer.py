"""Benchmark: the training-step graph on stock ONNX Runtime vs torch vs the old training API.

Same model, data and batches for every backend:
    onnxruntime    the default backend: train_step.onnx on stock onnxruntime (agent/trainer)
    torch          a plain torch loop (torch.optim.AdamW), the build-time reference
    training_api   the previous backend, onnxruntime-training 1.19.2's Module/Optimizer, run from
                   an older checkout and venv (only with --training-api-python/--training-api-src:
                   the two onnxruntime wheels cannot share one venv)
Each (model, backend, threads, repeat) runs in its own fresh Python process, so peak RSS (VmHWM,
the whole process) counts what that backend loads and start-up (process creation until the
trainer is ready: imports + loading the graphs) is real; the ORT child asserts torch was never
imported. AdamW (torch's defaults; the training API's AdamW is ORT's own, eps 1e-8), batch 32,
identical seeded batches over identical generated data; 1 thread and all threads (cpu_count).
Reported: median over repeats; repeats are interleaved across backends, and the load average is
recorded (the machine may be shared).

    python benchmarks/trainer.py [--repeats 3] [--quick]
        [--training-api-python OLD_VENV/bin/python --training-api-src OLD_CHECKOUT]

Writes benchmarks/results/trainer.json: {"config": {...}, "models": {NAME: {"onnxruntime":
{"threads_1": {"samples_per_s", "peak_rss_mb", "startup_s", "mean_loss"}, "threads_all": ...},
"torch": ..., "training_api": ..., "ort_speedup_vs_torch", "ort_rss_ratio_vs_torch" (1 thread),
"ort_speedup_vs_torch_all_threads", "ort_speedup_vs_training_api", "bytes_per_update_float32"}},
"head_vs_full_cnn2d": {...}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
# name -> (zoo model, input shape, classes, trainable, timed steps); mlp is FACTS.md's reference
MODELS: dict[str, tuple[str, tuple[int, ...], int, str, int]] = {
    "mlp": ("mlp", (784,), 10, "all", 600),
    "cnn1d": ("cnn1d", (3, 128), 10, "all", 200),
    "cnn2d": ("cnn2d", (1, 28, 28), 10, "all", 100),
    "cnn2d_head": ("cnn2d", (1, 28, 28), 10, "head", 600),  # frozen conv backbone
}
BACKENDS = ("onnxruntime", "torch", "training_api")
BATCH = 32
ALL_THREADS_STEP_FRACTION = 4  # all-threads runs take 1/4 of the steps: oversubscribed torch
# threads spin (on a loaded 2-core machine torch reached ~1/20 of its 1-thread rate)
WARMUP_STEPS = 10
N_SAMPLES = 2048


def _data(shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable generated data: labels from a fixed random linear map of the inputs, so the
    mean losses fall and double as a check that each backend really trains."""
    rng = np.random.default_rng(0)
    x = rng.random((N_SAMPLES, *shape), dtype=np.float32)  # (n, *shape)
    proj = rng.normal(size=(x[0].size, classes)).astype(np.float32)  # (d, classes)
    flat = x.reshape(N_SAMPLES, -1)  # (n, d) view
    y = np.concatenate(  # in chunks: no full-size temporaries to inflate peak RSS
        [np.argmax((flat[i : i + 256] - 0.5) @ proj, axis=1) for i in range(0, N_SAMPLES, 256)]
    ).astype(np.int64)  # (n,)
    return x, y


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _process_age_s() -> float:
    """Seconds since this process was created (/proc: no psutil needed in an old venv)."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start


def _child_ort(folder: Path, steps: int, threads: int) -> dict[str, Any]:
    """The agent's trainer as it is in PYTHONPATH's checkout (the old one for training_api)."""
    from agent.trainer import TrainConfig, load_trainer

    trainer = load_trainer(folder, threads=threads)
    startup = _process_age_s()
    m = trainer.manifest
    x, y = _data(m.input_shape, m.num_classes)
    trainer.train(x, y, TrainConfig(steps=WARMUP_STEPS, batch_size=BATCH))
    result = trainer.train(x, y, TrainConfig(steps=steps, batch_size=BATCH, seed=1))
    assert "torch" not in sys.modules, "the ORT backend imported torch"
    return {
        "samples": result.samples,
        "seconds": result.seconds,
        "loss": result.mean_loss,
        "startup_s": startup,
    }


def _child_torch(folder: Path, steps: int, threads: int) -> dict[str, Any]:
    import torch

    from agent.artifacts import load_artifacts
    from agent.trainer import plan_batches
    from models.zoo import build_model

    torch.set_num_threads(threads or os.cpu_count() or 1)
    art = load_artifacts(folder)
    m = art.manifest
    hidden = m.extra.get("hidden")
    torch.manual_seed(int(m.extra["seed"]))  # the export's seed: the same frozen backbone
    net = build_model(m.model_name, m.input_shape, m.num_classes, tuple(hidden) if hidden else None)
    trained = {p.name for p in m.params}
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name in trained:
                param.copy_(torch.from_numpy(m.split(art.initial_weights)[name].copy()))
            param.requires_grad_(name in trained)
    startup = _process_age_s()
    x, y = _data(m.input_shape, m.num_classes)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(n_steps: int, seed: int) -> tuple[int, float, float]:
        opt = torch.optim.AdamW(
            [p for p in net.parameters() if p.requires_grad], lr=m.learning_rate
        )
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
    return {"samples": samples, "seconds": seconds, "loss": mean_loss, "startup_s": startup}


def _child(backend: str, folder: Path, steps: int, threads: int) -> None:
    # run as a script, this folder is sys.path[0] and its agent.py would shadow the agent package
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    fn = _child_torch if backend == "torch" else _child_ort
    out = fn(folder, steps, threads)
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


def _threads_env(threads: int) -> dict[str, str]:
    n = str(threads or os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def _spawn(
    python: str, src: Path, backend: str, folder: Path, steps: int, threads: int
) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(src)} | _threads_env(threads)
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), "--child", backend, "--artifacts", str(folder),
         "--steps", str(steps), "--threads", str(threads)],
        cwd=src, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _export(python: str, src: Path, out: Path, name: str, legacy: bool = False) -> Path:
    """Export in a child, so this parent never loads torch (keeps runs comparable)."""
    model, shape, classes, trainable, _ = MODELS[name]
    cmd = [python, "-m", "fleetlearn", "export", "--model", model, "--input-shape",
           ",".join(map(str, shape)), "--classes", str(classes), "--out", str(out)]  # fmt: skip
    if not legacy:  # (the legacy tree's export defaults to AdamW, as this one did when measured)
        cmd += ["--trainable", trainable, "--optimizer", "adamw"]
    subprocess.run(
        cmd, cwd=src, env=os.environ | {"PYTHONPATH": str(src)}, check=True, capture_output=True
    )
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "samples_per_s": round(statistics.median(r["samples"] / r["seconds"] for r in runs), 1),
        "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
        "startup_s": round(statistics.median(r["startup_s"] for r in runs), 3),
        "mean_loss": round(statistics.median(r["loss"] for r in runs), 4),
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2)


def _measure(name: str, tmp: Path, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    _model, shape, _classes, trainable, full_steps = MODELS[name]
    steps = max(full_steps // 10, 10) if args.quick else full_steps
    folder = _export(sys.executable, REPO, tmp / name, name)
    manifest = json.loads((folder / "manifest.json").read_text())
    runners: dict[str, tuple[str, Path, Path]] = {
        "onnxruntime": (sys.executable, REPO, folder),
        "torch": (sys.executable, REPO, folder),
    }
    if args.training_api_python and trainable == "all":  # the old export has no frozen subset
        old = (args.training_api_python, args.training_api_src)
        runners["training_api"] = (*old, _export(*old, tmp / f"{name}-old", name, legacy=True))
    entry: dict[str, Any] = {
        "input_shape": list(shape), "trainable": trainable, "steps": steps,
        "steps_all_threads": max(steps // ALL_THREADS_STEP_FRACTION, 10),
        "num_params": manifest["num_params"],
        "num_frozen": sum(int(np.prod(p["shape"])) for p in manifest["frozen"]),
        "bytes_per_update_float32": 4 * manifest["num_params"],
    }  # fmt: skip
    for threads, key in ((1, "threads_1"), (0, "threads_all")):
        runs: dict[str, list[dict[str, Any]]] = {b: [] for b in runners}
        n = steps if threads else max(steps // ALL_THREADS_STEP_FRACTION, 10)
        for _ in range(repeats):  # interleaved, so load from other work hits all alike
            for backend, (python, src, art) in runners.items():
                child = "onnxruntime" if backend == "training_api" else backend
                runs[backend].append(_spawn(python, src, child, art, n, threads))
        for backend, backend_runs in runs.items():
            entry.setdefault(backend, {})[key] = _summary(backend_runs)
    ort1, ref1 = entry["onnxruntime"]["threads_1"], entry["torch"]["threads_1"]
    entry["ort_speedup_vs_torch"] = _ratio(ort1["samples_per_s"], ref1["samples_per_s"])
    entry["ort_rss_ratio_vs_torch"] = _ratio(ort1["peak_rss_mb"], ref1["peak_rss_mb"])
    entry["ort_speedup_vs_torch_all_threads"] = _ratio(
        entry["onnxruntime"]["threads_all"]["samples_per_s"],
        entry["torch"]["threads_all"]["samples_per_s"],
    )
    if "training_api" in entry:
        entry["ort_speedup_vs_training_api"] = _ratio(
            ort1["samples_per_s"], entry["training_api"]["threads_1"]["samples_per_s"]
        )
        entry["ort_speedup_vs_training_api_all_threads"] = _ratio(
            entry["onnxruntime"]["threads_all"]["samples_per_s"],
            entry["training_api"]["threads_all"]["samples_per_s"],
        )
    return entry


def _print_table(models: dict[str, Any]) -> None:
    header = (
        f"{'model':<11} {'threads':>7} {'backend':<13} {'samples/s':>10} {'RSS MB':>7}"
        f" {'start s':>8} {'loss':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, entry in models.items():
        for key in ("threads_1", "threads_all"):
            for backend in BACKENDS:
                if backend not in entry:
                    continue
                r = entry[backend][key]
                print(
                    f"{name:<11} {key[8:]:>7} {backend:<13} {r['samples_per_s']:>10,.0f}"
                    f" {r['peak_rss_mb']:>7.1f} {r['startup_s']:>8.2f} {r['mean_loss']:>7.3f}"
                )
        extra = (
            f"  vs torch {entry['ort_speedup_vs_torch']}x (all threads "
            f"{entry['ort_speedup_vs_torch_all_threads']}x), RSS ratio "
            f"{entry['ort_rss_ratio_vs_torch']}"
        )
        if "ort_speedup_vs_training_api" in entry:
            extra += f", vs training API {entry['ort_speedup_vs_training_api']}x"
        print(f"{name:<11} {extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--child", choices=("onnxruntime", "torch"))
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps, 1 repeat")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--training-api-python", help="python of a venv with the training wheel")
    parser.add_argument("--training-api-src", type=Path, help="checkout with the old backend")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.artifacts, args.steps, args.threads)
        return 0

    repeats = 1 if args.quick else args.repeats
    report: dict[str, Any] = {
        "config": {
            "batch_size": BATCH, "repeats": repeats, "optimizer": "adamw",
            "threads": {"threads_1": 1, "threads_all": os.cpu_count()},
            "statistic": "median over repeats, each a fresh process",
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "training_api": bool(args.training_api_python),
            "load_average_1m_start": round(os.getloadavg()[0], 2),  # other work on the machine
        },
        "models": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fleetlearn-bench-") as tmp_name:
        for name in args.models.split(","):
            report["models"][name] = _measure(name, Path(tmp_name), args, repeats)
            print(f"measured {name}", file=sys.stderr)
    models = report["models"]
    if "cnn2d" in models and "cnn2d_head" in models:
        full, head = models["cnn2d"], models["cnn2d_head"]
        report["head_vs_full_cnn2d"] = {
            "step_speedup_1_thread": _ratio(
                head["onnxruntime"]["threads_1"]["samples_per_s"],
                full["onnxruntime"]["threads_1"]["samples_per_s"],
            ),
            "bytes_per_update_ratio": _ratio(
                head["bytes_per_update_float32"], full["bytes_per_update_float32"]
            ),
        }
    report["config"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    _print_table(models)
    if "head_vs_full_cnn2d" in report:
        print("cnn2d head vs full:", report["head_vs_full_cnn2d"])
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
