"""A demo device: the real `AgentRuntime` on its own thread, with a simulated life around it.

Around the untouched agent runtime sit three thin wrappers, each standing in for the device:
- `DemoLink` owns the device's real MQTT link, counts the payload bytes it moves, and takes the
  link away for a dropout (stop) and brings a fresh one back (start): the agent sees a broker
  that went away and returned, exactly as on a flaky network;
- `SlowTrainer` makes an old board slow: every training step waits `step_delay_s * slowdown`
  (checked at the step boundary, where the trainer asks whether to stop);
- `SimulatedConditions` (fleet/demo/conditions.py) tells the policy about charging and CPU load.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from agent.runtime import AgentRuntime
from agent.state import AgentState
from agent.trainer import EvalResult, TrainConfig, Trainer, TrainResult, never_stop
from fleet.demo.conditions import SimulatedConditions
from fleet.demo.parts import AgentCounters, DeviceActivity
from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest
from protocol.messages import decode_ack
from protocol.secagg.messages import payload_kind

__all__ = ["DemoDevice", "DemoLink", "MqttLinkLike", "SlowTrainer"]

_log = logging.getLogger(__name__)


class MqttLinkLike(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def subscribe(self, topic_filter: str, qos: int = 1) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any: ...

    def incoming(self) -> queue.Queue[Any]: ...

    @property
    def connected(self) -> bool: ...


class _CountingInbox(queue.Queue[Any]):
    """What the runtime reads: messages from whichever link is current, bytes counted."""

    def __init__(self, owner: DemoLink) -> None:
        super().__init__()
        self._owner = owner

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        link = self._owner.current()
        if link is None:  # offline: nothing arrives
            if block:
                time.sleep(timeout if timeout is not None else 0.1)
            raise queue.Empty
        msg = link.incoming().get(block, timeout)
        self._owner.count_down(msg.topic, msg.payload)
        return msg


class DemoLink:
    """The agent's `Link`: a real MQTT link that a dropout can take away and give back."""

    def __init__(
        self,
        make_link: Callable[[], MqttLinkLike],
        update_topic: str,
        ack_topic: str,
        secagg_topic: str = "",
    ) -> None:
        self._make_link = make_link
        self._update_topic = update_topic
        self._secagg_topic = secagg_topic  # with --secure-aggregation: the masked update's topic
        self._ack_topic = ack_topic
        self._lock = threading.Lock()
        self._link: MqttLinkLike | None = None
        self._subscriptions: list[tuple[str, int]] = []
        self._inbox = _CountingInbox(self)
        self.uplink_bytes = 0
        self.downlink_bytes = 0
        self.updates_sent = 0
        self.update_bytes = 0
        self.acks_accepted = 0
        self.acks_rejected = 0  # a REPLAY ack (already applied) counts as neither

    def current(self) -> MqttLinkLike | None:
        return self._link

    def count_down(self, topic: str, payload: bytes) -> None:
        accepted = rejected = 0
        if topic == self._ack_topic:
            try:
                ack = decode_ack(payload)
            except ProtocolError:
                pass  # the runtime logs it; we only count
            else:
                accepted = int(ack.accepted)
                rejected = int(not ack.accepted and ack.reason is not Reason.REPLAY)
        with self._lock:
            self.downlink_bytes += len(payload)
            self.acks_accepted += accepted
            self.acks_rejected += rejected

    def start(self) -> None:
        link = self._make_link()
        for topic, qos in self._subscriptions:
            link.subscribe(topic, qos)
        link.start()
        self._link = link

    def stop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.stop()

    # -- agent.link.Link --------------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self._subscriptions.append((topic_filter, qos))
        if self._link is not None:
            self._link.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self._subscriptions = [(t, q) for t, q in self._subscriptions if t != topic_filter]
        if self._link is not None:
            self._link.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        link = self._link
        if link is None:
            raise ConnectionError("device is offline")  # runtime checks `connected` first
        handle = link.publish(topic, payload, qos, retain)
        with self._lock:
            self.uplink_bytes += len(payload)
            if topic == self._update_topic:
                self.updates_sent += 1
                self.update_bytes += len(payload)
            elif topic == self._secagg_topic:  # keys, shares, reveals: the update's overhead
                self.update_bytes += len(payload)
                self.updates_sent += int(payload_kind(payload) == "secagg_masked")
        return handle

    def incoming(self) -> queue.Queue[Any]:
        return self._inbox

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.connected


class SlowTrainer:
    """A trainer whose every step takes `step_delay_s` longer: an older, slower board."""

    def __init__(self, inner: Trainer, step_delay_s: float) -> None:
        self._inner = inner
        self.step_delay_s = step_delay_s
        self.interrupt = threading.Event()  # set at shutdown: end the round at the next step
        self.name = inner.name
        self.manifest: Manifest = inner.manifest

    def set_weights(self, flat: np.ndarray) -> None:
        self._inner.set_weights(flat)

    def get_weights(self) -> np.ndarray:
        return self._inner.get_weights()

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        should_stop: Callable[[], bool] = never_stop,
    ) -> TrainResult:
        def slowed() -> bool:  # asked once per step boundary
            return self.interrupt.wait(self.step_delay_s) or should_stop()

        return self._inner.train(x, y, config, slowed)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        return self._inner.evaluate(x, y, batch_size)


class DemoDevice:
    """One agent runtime on its own thread. Implements fleet.demo.parts.AgentHandle."""

    def __init__(
        self, runtime: AgentRuntime, link: DemoLink, conditions: SimulatedConditions
    ) -> None:
        self.runtime = runtime
        self.link = link
        self.conditions = conditions
        self._exit = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"demo-agent-{self.device_id}", daemon=True
        )

    @property
    def device_id(self) -> str:
        return self.runtime.config.device_id

    def start(self) -> None:
        self.link.start()  # connects in the background; devices need not wait for each other
        self._thread.start()

    def _run(self) -> None:
        try:
            self.runtime.run(self._exit.is_set)
        except Exception:  # a crashed device must not take the demo down; it shows as offline
            _log.exception("agent %s crashed", self.device_id)

    def set_online(self, online: bool) -> None:
        if online and self.link.current() is None:
            self.link.start()
        elif not online:
            self.link.stop()

    def activity(self) -> DeviceActivity:
        state = self.runtime.state
        life = self.conditions.state()
        if not life.online or not self._thread.is_alive():
            return DeviceActivity.OFFLINE
        if state is AgentState.TRAINING:
            return DeviceActivity.TRAINING
        if state is AgentState.UPLOADING:
            return DeviceActivity.UPLOADING
        if not life.charging:
            return DeviceActivity.UNPLUGGED
        if life.busy:
            return DeviceActivity.BUSY
        if state is AgentState.IDLE:
            return DeviceActivity.IDLE
        return DeviceActivity.WAITING

    def counters(self) -> AgentCounters:
        return AgentCounters(
            updates_sent=self.link.updates_sent,
            updates_accepted=self.link.acks_accepted,
            updates_rejected=self.link.acks_rejected,
            update_bytes=self.link.update_bytes,
            uplink_bytes=self.link.uplink_bytes,
            downlink_bytes=self.link.downlink_bytes,
        )

    def request_stop(self) -> None:
        self._exit.set()
        if isinstance(self.runtime.trainer, SlowTrainer):
            self.runtime.trainer.interrupt.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning("agent %s did not stop within %.0f s", self.device_id, timeout)
        self.link.stop()
