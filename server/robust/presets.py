"""Named defences, for the simulator, the demo and the robustness benchmark (`--defence NAME`).

Each isolates one mechanism so a benchmark can show what it buys; "default" is `RobustConfig()`,
what a server gets when server.toml has no `[strategy.robust]` table.
"""

from __future__ import annotations

from server.robust.aggregators import Aggregator
from server.robust.defence import RobustConfig

__all__ = ["DEFENCES", "defence"]

_OFF = False  # sign agreement off (also the default): each preset isolates one mechanism

DEFENCES: dict[str, RobustConfig | None] = {
    "none": None,
    "default": RobustConfig(),
    # the adaptive norm bound (3 x running median, clip) and one update per device; plain mean
    "norm": RobustConfig(aggregator=Aggregator.MEAN, sign_agreement=_OFF),
    "trimmed_mean": RobustConfig(
        aggregator=Aggregator.TRIMMED_MEAN, norm_multiplier=None, sign_agreement=_OFF
    ),
    "median": RobustConfig(aggregator=Aggregator.MEDIAN, norm_multiplier=None, sign_agreement=_OFF),
    # the first default, measured
    "median_norm": RobustConfig(aggregator=Aggregator.MEDIAN, sign_agreement=_OFF),
    "cosine": RobustConfig(aggregator=Aggregator.COSINE, norm_multiplier=None, sign_agreement=_OFF),
    # the default plus sign agreement: what a fleet that must resist a planted backdoor sets
    "sign": RobustConfig(sign_agreement=True),
}


def defence(name: str) -> RobustConfig | None:
    """The preset called `name`; ValueError lists the choices."""
    try:
        return DEFENCES[name]
    except KeyError:
        raise ValueError(f"unknown defence {name!r} (choose from {sorted(DEFENCES)})") from None
