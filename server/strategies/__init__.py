"""Aggregation strategies, one module each, behind the `Strategy` hooks in `base.py`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.errors import ConfigError
from server.admitted import AdmittedUpdate
from server.optimizers import make_optimizer
from server.privacy import DpMechanism, PrivacyConfig
from server.reducer import refuse_privacy_without_buffer, robust_under_privacy
from server.robust import RobustConfig
from server.staleness import make_staleness
from server.strategies.base import StateDict, StepResult, Strategy
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
    robust: Mapping[str, Any] | None = None,
    *,
    privacy: PrivacyConfig | None = None,
) -> Strategy:
    """Build a strategy from config values; errors name the offending key.

    `staleness` is e.g. {"function": "polynomial", "a": 0.5} (FedAsync and FedBuff only).
    FedProx is FedAvg with `fedprox_mu > 0`; the name "fedprox" is accepted as that alias.
    `robust` is `[strategy.robust]` (server/robust): None = no defence, {} = the default defence.
    `privacy` turns on user-level DP (FedBuff, FedAvg); FedAsync with DP is refused.
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
    if robust is not None:
        try:
            defence = RobustConfig.from_mapping(robust)
        except ValueError as exc:
            raise ConfigError(f"strategy.{exc}") from exc
        if defence is not None and privacy is not None:
            try:
                defence = robust_under_privacy(defence, robust)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        kwargs["robust"] = defence
    if "privacy" in kwargs:
        raise ConfigError("strategy.privacy: configure differential privacy in [privacy]")
    if privacy is not None:
        try:
            refuse_privacy_without_buffer(STRATEGIES[name].buffered)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        per_flush = kwargs.get("buffer_size" if name == "fedbuff" else "round_size", 10)
        if isinstance(per_flush, bool) or not isinstance(per_flush, int) or per_flush < 1:
            raise ConfigError("strategy: buffer_size / round_size must be an integer >= 1")
        try:
            kwargs["privacy"] = DpMechanism(privacy, per_flush)
        except ValueError as exc:
            raise ConfigError(f"privacy: {exc}") from exc
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
