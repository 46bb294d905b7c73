"""The discrete-event core: a virtual clock and a heap of timestamped events.

Events at the same virtual time pop in the order they were pushed (a monotone sequence number
breaks ties), so a run is a pure function of its inputs and seed: no wall clock, no hash order.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Event", "EventKind", "EventQueue"]


class EventKind(Enum):
    WINDOW_OPEN = "window_open"  # a device becomes eligible (charging, idle, on Wi-Fi)
    WINDOW_CLOSE = "window_close"  # ... and stops being eligible
    COMPUTE_DONE = "compute_done"  # a device finished local training (virtual duration)
    ARRIVE = "arrive"  # its update reached the server
    DROP = "drop"  # it dropped out mid-session
    DEADLINE = "deadline"  # a synchronous round's deadline
    TIMEOUT = "timeout"  # an asynchronous session ran past its time limit
    EVAL = "eval"  # evaluate the global model on the held-out set


@dataclass(frozen=True, slots=True, order=True)
class Event:
    time: float  # virtual seconds since the start of the run
    seq: int  # insertion order: deterministic tie-break
    kind: EventKind = field(compare=False)
    device: int = field(default=-1, compare=False)  # -1: not about one device
    payload: Any = field(default=None, compare=False)


class EventQueue:
    """A min-heap of events and the virtual clock they drive. Time never goes backwards."""

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = 0
        self.now = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: float, kind: EventKind, device: int = -1, payload: Any = None) -> Event:
        if not math.isfinite(time):
            raise ValueError(f"event time must be finite, got {time}")
        if time < self.now:
            raise ValueError(f"event at {time} is before now ({self.now}): time never goes back")
        event = Event(time, self._seq, kind, device, payload)
        self._seq += 1
        heapq.heappush(self._heap, event)
        return event

    def pop(self) -> Event:
        """The earliest event; advances the clock to its time."""
        event = heapq.heappop(self._heap)
        self.now = event.time
        return event

    def peek_time(self) -> float:
        return self._heap[0].time if self._heap else math.inf
