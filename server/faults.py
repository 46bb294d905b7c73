"""Fault injection for crash tests: SIGKILL this process at a named point.

    FLEETLEARN_FAULT=<point>:<n>     kill at the n-th time <point> is reached (n >= 1)

Points (in the order an update passes them): "log.appended" (record written, not yet fsynced),
"log.synced" (fsynced, not yet applied), "core.applied" (applied, Ack not yet sent),
"checkpoint.written" (temp file fsynced, not yet renamed), "checkpoint.renamed" (renamed, old
log segments not yet removed). Unset (the normal case) costs one dict lookup per point.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "POINTS", "fault_point"]

FAULT_ENV = "FLEETLEARN_FAULT"
POINTS = ("log.appended", "log.synced", "core.applied", "checkpoint.written", "checkpoint.renamed")


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"{FAULT_ENV}: unknown point {point!r} (choose from {POINTS})")
    return point, int(count or "1")


_armed = _parse(os.environ.get(FAULT_ENV))
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    if _armed is None or _armed[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
