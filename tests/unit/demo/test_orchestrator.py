"""The run loop with fake parts: stop rules, dropouts, teardown order, Ctrl-C, the report."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet.demo.display import Progress
from fleet.demo.life import DeviceLife, Window, WindowKind
from fleet.demo.orchestrator import RunSpec, run_fleet
from fleet.demo.parts import AgentCounters, DeviceActivity, Evaluation, FleetSetup


class Clock:
    """Virtual time: every sleep of the loop advances it (monkeypatched below)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    clock: Clock
    log: list[str] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)


class FakeBroker:
    def __init__(self, world: World) -> None:
        self.world = world

    url = "mqtt://127.0.0.1:1"
    port = None

    def stop(self) -> None:
        self.world.log.append("stop broker")


class FakeServer:
    """One new evaluation per second of virtual time, accuracies from the world's list."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.t0 = world.clock.now

    def _n(self) -> int:
        return min(int(self.world.clock.now - self.t0), len(self.world.accuracies))

    def version(self) -> int:
        return self._n()

    def evaluations(self) -> list[Evaluation]:
        return [
            Evaluation(i + 1, a, a - 0.01) for i, a in enumerate(self.world.accuracies[: self._n()])
        ]

    def accepted(self) -> int:
        return 2 * self._n()

    def rejected(self) -> Mapping[str, int]:
        return {"stale": 1}

    def privacy(self) -> Mapping[str, float] | None:
        return None

    def stop(self) -> None:
        self.world.log.append("stop server")


class FakeAgent:
    def __init__(self, world: World, device_id: str) -> None:
        self.world = world
        self.device_id = device_id
        self.online_calls: list[bool] = []

    def activity(self) -> DeviceActivity:
        return DeviceActivity.TRAINING

    def counters(self) -> AgentCounters:
        return AgentCounters(3, 2, 1, 300, 350, 900)

    def set_online(self, online: bool) -> None:
        self.online_calls.append(online)

    def request_stop(self) -> None:
        self.world.log.append(f"request {self.device_id}")

    def stop(self) -> None:
        self.world.log.append(f"stop {self.device_id}")


class FakeParts:
    def __init__(self, world: World) -> None:
        self.world = world
        self.agents: list[FakeAgent] = []

    def start_broker(self, url: str | None) -> FakeBroker:
        return FakeBroker(self.world)

    def start_server(self, setup: FleetSetup, broker_url: str) -> FakeServer:
        return FakeServer(self.world)

    def start_agent(self, setup: FleetSetup, index: int, broker_url: str) -> FakeAgent:
        agent = FakeAgent(self.world, setup.lives[index].device_id)
        self.agents.append(agent)
        return agent


LIVES = (
    DeviceLife("a", 1.0, ()),
    DeviceLife("b", 6.0, (Window(WindowKind.OFFLINE, 2.0, 3.0),)),
)


def setup_for(tmp_path: Path) -> FleetSetup:
    return FleetSetup(
        run_dir=tmp_path,
        artifacts_dir=tmp_path,
        test_file=tmp_path / "test.npz",
        device_folders=(tmp_path / "a", tmp_path / "b"),
        lives=LIVES,
        fleet="demo",
        strategy="fedasync",
        codec="int8",
        seed=0,
        start=0.0,
    )


def spec(duration: float = 10.0) -> RunSpec:
    return RunSpec("fedasync", "int8", "mlp", 1000, duration, 0.9, None, tick_s=0.5)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(Clock())

    def fake_sleep(s: float) -> None:
        w.clock.now += s

    monkeypatch.setattr("fleet.demo.orchestrator.time.sleep", fake_sleep)
    return w


def test_stops_at_target_and_tears_down_in_reverse(world: World, tmp_path: Path) -> None:
    world.accuracies = [0.2, 0.5, 0.85, 0.93, 0.95]
    parts = FakeParts(world)
    report = run_fleet(
        spec(), setup_for(tmp_path), parts, Progress("t", file=io.StringIO()), clock=world.clock
    )
    assert report.stopped_by == "target"
    assert [p.accuracy for p in report.timeline] == [0.2, 0.5, 0.85, 0.93]
    assert report.time_to_target_s == 4.0
    assert world.log == ["request a", "request b", "stop b", "stop a", "stop server", "stop broker"]
    doc = report.to_json()
    assert doc["updates_accepted"] == 8 and doc["updates_rejected"] == {"stale": 1}
    assert doc["uplink_bytes"] == 700 and doc["bytes_per_update"] == 100
    # device b's life takes it offline at t=2 and back at t=3; a is never touched
    assert parts.agents[0].online_calls == []
    assert parts.agents[1].online_calls == [False, True]
    assert [d.dropouts for d in report.devices] == [0, 1]


def test_stops_at_the_time_limit(world: World, tmp_path: Path) -> None:
    world.accuracies = [0.2, 0.3]
    report = run_fleet(
        spec(duration=5.0),
        setup_for(tmp_path),
        FakeParts(world),
        Progress("t", file=io.StringIO()),
        clock=world.clock,
    )
    assert report.stopped_by == "duration"
    assert report.time_to_target_s is None
    assert 5.0 <= report.duration_s < 5.6


def test_ctrl_c_still_stops_everything(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.accuracies = [0.2, 0.3, 0.4]

    def interrupted_sleep(s: float) -> None:
        world.clock.now += s
        if world.clock.now - 1000.0 > 2.2:
            raise KeyboardInterrupt

    monkeypatch.setattr("fleet.demo.orchestrator.time.sleep", interrupted_sleep)
    report = run_fleet(
        spec(),
        setup_for(tmp_path),
        FakeParts(world),
        Progress("t", file=io.StringIO()),
        clock=world.clock,
    )
    assert report.stopped_by == "interrupted"
    assert world.log[2:] == ["stop b", "stop a", "stop server", "stop broker"]


def test_a_failing_start_stops_what_already_started(world: World, tmp_path: Path) -> None:
    class Broken(FakeParts):
        def start_agent(self, setup: FleetSetup, index: int, broker_url: str) -> FakeAgent:
            if index == 1:
                raise RuntimeError("no such data folder")
            return super().start_agent(setup, index, broker_url)

    with pytest.raises(RuntimeError, match="no such data folder"):
        run_fleet(
            spec(),
            setup_for(tmp_path),
            Broken(world),
            Progress("t", file=io.StringIO()),
            clock=world.clock,
        )
    assert world.log == ["request a", "stop a", "stop server", "stop broker"]
