"""Availability traces: a CSV `device,start,end` (virtual seconds) of eligibility windows.

Checked cheapest-first: file size, header, then each row's field count, numbers, finiteness and
order. Errors are `DataError`s naming the file and line. A device may have many rows; overlapping
windows are merged. Devices keep the order of their first appearance.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from fleet.sim.profiles import Windows
from protocol.errors import DataError

__all__ = ["MAX_TRACE_BYTES", "load_trace", "parse_trace"]

MAX_TRACE_BYTES = 256 * 1024 * 1024  # ~5M rows: far past any fleet we simulate
_HEADER = ["device", "start", "end"]


def load_trace(path: Path) -> tuple[list[str], list[Windows]]:
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise DataError(f"{path}: trace is {size} bytes, limit {MAX_TRACE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read trace: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: trace is not UTF-8 text") from exc
    return parse_trace(text, str(path))


def parse_trace(text: str, name: str = "<trace>") -> tuple[list[str], list[Windows]]:
    """(device ids in first-seen order, their merged windows)."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header] != _HEADER:
        raise DataError(f"{name}: line 1: header must be 'device,start,end', got {header!r}")
    raw: dict[str, list[tuple[float, float]]] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not f.strip() for f in row):
            continue  # blank lines are harmless
        if len(row) != 3:
            raise DataError(f"{name}: line {line}: expected 3 fields, got {len(row)}")
        device = row[0].strip()
        if not device:
            raise DataError(f"{name}: line {line}: empty device id")
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError as exc:
            raise DataError(f"{name}: line {line}: start/end must be numbers: {row[1:]}") from exc
        if not (math.isfinite(start) and math.isfinite(end)):
            raise DataError(f"{name}: line {line}: start/end must be finite")
        if start < 0 or end <= start:
            raise DataError(f"{name}: line {line}: need 0 <= start < end, got {start}, {end}")
        raw.setdefault(device, []).append((start, end))
    if not raw:
        raise DataError(f"{name}: trace has no windows")
    devices = list(raw)
    return devices, [Windows.merged(raw[d]) for d in devices]
