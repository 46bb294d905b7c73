"""One demo run: start broker, server and agents, drive their simulated lives, watch, stop.

    start broker -> server -> agents (each registered with Teardown as soon as it runs)
    loop every tick: apply dropouts from the life schedules, read server + agents, show progress,
                     stop at the target accuracy, the time limit, or Ctrl-C
    teardown (reverse order) -> RunReport

The loop runs on the main thread, so Ctrl-C lands here and teardown always runs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from fleet.demo.display import FleetSnapshot, Progress
from fleet.demo.life import DeviceLife
from fleet.demo.parts import AgentHandle, FleetSetup, Parts, ServerHandle
from fleet.demo.report import DeviceParticipation, EvalPoint, RunReport
from fleet.demo.teardown import Teardown, wait_port_free

__all__ = ["RunSpec", "run_fleet"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    strategy: str
    codec: str
    model: str
    num_params: int
    duration_s: float
    target_accuracy: float
    broker_url: str | None  # None: start the embedded broker
    tick_s: float = 0.25  # how often the loop looks at the fleet


@dataclass
class _Watch:
    """What the loop has seen so far (mutable, loop-local)."""

    timeline: list[EvalPoint]
    seen_evals: int = 0
    best: float = 0.0


def _uplink(agents: list[AgentHandle]) -> int:
    return sum(a.counters().uplink_bytes for a in agents)


def _apply_dropouts(
    agents: list[AgentHandle],
    lives: tuple[DeviceLife, ...],
    t: float,
    online: list[bool],
    dropouts: Counter[str],
) -> None:
    for i, (agent, life) in enumerate(zip(agents, lives, strict=True)):
        want = life.state_at(t).online
        if want != online[i]:
            agent.set_online(want)
            online[i] = want
            if not want:
                dropouts[agent.device_id] += 1


def _snapshot(
    spec: RunSpec, t: float, server: ServerHandle, agents: list[AgentHandle], watch: _Watch
) -> FleetSnapshot:
    last = watch.timeline[-1] if watch.timeline else None
    return FleetSnapshot(
        t_s=t,
        duration_s=spec.duration_s,
        version=server.version(),
        accuracy=None if last is None else last.accuracy,
        best_accuracy=watch.best,
        target_accuracy=spec.target_accuracy,
        accepted=server.accepted(),
        rejected=dict(server.rejected()),
        uplink_bytes=_uplink(agents),
        downlink_bytes=sum(a.counters().downlink_bytes for a in agents),
        devices=dict(Counter(a.activity().value for a in agents)),
    )


def _record(server: ServerHandle, agents: list[AgentHandle], watch: _Watch, t: float) -> None:
    """Turn the server's new evaluations into timeline points stamped with time and bytes."""
    evals = server.evaluations()
    for e in evals[watch.seen_evals :]:
        watch.timeline.append(
            EvalPoint(
                round(t, 2),
                e.version,
                e.accuracy,
                e.macro_f1,
                _uplink(agents),
                e.iterate_accuracy,
                sum(a.counters().downlink_bytes for a in agents),
            )
        )
        watch.best = max(watch.best, e.accuracy)
    watch.seen_evals = len(evals)


def run_fleet(
    spec: RunSpec,
    setup: FleetSetup,
    parts: Parts,
    progress: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> RunReport:
    stopped_by = "duration"
    agents: list[AgentHandle] = []
    watch = _Watch(timeline=[])
    dropouts: Counter[str] = Counter()
    server: ServerHandle | None = None
    t = 0.0
    bound_port: int | None = None
    broker_url = ""
    teardown = Teardown()
    try:
        try:
            broker = parts.start_broker(spec.broker_url)
            teardown.add("broker", broker.stop)
            bound_port = broker.port
            broker_url = broker.url
            server = parts.start_server(setup, broker.url)
            teardown.add("server", server.stop)
            start = clock()
            setup = replace(setup, start=start)  # device lives count from when agents start
            for i in range(len(setup.device_folders)):
                agent = parts.start_agent(setup, i, broker.url)
                teardown.add(f"agent {agent.device_id}", agent.stop)
                agents.append(agent)
            online = [True] * len(agents)
            progress.console.print(
                f"{spec.strategy}: broker {broker.url}, server up, {len(agents)} agents started"
            )
            with progress:
                while True:
                    t = clock() - start
                    _apply_dropouts(agents, setup.lives, t, online, dropouts)
                    _record(server, agents, watch, t)
                    progress.update(_snapshot(spec, t, server, agents, watch))
                    if watch.best >= spec.target_accuracy:
                        stopped_by = "target"
                        break
                    if t >= spec.duration_s:
                        break
                    time.sleep(spec.tick_s)
        except KeyboardInterrupt:
            stopped_by = "interrupted"
            progress.console.print("[yellow]interrupted: stopping the fleet ...[/]")
        # Read the counters before stopping: a stopped part may forget them.
        accepted = server.accepted() if server else 0
        rejected = dict(server.rejected()) if server else {}
        privacy = server.privacy() if server else None
        counters = {a.device_id: a.counters() for a in agents}
    finally:
        for a in agents:  # all at once: twenty agents then finish their turn in parallel
            a.request_stop()
        failed = teardown.close()
        if failed:
            _log.warning("could not stop cleanly: %s", ", ".join(failed))
    if bound_port is not None and not wait_port_free(bound_port):
        _log.warning("port %d is still bound after the broker stopped", bound_port)
    if stopped_by == "interrupted" and not watch.timeline:
        raise KeyboardInterrupt
    devices = tuple(
        DeviceParticipation(
            device_id=a.device_id,
            slowdown=life.slowdown,
            updates_sent=counters[a.device_id].updates_sent,
            updates_accepted=counters[a.device_id].updates_accepted,
            updates_rejected=counters[a.device_id].updates_rejected,
            uplink_bytes=counters[a.device_id].uplink_bytes,
            downlink_bytes=counters[a.device_id].downlink_bytes,
            dropouts=dropouts[a.device_id],
        )
        for a, life in zip(agents, setup.lives, strict=False)
    )
    return RunReport(
        strategy=spec.strategy,
        codec=spec.codec,
        model=spec.model,
        num_params=spec.num_params,
        devices_count=len(setup.device_folders),
        target_accuracy=spec.target_accuracy,
        duration_s=t,
        stopped_by=stopped_by,
        timeline=tuple(watch.timeline),
        updates_accepted=accepted,
        updates_rejected=rejected,
        uplink_bytes=sum(c.uplink_bytes for c in counters.values()),
        downlink_bytes=sum(c.downlink_bytes for c in counters.values()),
        update_payload_bytes=sum(c.update_bytes for c in counters.values()),
        updates_sent=sum(c.updates_sent for c in counters.values()),
        devices=devices,
        broker_url=broker_url,
        privacy=privacy,
    )
