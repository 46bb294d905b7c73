"""The device agent, whole: ORT backend vs the same agent with a torch trainer.

Each run is a fresh process doing the real job end to end: start, connect to a real MQTT broker
(Mosquitto when installed, else the embedded amqtt broker), receive a signed global model, train
rounds on digits (MLP 64-128-10... as exported), compress the delta (int8 + error feedback), write
the outbox, publish, and exit after the server's Ack. The only difference between the variants is
the trainer object: `fleetlearn agent` itself (ONNX Runtime) vs `build_agent(trainer=TorchTrainer)`
in a child of this script (torch 2.x CPU, same batches, AdamW, same learning rate).

Measured per variant (median of --repeats fresh processes):
  peak_rss_mb       the agent process's peak resident set (VmHWM, read by the agent at exit)
  startup_s         process creation -> connected to the broker, trainer and data loaded
  first_round_s     the first local round in the fresh process (includes one-time warm-up)
  round_s           median of the later rounds: training + delta + compression + outbox write
  bytes_published   update bytes handed to MQTT over all rounds of the process

    /work/main/.venv/bin/python benchmarks/agent.py [--epochs 5] [--rounds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "agent.json"
DEVICE, FLEET = "bench-dev", "bench"


# --- the torch baseline trainer (benchmark only: the agent never imports torch) ----------------
class TorchTrainer:
    name = "torch"

    def __init__(self, artifacts_dir: Path, threads: int = 1) -> None:
        import torch

        from agent.artifacts import load_artifacts
        from models.zoo import build_model

        torch.set_num_threads(threads)
        art = load_artifacts(artifacts_dir)
        self.manifest = art.manifest
        m = self.manifest
        hidden = m.extra.get("hidden")
        self._torch = torch
        self._net = build_model(
            m.model_name, m.input_shape, m.num_classes, tuple(hidden) if hidden else None
        )
        self._params = dict(self._net.named_parameters())
        self.set_weights(art.initial_weights)

    def set_weights(self, flat: np.ndarray) -> None:
        with self._torch.no_grad():
            for name, value in self.manifest.split(flat).items():
                self._params[name].copy_(self._torch.from_numpy(value.copy()))

    def get_weights(self) -> np.ndarray:
        return self.manifest.flatten({n: p.detach().numpy() for n, p in self._params.items()})

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: Any,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Any:
        from agent.trainer import TrainResult, plan_batches

        torch = self._torch
        t0 = time.perf_counter()
        opt = torch.optim.AdamW(self._net.parameters(), lr=self.manifest.learning_rate)
        loss_fn = torch.nn.CrossEntropyLoss()
        anchor = [p.detach().clone() for p in self._net.parameters()]
        self._net.train()
        steps, samples, losses, stopped = 0, 0, [], False
        for idx in plan_batches(
            len(y), config.batch_size, config.epochs, config.steps, config.seed
        ):
            if should_stop():
                stopped = True
                break
            opt.zero_grad()
            loss = loss_fn(self._net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            if config.prox_mu > 0:
                loss = loss + config.prox_mu / 2 * sum(
                    ((p - a) ** 2).sum()
                    for p, a in zip(self._net.parameters(), anchor, strict=True)
                )
            loss.backward()
            opt.step()
            steps, samples = steps + 1, samples + len(idx)
            losses.append(loss.item())
        return TrainResult(
            self.get_weights(),
            steps,
            samples,
            float(np.mean(losses)) if losses else float("nan"),
            stopped,
            time.perf_counter() - t0,
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> Any:
        from agent.trainer import EvalResult, macro_f1

        torch = self._torch
        self._net.eval()
        with torch.no_grad():
            logits = self._net(torch.from_numpy(x))
            loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)))
        pred = logits.argmax(1).numpy()
        return EvalResult(loss, float((pred == y).mean()), macro_f1(y, pred), len(y))


def child_torch(config_path: Path, max_rounds: int, report: Path) -> int:
    """The agent with the torch trainer swapped in; everything else is `fleetlearn agent`."""
    from agent.cli import _process_start, build_agent, serve
    from agent.config import load_config

    started = _process_start()
    config = load_config(config_path)
    agent = build_agent(config, trainer=TorchTrainer(config.artifacts_dir, config.training.threads))
    summary = serve(agent, max_rounds, started)
    report.write_text(json.dumps(summary) + "\n")
    return 0


# --- harness ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker(tmp: Path) -> Iterator[tuple[int, str]]:
    port = _free_port()
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto:
        conf = tmp / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            "set_tcp_nodelay true\npersistence false\n"
        )
        proc = subprocess.Popen(
            [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield port, "mosquitto"
        finally:
            proc.terminate()
            proc.wait(10)
    else:
        from fleet.embedded_broker import EmbeddedBroker

        with EmbeddedBroker(port=port) as _:
            yield port, "amqtt (embedded)"


class Server(threading.Thread):
    """Publishes the signed offer and acks every update, on its own thread."""

    def __init__(self, port: int, artifacts: Any, key: Any) -> None:
        super().__init__(daemon=True)
        from protocol.messages import ModelOffer, encode_offer, encode_vector
        from protocol.signing import sign_offer
        from protocol.topics import global_model_topic, update_topic
        from transport import BrokerConfig, MqttLink

        self.link = MqttLink(BrokerConfig(url=f"mqtt://127.0.0.1:{port}", client_id="bench-srv"))
        self.link.subscribe(update_topic(FLEET, DEVICE))
        self.link.start()
        assert self.link.wait_connected(10)
        m = artifacts.manifest
        offer = ModelOffer(
            m.model_id,
            1,
            m.digest,
            encode_vector(artifacts.initial_weights, {"name": "float32"}),
            time.time(),
        )
        self.link.publish(
            global_model_topic(FLEET, m.model_id), encode_offer(sign_offer(offer, key)), 1, True
        ).wait(10)
        self.stop_event = threading.Event()

    def run(self) -> None:
        import queue

        from protocol.errors import Reason
        from protocol.messages import Ack, encode_ack
        from protocol.topics import ack_topic
        from protocol.update_header import decode_any_update

        while not self.stop_event.is_set():
            try:
                msg = self.link.incoming().get(timeout=0.1)
            except queue.Empty:
                continue
            update = decode_any_update(msg.payload)
            ack = Ack(DEVICE, update.seq, True, Reason.OK, 1)
            self.link.publish(ack_topic(FLEET, DEVICE), encode_ack(ack), 1, False)

    def close(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.link.stop()


def _write_config(tmp: Path, port: int, artifacts: Path, model_id: str, epochs: int) -> Path:
    for d in ("power", "thermal"):
        (tmp / d).mkdir(exist_ok=True)
    text = f"""
device_id = "{DEVICE}"
fleet = "{FLEET}"
model_id = "{model_id}"
data_dir = "data"
artifacts_dir = "{artifacts}"
state_dir = "state"
fleet_public_key = "fleet.pub"
[broker]
url = "mqtt://127.0.0.1:{port}"
[policy]
max_cpu_percent = 100
cpu_margin = 0
max_temperature_c = 150
[conditions]
power_supply_dir = "power"
thermal_dir = "thermal"
[training]
epochs = {epochs}
batch_size = 32
codec = "int8"
check_interval_s = 0.02
min_retrain_interval_s = 0
threads = 1
"""
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


def _run_one(variant: str, config: Path, rounds: int, report: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    if variant == "onnxruntime":
        cmd = [sys.executable, "-m", "fleetlearn", "agent", "--config", str(config)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-torch", str(config)]
    cmd += ["--max-rounds", str(rounds), "--report", str(report)]
    log = report.with_name("agent.log")
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        proc.wait()
    err = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} agent failed ({proc.returncode}):\n{err[-3000:]}")
    summary = json.loads(report.read_text())
    return {
        "peak_rss_mb": summary["peak_rss_mb"],  # VmHWM inside the child (see agent/cli.py)
        "startup_s": summary["startup_s"],
        # The first round in a fresh process pays one-time warm-up (torch: lazy init); a device's
        # agent lives for days, so round_s is the median of the later rounds.
        "first_round_s": summary["round_s"][0],
        "round_s": statistics.median(summary["round_s"][1:] or summary["round_s"]),
        "bytes_published": summary["bytes_published"],
        "torch_loaded": summary["torch_loaded"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per process (>= 2)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    ap.add_argument("--child-torch", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--max-rounds", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_torch is not None:
        return child_torch(args.child_torch, args.max_rounds, args.report)

    from agent.artifacts import load_artifacts
    from models.export import export_artifacts
    from protocol.signing import generate_keypair, public_key_to_pem

    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp_s:
        tmp = Path(tmp_s)
        art_dir = tmp / "artifacts"
        export_artifacts("mlp", (64,), 10, art_dir, seed=0, optimizer="adamw")  # as measured
        artifacts = load_artifacts(art_dir)
        from sklearn.datasets import load_digits  # ships inside the wheel: no download

        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)  # (1797, 64)
        y = digits.target.astype(np.int64)  # (1797,)
        key, pub = generate_keypair()
        results: dict[str, list[dict[str, Any]]] = {"onnxruntime": [], "torch": []}
        with broker(tmp) as (port, broker_name):
            for rep in range(args.repeats):
                for variant, runs in results.items():  # interleaved: machine drift hits both
                    run_dir = tmp / f"{variant}-{rep}"
                    (run_dir / "data").mkdir(parents=True)
                    np.savez(run_dir / "data" / "train.npz", x=x, y=y)
                    (run_dir / "fleet.pub").write_bytes(public_key_to_pem(pub))
                    config = _write_config(
                        run_dir, port, art_dir, artifacts.manifest.model_id, args.epochs
                    )
                    server = Server(port, artifacts, key)
                    server.start()
                    try:
                        runs.append(_run_one(variant, config, args.rounds, run_dir / "report.json"))
                    finally:
                        server.close()
    keys = ("peak_rss_mb", "startup_s", "first_round_s", "round_s", "bytes_published")
    summary = {
        v: {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
        | {"torch_loaded": any(r["torch_loaded"] for r in runs)}
        for v, runs in results.items()
    }
    ratio = {
        k: round(summary["torch"][k] / summary["onnxruntime"][k], 2)
        for k in keys
        if summary["onnxruntime"][k]
    }
    print(
        f"agent benchmark: mlp on digits (1797 samples), {args.epochs} epochs x {args.rounds} "
        f"round(s), batch 32, int8, broker {broker_name}, median of {args.repeats}"
    )
    widths = (13, 11, 15, 10, 17)
    print(f"{'variant':<14}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths, strict=True)))
    for v in ("onnxruntime", "torch"):
        s = summary[v]
        print(
            f"{v:<14}{s['peak_rss_mb']:>13.1f}{s['startup_s']:>11.3f}"
            f"{s['first_round_s']:>15.3f}{s['round_s']:>10.3f}{s['bytes_published']:>17}"
        )
    ratios = "".join(
        f"{ratio.get(k, float('nan')):>{w}.2f}" for k, w in zip(keys, widths, strict=True)
    )
    print(f"{'torch / ort':<14}{ratios}")
    doc = {
        "benchmark": "agent",
        "setup": {
            "model": "mlp",
            "data": "sklearn digits (1797 x 64)",
            "epochs": args.epochs,
            "rounds": args.rounds,
            "batch_size": 32,
            "codec": "int8",
            "threads": 1,
            "broker": broker_name,
            "repeats": args.repeats,
            "statistic": "median",
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "python": platform.python_version(),
        },
        "variants": summary,
        "ratio_torch_over_onnxruntime": ratio,
        "target": {"onnxruntime_peak_rss_mb_below": 150},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
