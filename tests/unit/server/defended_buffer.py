"""A robust defence and the open buffer its rows live in, with the few verbs the robust tests
drive them by (server code goes through a strategy and the reducer instead)."""

from __future__ import annotations

import numpy as np

from server.buffer import OpenBuffer
from server.robust import Defence, RobustConfig
from server.robust.defence import DeviceScore
from server.robust.rows import RowBuffer
from server.strategies import StateDict


class DefendedBuffer:
    def __init__(self, config: RobustConfig) -> None:
        self.defence = Defence(config, keeps_rows=True)
        self.buffer = OpenBuffer()

    @property
    def config(self) -> RobustConfig:
        return self.defence.config

    @config.setter
    def config(self, config: RobustConfig) -> None:
        self.defence.config = config

    @property
    def scores(self) -> list[DeviceScore]:
        return self.defence.scores

    @property
    def row_buffer(self) -> RowBuffer:
        return self.buffer.rows

    @property
    def rows(self) -> np.ndarray:
        """(k, n) float32, a view valid until the next row or buffer."""
        return self.buffer.rows.dense()

    def accept(self, device_id: str, norm: float) -> None:
        self.defence.record(norm)
        self.buffer.joined(device_id, 1.0)

    def new_row(self, n: int, weight: float = 1.0) -> np.ndarray:
        return self.buffer.rows.new_row(n, weight)

    def add_row(self, row: np.ndarray, weight: float = 1.0) -> None:
        np.copyto(self.new_row(row.shape[0], weight), row)

    def add_sparse_row(self, n: int, index: np.ndarray, values: np.ndarray) -> None:
        self.buffer.rows.add_sparse(n, index, values)

    def reduce(self) -> np.ndarray:
        return self.defence.reduce(self.buffer.devices, self.buffer.rows)

    def end_buffer(self) -> None:
        self.buffer.clear()

    def state_dict(self) -> StateDict:
        return self.buffer.state_dict() | self.defence.state_dict()

    def load_state_dict(self, state: StateDict) -> None:
        self.buffer.load_state_dict(state)
        self.defence.load_state_dict(state)
