"""Live progress of a demo run: a rich panel on a terminal, plain lines when piped or in tests.

The orchestrator hands a `FleetSnapshot` to `Progress.update` a few times a second; nothing here
knows about MQTT, agents or the server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = ["FleetSnapshot", "Progress", "format_bytes"]


@dataclass(frozen=True)
class FleetSnapshot:
    t_s: float
    duration_s: float
    version: int
    accuracy: float | None  # None until the first evaluation
    best_accuracy: float
    target_accuracy: float
    accepted: int
    rejected: Mapping[str, int]
    uplink_bytes: int
    downlink_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)  # category -> count, e.g. training


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # unreachable; keeps mypy sure of a return


# The order devices are listed in the panel, with a colour each.
_DEVICE_STYLES = {
    "training": "bold green",
    "uploading": "cyan",
    "waiting": "white",
    "idle": "dim",
    "unplugged": "yellow",
    "busy": "magenta",
    "offline": "red",
}


def _line(s: FleetSnapshot) -> str:
    acc = "-" if s.accuracy is None else f"{s.accuracy:.3f}"
    rejected = sum(s.rejected.values())
    devices = " ".join(f"{k}={s.devices.get(k, 0)}" for k in _DEVICE_STYLES if s.devices.get(k))
    return (
        f"[{s.t_s:6.1f}s] v{s.version:<4d} acc {acc} (best {s.best_accuracy:.3f}) "
        f"accepted {s.accepted} rejected {rejected} up {format_bytes(s.uplink_bytes)} | {devices}"
    )


def _panel(s: FleetSnapshot, title: str) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    acc = Text("-" if s.accuracy is None else f"{s.accuracy:.3f}")
    if s.accuracy is not None and s.accuracy >= s.target_accuracy:
        acc.stylize("bold green")
    acc.append(f"   best {s.best_accuracy:.3f}   target {s.target_accuracy:.2f}", style="dim")
    grid.add_row("time", f"{s.t_s:5.1f} s of {s.duration_s:.0f} s")
    grid.add_row("model version", str(s.version))
    grid.add_row("accuracy", acc)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(s.rejected.items())) or "0"
    grid.add_row("updates", f"[green]{s.accepted} accepted[/]   rejected: {rejected}")
    grid.add_row(
        "traffic",
        f"uplink {format_bytes(s.uplink_bytes)}   downlink {format_bytes(s.downlink_bytes)}",
    )
    devices = Text()
    for name, style in _DEVICE_STYLES.items():
        if s.devices.get(name):
            devices.append(f"{name} {s.devices[name]}  ", style=style)
    grid.add_row("devices", devices)
    bar = ProgressBar(total=max(s.target_accuracy, 1e-9), completed=s.accuracy or 0.0, width=40)
    return Panel(Group(grid, bar), title=title, expand=False)


class Progress:
    """`with Progress(...) as p: p.update(snapshot)`. Live panel on a TTY; else a line every
    `line_every_s` seconds (and on every new version when that is rarer)."""

    def __init__(self, title: str, file: IO[str] | None = None, line_every_s: float = 2.0) -> None:
        self.console = Console(file=file, highlight=False)
        self._title = title
        self._live: Live | None = None
        self._line_every_s = line_every_s
        self._last_line = -1e9
        self.last: FleetSnapshot | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def update(self, snapshot: FleetSnapshot) -> None:
        self.last = snapshot
        if self._live is not None:
            self._live.update(_panel(snapshot, self._title))
            return
        now = time.monotonic()
        if now - self._last_line >= self._line_every_s:
            self._last_line = now
            self.console.print(_line(snapshot), soft_wrap=True)  # one line per update, unwrapped

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
        elif self.last is not None:
            self.console.print(_line(self.last), soft_wrap=True)  # the final state, shown once
