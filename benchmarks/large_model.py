"""Large model on small devices: federated LoRA fine-tuning of all-MiniLM-L6-v2, side by side.

One run, the generated smart-home command set (fleet/smarthome.py: households differ in rooms,
device names, phrasing, language mix and intent skew; the global test set is households never
seen in training):

  size      parameters total vs trainable; whole ClientUpdate bytes (adapters + head, int8 and
            top-k + int8) vs the full model in float32
  device    a fresh process that imports only the agent (never torch) loads the artifacts with the
            backbone, tokenises its train.jsonl and trains: step time, start-up, peak RSS (VmHWM)
  accuracy  on unseen households, each row trained on the same pooled commands:
              federated head only (frozen backbone)      ORT step graph, FedAvg of device deltas
              federated LoRA + head                       ORT step graph, FedAvg of device deltas
              central full fine-tuning (the ceiling)      torch, every parameter trains
            and per household: global vs personalised (the global adapters and head fine-tuned
            for a few steps on the household's own commands, tested on its own held-out ones)

The federated rows use the real trainer (agent/trainer, stock onnxruntime) and plain FedAvg of
deltas in this process (no broker): the benchmark measures the model, not the transport.

    python benchmarks/large_model.py [--households 12 --rounds 6]
Writes benchmarks/results/large_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "large_model.json"
CACHE = REPO / ".cache" / "large_model"  # exports take minutes; reused when the code is unchanged
MAX_LENGTH = 24
BATCH = 16


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _export(trainable: str, classes: int, rank: int) -> Path:
    from models.minilm_export import ADAPTER_LEARNING_RATE as LEARNING_RATE
    from models.minilm_export import export_minilm_lora

    out = CACHE / f"{trainable}-r{rank}-c{classes}-L{MAX_LENGTH}-lr{LEARNING_RATE}"
    if not (out / "manifest.json").exists():
        t0 = time.perf_counter()
        export_minilm_lora(
            out,
            classes,
            rank=rank,
            max_length=MAX_LENGTH,
            trainable=trainable,
            learning_rate=LEARNING_RATE,
        )
        print(f"  exported {trainable} in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return out


def _device_child(folder: Path, data: Path, steps: int) -> None:
    """Runs in a fresh interpreter: what the agent process does, measured."""
    from agent.artifacts import load_artifacts
    from agent.data import load_device_data
    from agent.trainer import TrainConfig, load_trainer

    t0 = time.perf_counter()
    artifacts = load_artifacts(folder)
    trainer = load_trainer(folder, threads=1)
    data_ = load_device_data(data, artifacts.manifest, folder)
    startup = time.perf_counter() - t0
    trainer.train(data_.train_x, data_.train_y, TrainConfig(steps=1, batch_size=BATCH))  # warm
    result = trainer.train(data_.train_x, data_.train_y, TrainConfig(steps=steps, batch_size=BATCH))
    assert "torch" not in sys.modules, "the agent's trainer imported torch"
    print(
        json.dumps(
            {
                "step_ms": 1000 * result.seconds / result.steps,
                "startup_s": startup,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def _device(folder: Path, data: Path, steps: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), str(data), str(steps)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _update_bytes(folder: Path, delta: np.ndarray) -> dict[str, int]:
    from protocol.codecs.spec import parse_codec_arg
    from protocol.error_feedback import compress_with_feedback
    from protocol.manifest import decode_manifest
    from protocol.messages import ClientUpdate, EncodedVector
    from protocol.update_header import encode_update_compact  # what agents send

    manifest = decode_manifest((folder / "manifest.json").read_bytes())
    out = {}
    for name, text in (("float32", "float32"), ("int8", "int8"), ("topk10_int8", "topk:0.1+int8")):
        codec = parse_codec_arg(text)
        payload, _ = compress_with_feedback(delta, np.zeros_like(delta), codec)
        update = ClientUpdate(
            model_id=manifest.model_id,
            base_version=1,
            device_id="household-000",
            seq=1,
            num_samples=40,
            local_steps=3,
            delta=EncodedVector(dict(codec), payload, int(delta.size)),
            metrics={"loss": 1.0, "train_s": 1.0, "partial": 0.0},
        )
        out[name] = len(encode_update_compact(update))
    return out


def _federated(
    folder: Path,
    homes: list[Path],
    test: tuple[np.ndarray, np.ndarray],
    rounds: int,
    epochs: int,
) -> dict[str, Any]:
    """FedAvg of real ORT-trained deltas; every household takes part in every round."""
    from agent.artifacts import load_artifacts
    from agent.data import load_device_data
    from agent.trainer import TrainConfig, load_trainer

    manifest = load_artifacts(folder).manifest
    trainer = load_trainer(folder, threads=1)
    data = [load_device_data(h, manifest, folder) for h in homes]
    weights = trainer.get_weights()  # (n,) float32
    curve = []
    t0 = time.perf_counter()
    for r in range(rounds):
        deltas, sizes = [], []
        for i, d in enumerate(data):
            trainer.set_weights(weights)
            config = TrainConfig(epochs=epochs, batch_size=BATCH, seed=r * 97 + i)
            res = trainer.train(d.train_x, d.train_y, config)
            deltas.append(res.weights - weights)
            sizes.append(d.num_train)
        weights = weights + np.average(np.stack(deltas), axis=0, weights=sizes).astype(np.float32)
        trainer.set_weights(weights)
        curve.append(trainer.evaluate(*test).accuracy)
        print(f"    round {r + 1}: unseen-household accuracy {curve[-1]:.3f}", flush=True)
    global_acc, personal_acc = [], []
    for i, d in enumerate(data):  # personalisation: a few local steps from the global model
        assert d.test_x is not None and d.test_y is not None
        trainer.set_weights(weights)
        global_acc.append(trainer.evaluate(d.test_x, d.test_y).accuracy)
        trainer.train(d.train_x, d.train_y, TrainConfig(epochs=2, batch_size=BATCH, seed=i))
        personal_acc.append(trainer.evaluate(d.test_x, d.test_y).accuracy)
    return {
        "accuracy": curve[-1],
        "curve": curve,
        "seconds": time.perf_counter() - t0,
        "delta": deltas[0].tolist(),  # one device's last delta: what an update carries
        "household_global_accuracy": float(np.mean(global_acc)),
        "household_personalised_accuracy": float(np.mean(personal_acc)),
    }


def _central_full(homes: list[Path], folder: Path, test: tuple[np.ndarray, np.ndarray]) -> float:
    """The ceiling: every one of the 22.7M parameters fine-tuned on the pooled commands (torch)."""
    import torch

    from agent.artifacts import load_artifacts
    from agent.data import load_device_data
    from models.minilm import load_pretrained

    manifest = load_artifacts(folder).manifest
    pooled = [load_device_data(h, manifest, folder) for h in homes]
    x = torch.from_numpy(np.concatenate([d.train_x for d in pooled]))
    y = torch.from_numpy(np.concatenate([d.train_y for d in pooled]))
    torch.manual_seed(0)
    model = load_pretrained(manifest.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    head = torch.optim.AdamW(model.head.parameters(), lr=1e-3)  # a fresh head needs a larger step
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # epochs
        for idx in torch.randperm(len(y), generator=gen).split(BATCH):
            opt.zero_grad()
            head.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            head.step()
    with torch.no_grad():
        preds = model(torch.from_numpy(test[0])).argmax(1).numpy()
    return float(np.mean(preds == test[1]))


def _phase(name: str, key: str, run: Any) -> Any:
    """Run one phase, or reuse its result from an earlier run with the same settings."""
    path = CACHE / f"phase-{name}-{key}.json"
    if path.exists():
        print(f"  {name}: reused {path}", flush=True)
        return json.loads(path.read_text())
    value = run()
    path.write_text(json.dumps(value))
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local-epochs", type=int, default=3, help="passes per device and round")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--device-steps", type=int, default=10)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _device_child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return 0

    from agent.artifacts import load_artifacts
    from agent.text_data import TextTokenizer, load_text_split
    from fleet.smarthome import INTENTS, write_smarthome
    from models.minilm_export import ADAPTER_LEARNING_RATE as LEARNING_RATE  # torch: parent only

    classes = len(INTENTS)
    with tempfile.TemporaryDirectory() as tmp:
        homes = write_smarthome(Path(tmp), args.households, alpha=0.5, seed=0)
        lora, head = _export("adapters", classes, args.rank), _export("head", classes, args.rank)
        m = load_artifacts(lora).manifest
        tokenizer = TextTokenizer(lora / "tokenizer.json", MAX_LENGTH)
        test = load_text_split(Path(tmp) / "test.jsonl", tokenizer, classes)
        key = (
            f"h{args.households}-r{args.rounds}-e{args.local_epochs}-k{args.rank}-lr{LEARNING_RATE}"
        )
        print("device process (agent only, backbone loaded):", flush=True)
        device = _device(lora, homes[0], args.device_steps)
        print(f"  {device}\nfederated LoRA + head:", flush=True)
        fed_lora = _phase(
            "lora", key, lambda: _federated(lora, homes, test, args.rounds, args.local_epochs)
        )
        print("federated head only (frozen backbone):", flush=True)
        fed_head = _phase(
            "head", key, lambda: _federated(head, homes, test, args.rounds, args.local_epochs)
        )
        print("central full fine-tuning (torch):", flush=True)
        central = _phase("central", key, lambda: _central_full(homes, lora, test))
        sizes = _update_bytes(lora, np.asarray(fed_lora["delta"], np.float32))

    total = m.num_params + m.num_frozen
    full_bytes = 4 * total
    result = {
        "config": {
            "households": args.households,
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "lora_rank": args.rank,
            "lora_targets": ["query", "value"],
            "max_length": MAX_LENGTH,
            "batch": BATCH,
            "threads": 1,
            "unseen_test_commands": len(test[1]),
        },
        "total_params": total,
        "trainable_params": m.num_params,
        "bytes_per_update": sizes,
        "full_model_float32_bytes": full_bytes,
        "bytes_reduction_vs_full_float32": {k: round(full_bytes / v, 1) for k, v in sizes.items()},
        "step_ms": round(device["step_ms"], 1),
        "startup_s": round(device["startup_s"], 2),
        "peak_rss_mb": round(device["peak_rss_mb"], 1),
        "global_accuracy": round(fed_lora["accuracy"], 4),
        "head_only_accuracy": round(fed_head["accuracy"], 4),
        "personalised_accuracy": round(fed_lora["household_personalised_accuracy"], 4),
        "household_global_accuracy": round(fed_lora["household_global_accuracy"], 4),
        "central_full_finetune_accuracy": round(central, 4),
        "curves": {"lora": fed_lora["curve"], "head": fed_head["curve"]},
    }
    print(
        f"\n{'':34}{'value':>14}\n"
        f"{'parameters total / trainable':34}{total:>8} / {m.num_params}\n"
        f"{'update bytes int8 (reduction)':34}{sizes['int8']:>14}  "
        f"{full_bytes / sizes['int8']:.0f}x vs full float32\n"
        f"{'update bytes top-10%+int8':34}{sizes['topk10_int8']:>14}  "
        f"{full_bytes / sizes['topk10_int8']:.0f}x\n"
        f"{'device step ms (batch 16, 1 thr)':34}{device['step_ms']:>14.0f}\n"
        f"{'device peak RSS MiB':34}{device['peak_rss_mb']:>14.0f}  (goal < 600)\n"
        f"{'unseen: head only (federated)':34}{fed_head['accuracy']:>14.3f}\n"
        f"{'unseen: LoRA + head (federated)':34}{fed_lora['accuracy']:>14.3f}\n"
        f"{'unseen: full fine-tune (central)':34}{central:>14.3f}\n"
        f"{'household: global / personalised':34}"
        f"{fed_lora['household_global_accuracy']:>8.3f} / "
        f"{fed_lora['household_personalised_accuracy']:.3f}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
