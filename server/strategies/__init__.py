"""Aggregation strategies, one module each, behind the `Strategy` hooks in `base.py`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.errors import ConfigError
from server.optimizers import make_optimizer
from server.staleness import make_staleness
from server.strategies.base import AdmittedUpdate, StateDict, StepResult, Strategy
from server.strategies.fedasync import FedAsync
from server.strategies.fedavg import FedAvg
from server.strategies.fedbuff import FedBuff

__all__ = [
    "STRATEGIES",
    "AdmittedUpdate",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "StateDict",
    "StepResult",
    "Strategy",
    "make_strategy",
]

STRATEGIES: dict[str, type[Strategy]] = {"fedasync": FedAsync, "fedbuff": FedBuff, "fedavg": FedAvg}
_USES_STALENESS = {"fedasync", "fedbuff"}
_USES_OPTIMIZER = {"fedbuff", "fedavg"}


def make_strategy(
    name: str,
    params: Mapping[str, Any] | None = None,
    staleness: Mapping[str, Any] | None = None,
) -> Strategy:
    """Build a strategy from config values; errors name the offending key.

    `staleness` is e.g. {"function": "polynomial", "a": 0.5} (FedAsync and FedBuff only).
    FedProx is FedAvg with `fedprox_mu > 0`; the name "fedprox" is accepted as that alias.
    FedBuff and FedAvg take `optimizer` ("adam" or {name, beta1, beta2, tau}) and `lr_schedule`
    ({name, warmup_steps, ...}) with `server_lr` as its rate (server/optimizers.py); FedBuff's
    `momentum = b` alone still means avgm with beta1 = b.
    """
    if name == "fedprox":
        name = "fedavg"
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name: unknown {name!r} (choose from {sorted(STRATEGIES)})")
    kwargs = dict(params or {})
    if name in _USES_STALENESS:
        st = dict(staleness or {})
        function = st.pop("function", "constant")
        if not isinstance(function, str):
            raise ConfigError("strategy.staleness.function: must be a string")
        kwargs["staleness"] = make_staleness(function, st)
    elif staleness:
        raise ConfigError(f"strategy.staleness: {name} does not weight by staleness")
    if name in _USES_OPTIMIZER and ("optimizer" in kwargs or "lr_schedule" in kwargs):
        try:
            kwargs["optimizer"] = make_optimizer(
                kwargs.pop("optimizer", None),
                lr=float(kwargs.pop("server_lr", 1.0)),
                momentum=float(kwargs.pop("momentum", 0.0)),
                schedule=kwargs.pop("lr_schedule", None),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"strategy: {exc}") from exc
    try:
        return STRATEGIES[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"strategy: bad parameter for {name}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"strategy: {exc}") from exc
