"""Build a whole experiment: data slices, one fleet, the trainer, and one run per strategy/codec.

Every strategy of an experiment sees the same fleet (profiles, availability), the same data
partition and the same seed; only the server strategy and the codec differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fleet.attacks import Attack, choose_attackers
from fleet.sim.engine import Mode, RunConfig, RunResult, run_simulation
from fleet.sim.profiles import DeviceProfile
from fleet.sim.server_side import SimServer
from fleet.sim.training import LocalBudget, LocalTrainer
from fleet.sim.uplink import Uplink, codec_label
from fleet.sim.world import World
from protocol import codecs
from protocol.errors import ConfigError
from protocol.manifest import Manifest
from protocol.secagg.cohort import CohortConfig
from server.admission import Admission, AdmissionLimits
from server.privacy import PrivacyConfig
from server.robust import RobustConfig
from server.secagg import SecAggSettings
from server.secagg_privacy import member_settings, secagg_under_privacy
from server.serving import ServingAverage
from server.strategies import Strategy, make_strategy

__all__ = [
    "Experiment",
    "StrategySpec",
    "build_strategy",
    "parse_strategy",
    "run_in_world",
    "run_one",
    "secagg_config",
]

_STALENESS = ("constant", "polynomial", "hinge")


@dataclass(frozen=True)
class StrategySpec:
    name: str  # fedavg | fedasync | fedbuff
    staleness: str = "constant"  # fedasync / fedbuff
    buffer_size: int = 10  # fedbuff K
    codec: dict[str, Any] = field(default_factory=lambda: {"name": "float32"})
    # server optimiser for fedbuff / fedavg: {"name": "adam", "lr": 0.01, "beta1": ..., "tau": ...,
    # "lr_schedule": {...}}; None: the strategy's own sgd step (FedBuff lr: Experiment.fedbuff_lr)
    optimizer: dict[str, Any] | None = None
    # new versions also go to devices as deltas in this codec (fleet/sim/downlink.py); None:
    # whole offers only
    downlink_codec: dict[str, Any] | None = None

    @property
    def mode(self) -> Mode:
        return Mode.SYNC if self.name == "fedavg" else Mode.ASYNC

    @property
    def label(self) -> str:
        base = {
            "fedavg": "fedavg",
            "fedasync": f"fedasync-{self.staleness}",
            "fedbuff": f"fedbuff-K{self.buffer_size}-{self.staleness}",
        }[self.name]
        if self.optimizer is not None:
            base += f"+{self.optimizer['name']}{self.optimizer.get('lr', '')}"
        label = f"{base}/{codec_label(codecs.validate_spec(self.codec))}"
        if self.downlink_codec is not None:
            label += f"/down-{codec_label(codecs.validate_spec(self.downlink_codec))}"
        return label


def parse_strategy(
    text: str, codec: dict[str, Any] | None = None, optimizer: dict[str, Any] | None = None
) -> StrategySpec:
    """'fedavg', 'fedasync[:STALENESS]', 'fedbuff[:K[:STALENESS]]'; `optimizer` for fedbuff/avg."""
    if optimizer is not None and text.split(":", maxsplit=1)[0] == "fedasync":
        raise ConfigError(
            "a server optimiser needs fedbuff or fedavg (fedasync has no server step)"
        )
    spec = _parse(text, codec)
    return spec if optimizer is None else dataclasses.replace(spec, optimizer=dict(optimizer))


def _parse(text: str, codec: dict[str, Any] | None) -> StrategySpec:
    parts = text.strip().split(":")
    name, rest = parts[0], parts[1:]
    c = codec or {"name": "float32"}
    try:
        if name == "fedavg" and not rest:
            return StrategySpec("fedavg", codec=c)
        if name == "fedasync" and len(rest) <= 1:
            st = rest[0] if rest else "polynomial"
            if st in _STALENESS:
                return StrategySpec("fedasync", staleness=st, codec=c)
        if name == "fedbuff" and len(rest) <= 2:
            k = int(rest[0]) if rest else 10
            st = rest[1] if len(rest) > 1 else "polynomial"
            if k >= 1 and st in _STALENESS:
                return StrategySpec("fedbuff", staleness=st, buffer_size=k, codec=c)
    except ValueError:
        pass
    raise ConfigError(
        f"--strategy {text!r}: expected fedavg, fedasync[:{'|'.join(_STALENESS)}]"
        " or fedbuff[:K[:staleness]]"
    )


@dataclass(frozen=True)
class Experiment:
    """Knobs shared by every run of one comparison."""

    concurrency: int = 100  # devices training at once (async) / selected per round (sync)
    # async runs only: devices training at once when over-committing (None: `concurrency`); the
    # sync baseline keeps selecting `concurrency` per round
    async_concurrency: int | None = None
    over_selection: float = 0.3  # sync: select 30% more than the round needs (Bonawitz et al.)
    deadline_s: float = 120.0  # sync round deadline (virtual seconds)
    fedasync_alpha: float = 0.6
    fedbuff_lr: float = 1.0
    fedbuff_momentum: float = 0.0  # server momentum beta (FedBuff paper, Appendix); 0 disables
    # async (FedAsync/FedBuff) session time limit, a multiple of the running median session
    # time (Papaya); None: wait for every session. Sync FedAvg keeps its deadline + abort.
    # Off by default: on the fleet benchmark (seed 0) 2x and 3x made time-to-target WORSE
    # (benchmarks/results/fleet_sweep_timeout.json).
    async_session_timeout: float | None = None
    max_staleness: int | None = None  # None: every update counts, weighted by staleness
    serving_decay: float = 0.0  # the server's serving average (server/serving.py); 0: off
    duration_s: float = 4 * 3600.0
    eval_every_s: float = 300.0
    budget: LocalBudget = field(default_factory=LocalBudget)
    robust: RobustConfig | None = None  # the server's robust-aggregation options (None: off)
    attack: Attack | None = None  # what hostile devices do (fleet/attacks.py)
    attacker_fraction: float = 0.0  # share of the fleet that is hostile
    # async: group sessions into secure-aggregation cohorts of the FedBuff K (10 for FedAsync)
    secure_aggregation: bool = False
    secagg_clip: float = 10.0  # L2 bound per device update (fixed point needs one)
    privacy: PrivacyConfig | None = None  # user-level DP for fedbuff / fedavg (DP-FedAvg)

    @property
    def round_size(self) -> int:
        return max(1, math.floor(self.concurrency / (1.0 + self.over_selection)))


def _optimizer_params(spec: StrategySpec) -> dict[str, Any]:
    """The spec's optimiser as the server config keys (server_lr, optimizer, lr_schedule)."""
    if spec.optimizer is None:
        return {}
    table = dict(spec.optimizer)
    out: dict[str, Any] = {"server_lr": table.pop("lr", 1.0)}
    if "lr_schedule" in table:
        out["lr_schedule"] = table.pop("lr_schedule")
    out["optimizer"] = table
    return out


def build_strategy(spec: StrategySpec, exp: Experiment) -> Strategy:
    """A production strategy object from the server's own factory."""
    # the defence goes through the server's own table parser, so its rules (what DP allows of
    # a defence) are the server's: None = no defence
    robust = None if exp.robust is None else exp.robust.to_mapping()
    if spec.name == "fedavg":
        params: dict[str, Any] = {
            "round_size": exp.round_size,
            "deadline_s": exp.deadline_s,
            "min_updates": 1,
            **_optimizer_params(spec),
        }
        return make_strategy("fedavg", params, None, robust, privacy=exp.privacy)
    staleness: dict[str, Any] = {"function": spec.staleness}
    if spec.name == "fedasync":
        return make_strategy(
            "fedasync", {"alpha": exp.fedasync_alpha}, staleness, robust, privacy=exp.privacy
        )
    params = {"buffer_size": spec.buffer_size}
    params |= _optimizer_params(spec) or {
        "server_lr": exp.fedbuff_lr,
        "momentum": exp.fedbuff_momentum,
    }
    return make_strategy("fedbuff", params, staleness, robust, privacy=exp.privacy)


def secagg_config(spec: StrategySpec, exp: Experiment, manifest: Manifest) -> CohortConfig | None:
    """The cohort parameters of an async run with --secure-aggregation (None: off)."""
    if not exp.secure_aggregation or spec.mode is not Mode.ASYNC:
        return None
    k = spec.buffer_size if spec.name == "fedbuff" else 10
    settings = SecAggSettings(True, cohort_size=k, min_size=min(3, k), clip=exp.secagg_clip)
    # the server's rules: under DP members clip to C, fixed-point rounding included
    settings = secagg_under_privacy(settings, {}, exp.privacy)
    return member_settings(settings, manifest, exp.privacy).cohort_config(manifest)


def run_one(
    spec: StrategySpec,
    exp: Experiment,
    *,
    manifest: Manifest,
    initial: np.ndarray,
    fleet: list[DeviceProfile],
    slices: list[np.ndarray],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    trainer: LocalTrainer,
    seed: int,
    record: bool = False,
    strategy_factory: Callable[[StrategySpec, Experiment], Strategy] = build_strategy,
) -> tuple[RunResult, SimServer]:
    strategy = strategy_factory(spec, exp)
    limits = AdmissionLimits(max_staleness=exp.max_staleness)
    server = SimServer(
        strategy,
        Admission(manifest, limits),
        initial,
        record=record,
        serving=ServingAverage(exp.serving_decay),
    )
    concurrency = exp.concurrency
    if spec.mode is Mode.ASYNC and exp.async_concurrency is not None:
        concurrency = exp.async_concurrency
    config = RunConfig(
        label=spec.label,
        mode=spec.mode,
        concurrency=concurrency,
        duration_s=exp.duration_s,
        eval_every_s=exp.eval_every_s,
        budget=exp.budget,
        seed=seed,
        session_timeout=exp.async_session_timeout,
        attack=exp.attack,
        attackers=choose_attackers(len(fleet), exp.attacker_fraction, seed)
        if exp.attack is not None
        else frozenset(),
        secagg=secagg_config(spec, exp, manifest),
        downlink_codec=spec.downlink_codec,
    )
    if config.secagg is not None:
        config = replace(config, label=f"{spec.label}+secagg")
    uplink = Uplink(manifest, spec.codec)
    return run_simulation(config, fleet, slices, data, trainer, server, uplink), server


def run_in_world(
    spec: StrategySpec,
    exp: Experiment,
    world: World,
    *,
    manifest: Manifest,
    initial: np.ndarray,
    trainer: LocalTrainer,
    seed: int,
) -> tuple[RunResult, SimServer]:
    """`run_one` on a loaded World: its fleet, data slices and data."""
    return run_one(
        spec,
        exp,
        manifest=manifest,
        initial=initial,
        fleet=world.fleet,
        slices=world.slices,
        data=world.data,
        trainer=trainer,
        seed=seed,
    )


def specs_for(
    strategies: Sequence[str],
    codec_specs: Sequence[dict[str, Any]],
    downlink_specs: Sequence[dict[str, Any] | None] = (None,),
) -> list[StrategySpec]:
    """Every strategy with every codec and downlink codec (each an axis)."""
    return [
        dataclasses.replace(parse_strategy(s, c), downlink_codec=d)
        for s in strategies
        for c in codec_specs
        for d in downlink_specs
    ]
