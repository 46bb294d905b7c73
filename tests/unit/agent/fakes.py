"""Fakes at the agent's edges: an in-memory link and a trainer that counts steps."""

from __future__ import annotations

import math
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig, parse_config
from agent.trainer import EvalResult, TrainConfig, TrainResult
from protocol.manifest import Manifest, ParamSpec
from protocol.messages import ModelOffer, encode_offer, encode_vector

MANIFEST = Manifest(
    model_name="fake",
    params=(ParamSpec("w", (4, 3)), ParamSpec("b", (3,))),
    input_name="x",
    input_shape=(4,),
    num_classes=3,
)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retained: bool = False


@dataclass
class FakeLink:
    """The bits of transport.MqttLink the agent uses, in memory."""

    connected: bool = True
    subscriptions: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)
    published: list[Message] = field(default_factory=list)
    _inbox: queue.Queue[Any] = field(default_factory=queue.Queue)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.subscriptions.append(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self.unsubscribed.append(topic_filter)
        self.subscriptions.remove(topic_filter)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        assert self.connected, "the agent must not publish while disconnected"
        self.published.append(Message(topic, payload, retain))

    def incoming(self) -> queue.Queue[Any]:
        return self._inbox

    def deliver(self, topic: str, payload: bytes) -> None:
        self._inbox.put(Message(topic, payload))

    def on(self, suffix: str) -> list[bytes]:
        return [m.payload for m in self.published if m.topic.endswith(suffix)]


class StepTrainer:
    """Adds `step_size` to every weight per step; calls `on_step(i)` after step i."""

    name = "fake"

    def __init__(self, manifest: Manifest = MANIFEST, step_size: float = 0.01) -> None:
        self.manifest = manifest
        self.weights = np.zeros(manifest.num_params, np.float32)
        self.step_size = step_size
        self.on_step: Callable[[int], None] = lambda i: None
        self.rounds: list[TrainConfig] = []
        self.stopped_at: list[int] = []

    def set_weights(self, flat: np.ndarray) -> None:
        self.weights = flat.astype(np.float32).copy()

    def get_weights(self) -> np.ndarray:
        return self.weights.copy()

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> TrainResult:
        self.rounds.append(config)
        planned = config.steps or (config.epochs or 1) * math.ceil(len(y) / config.batch_size)
        done, stopped = 0, False
        for i in range(planned):
            if should_stop():
                stopped = True
                break
            self.weights = self.weights + np.float32(self.step_size)
            done += 1
            self.on_step(i)
        self.stopped_at.append(done)
        return TrainResult(
            weights=self.weights.copy(),
            steps=done,
            samples=done * config.batch_size,
            mean_loss=1.0,
            stopped_early=stopped,
            seconds=0.0,
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        return EvalResult(loss=1.0, accuracy=0.5, macro_f1=0.5, samples=len(y))


def make_config(tmp: Path, **training: Any) -> AgentConfig:
    doc = {
        "device_id": "dev-1",
        "fleet": "home",
        "model_id": MANIFEST.model_id,
        "data_dir": "data",
        "artifacts_dir": "artifacts",
        "state_dir": "state",
        "fleet_public_key": "fleet.pub",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "training": {"steps": 10, "batch_size": 4, "check_interval_s": 0.01, **training},
    }
    return parse_config(doc, tmp)


def make_offer(version: int, weights: np.ndarray | None = None, mu: float = 0.0) -> ModelOffer:
    w = np.zeros(MANIFEST.num_params, np.float32) if weights is None else weights
    return ModelOffer(
        model_id=MANIFEST.model_id,
        version=version,
        manifest_digest=MANIFEST.digest,
        weights=encode_vector(w, {"name": "float32"}),
        created_at=1000.0 + version,
        fedprox_mu=mu,
    )


def offer_bytes(offer: ModelOffer) -> bytes:
    return encode_offer(offer)
