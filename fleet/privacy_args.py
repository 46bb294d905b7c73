"""`--dp-*` options shared by `fleetlearn demo` and `fleetlearn simulate`: they build the same
`[privacy]` table an operator writes in server.toml (validated by the server's own parser)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from protocol.errors import ConfigError
from server.privacy import parse_privacy

__all__ = ["add_privacy_arguments", "privacy_table", "privacy_tradeoff"]


def add_privacy_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "differential privacy (user-level, central: the server clips, noises and accounts)"
    )
    a = g.add_argument
    a("--dp-epsilon", type=float, help="turn DP on with this epsilon budget")
    a("--dp-delta", type=float, help="delta (default 1 / number of devices)")
    a("--dp-noise", type=float, help="noise multiplier sigma (else calibrated to the budget)")
    a(
        "--dp-flushes",
        type=int,
        default=50,
        help="planned noised steps when sigma is calibrated from --dp-epsilon (default 50)",
    )
    a("--dp-clip", type=float, default=1.0, help="clip norm C (initial C if adaptive)")
    a("--dp-adaptive-clip", action="store_true", help="C follows the median update norm")
    a("--dp-accountant", choices=("rdp", "pld"), default="rdp")


def privacy_table(args: argparse.Namespace, devices: int) -> dict[str, Any] | None:
    """The `[privacy]` table for these arguments, or None when DP is off."""
    if args.dp_epsilon is None:
        others = [args.dp_delta, args.dp_noise]
        if any(v is not None for v in others) or args.dp_adaptive_clip:
            raise ConfigError("--dp-*: give --dp-epsilon (the budget) to turn privacy on")
        return None
    table: dict[str, Any] = {
        "epsilon": args.dp_epsilon,
        "delta": args.dp_delta if args.dp_delta is not None else 1.0 / max(devices, 2),
        "clip_norm": args.dp_clip,
        "adaptive_clip": bool(args.dp_adaptive_clip),
        "accountant": args.dp_accountant,
    }
    if args.dp_noise is not None:
        table["noise_multiplier"] = args.dp_noise
    else:
        table["planned_flushes"] = args.dp_flushes
    return table


# the configuration `./run bench privacy` measures (benchmarks/privacy.py): DP that learns
_LEARNS = (
    "fleetlearn simulate --devices 5000 --strategy fedbuff:1000:polynomial --concurrency 1000 "
    "--local-samples 64 --batch-size 8 --dp-epsilon 8 --dp-flushes 10 --dp-clip 2.5 "
    "--dp-accountant pld --duration 21m --target 0.8"
)


def privacy_tradeoff(table: Mapping[str, Any], devices: int, per_step: int) -> list[str]:
    """What a `[privacy]` table means for a fleet of `devices` averaging `per_step` updates per
    noised step, in words a user can act on (the demo prints it before it starts)."""
    config = parse_privacy(table, allow_seed=True)
    c, sigma = config.clip_norm, config.noise_multiplier
    noise = sigma * c / per_step  # std of the noise on each coordinate of the averaged step
    lines = [
        f"epsilon {config.epsilon:g} at delta {config.delta:.2g}: one device's data changes what "
        f"the published models show by at most a factor e^{config.epsilon:g} (except with "
        f"probability delta); sigma {sigma:.3g} noise on each step's sum of {per_step} updates "
        f"clipped to norm {c:g}",
        f"noise per coordinate of each step: sigma*C/K = {noise:.3g}, against an average update "
        f"of norm <= {c:g} spread over all parameters: with K = {per_step} the noise dominates "
        "and the model barely learns; user-level DP needs hundreds to thousands of updates per "
        "step",
    ]
    if config.delta > 1.0 / max(devices, 1) or config.delta > 1e-3:
        lines.append(
            f"delta {config.delta:.2g} is weak: at delta >= 1/devices ({1 / devices:.2g}) a "
            "mechanism may reveal one device outright; fleets use delta well below 1/devices"
        )
    lines.append(f"a fleet where DP learns (simulated, virtual time): {_LEARNS}")
    return lines
