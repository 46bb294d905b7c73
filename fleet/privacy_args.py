"""`--dp-*` options shared by `fleetlearn demo` and `fleetlearn simulate`: they build the same
`[privacy]` table an operator writes in server.toml (validated by the server's own parser)."""

from __future__ import annotations

import argparse
from typing import Any

from protocol.errors import ConfigError

__all__ = ["add_privacy_arguments", "privacy_table"]


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
