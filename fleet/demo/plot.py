"""`accuracy.png`: held-out accuracy against wall time and against bytes the fleet uplinked.

One line per run on shared axes, so `--compare` puts sync FedAvg and the async strategy side by
side. matplotlib's Agg backend: no display needed, nothing opens a window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fleet.demo.report import EvalPoint

__all__ = ["PLOT_NAME", "plot_accuracy"]

PLOT_NAME = "accuracy.png"
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def plot_accuracy(
    runs: Mapping[str, Sequence[EvalPoint]],
    out_path: Path,
    target: float | None = None,
    title: str = "fleetlearn demo",
) -> Path:
    """Draw every run's timeline; a dashed line marks the target accuracy. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: headless, deterministic
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90, sharey=True)
    for colour, (label, points) in zip(_COLOURS, runs.items(), strict=False):
        if not points:
            continue
        t = [0.0] + [p.t_s for p in points]
        mb = [0.0] + [p.uplink_bytes / 1e6 for p in points]
        acc = [points[0].accuracy] + [p.accuracy for p in points]
        ax_t.step(t, acc, where="post", color=colour, label=label, lw=1.6)
        ax_b.step(mb, acc, where="post", color=colour, label=label, lw=1.6)
    for ax in (ax_t, ax_b):
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
        ax.set_ylim(0.0, 1.0)
    ax_t.set_xlabel("wall time (s)")
    ax_b.set_xlabel("uplink (MB, all devices)")
    ax_t.set_ylabel("held-out accuracy")
    ax_t.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
